"""Parameter profiles: small YAML files of overrides merged into params.yaml (comments kept)."""

from __future__ import annotations

import json
from pathlib import Path

from ruamel.yaml import YAML

from facelab.atomic import atomic_path
from facelab.config import flatten, validate_params
from facelab.errors import FacelabError


def _merge(base, overrides, where: str, source: Path) -> None:
    for key, value in overrides.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise FacelabError(f"{source}: {name} is not a parameter of params.yaml")
        if isinstance(value, dict):
            _merge(base[key], value, name, source)
        else:
            base[key] = value


def apply_profile(profile: str | Path, params_file: str | Path = "params.yaml") -> None:
    """Merge ``profile``'s values into ``params_file``; the result is validated before it is written."""
    yaml = YAML()
    yaml.preserve_quotes = True
    profile, params_file = Path(profile), Path(params_file)
    try:
        overrides = yaml.load(profile.read_text()) or {}
    except FileNotFoundError:
        raise FacelabError(f"{profile}: profile not found") from None
    params = yaml.load(params_file.read_text())
    _merge(params, overrides, "", profile)
    validate_params(_plain(params), params_file)
    with atomic_path(params_file, suffix=".yaml") as tmp:
        with open(tmp, "w") as fh:
            yaml.dump(params, fh)


def _plain(node):
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def set_arguments(profile: str | Path) -> list[str]:
    """The profile as ``dvc exp run`` arguments: ['-S', 'train_keypoints.lr=0.001', ...]."""
    yaml = YAML(typ="safe")
    profile = Path(profile)
    try:
        overrides = yaml.load(profile.read_text()) or {}
    except FileNotFoundError:
        raise FacelabError(f"{profile}: profile not found") from None
    args: list[str] = []
    for name, value in flatten(_plain(overrides)).items():
        text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
        args += ["-S", f"{name}={text}"]
    return args
