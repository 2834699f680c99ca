"""Parameter profiles: small YAML files of overrides merged into params.yaml (comments kept).

A profile may start from another one: ``extends: quick-emotion-7.yaml`` (a file name resolved
relative to the extending profile's folder; chains are allowed, cycles are an error). The base
profile's overrides are merged first, then the extending profile's, so a profile lists only what
it changes. Applying a profile records its name (the file's stem) as params.yaml's ``profile``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from facelab.atomic import atomic_path
from facelab.config import flatten, read_mapping, validate_params
from facelab.errors import FacelabError

EXTENDS = "extends"
PROFILE_KEY = "profile"  # params.yaml's record of the profile applied: set from the file name, never by a profile


def _read_yaml(path: Path, yaml: YAML, what: str) -> dict:
    """``path``'s YAML mapping, read by ``yaml`` (round-trip: comments kept); one line naming ``path`` if not."""
    return read_mapping(path, what, yaml.load, (YAMLError,))


def _layers(profile: Path, yaml: YAML) -> list[tuple[Path, dict]]:
    """(file, overrides) for ``profile`` and the profiles it extends, the first base first."""
    chain: list[tuple[Path, dict]] = []
    seen: list[Path] = []
    path = profile
    while True:
        seen.append(path.resolve())
        overrides = _read_yaml(path, yaml, "profile")
        if PROFILE_KEY in overrides:
            raise FacelabError(
                f"{path}: a profile may not set '{PROFILE_KEY}' (params apply records the profile's file name there)"
            )
        base = overrides.pop(EXTENDS, None)
        chain.append((path, overrides))
        if base is None:
            return chain[::-1]
        if not isinstance(base, str) or not base.strip():
            raise FacelabError(
                f"{path}: {EXTENDS} must name a profile file (e.g. quick-emotion-7.yaml), found {base!r}"
            )
        following = path.parent / base
        if following.resolve() in seen:
            names = " -> ".join(p.name for p, _ in chain) + f" -> {following.name}"
            raise FacelabError(f"{path}: {EXTENDS} makes a cycle ({names})")
        if not following.exists():
            raise FacelabError(f"{path}: {EXTENDS}: {following} not found")
        path = following


def _merge(base, overrides, where: str, source: Path) -> None:
    for key, value in overrides.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise FacelabError(f"{source}: {name} is not a parameter of params.yaml")
        if isinstance(value, dict):
            if not isinstance(base[key], dict):
                raise FacelabError(f"{source}: {name} is a single parameter, not a section")
            _merge(base[key], value, name, source)
        else:
            base[key] = value


def _deep_merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_profile(profile: str | Path) -> dict:
    """The profile's overrides with everything it extends merged in (plain dicts), ``extends`` removed."""
    resolved: dict = {}
    for _, overrides in _layers(Path(profile), YAML(typ="safe")):
        resolved = _deep_merge(resolved, _plain(overrides))
    return resolved


def apply_profile(profile: str | Path, params_file: str | Path = "params.yaml") -> None:
    """Merge ``profile``'s values (after those of the profiles it extends) into ``params_file``.

    ``profile`` in params_file is set to the profile's name; the result is validated before it is written.
    """
    yaml = YAML()
    yaml.preserve_quotes = True
    params_file = Path(params_file)
    params = _with_profile(Path(profile), params_file, yaml)
    with atomic_path(params_file, suffix=".yaml") as tmp:
        with open(tmp, "w") as fh:
            yaml.dump(params, fh)


def applied_params(profile: str | Path, params_file: str | Path = "params.yaml") -> dict:
    """``params_file``'s parameters with ``profile`` applied, as ``apply_profile`` would write them (in memory)."""
    return _plain(_with_profile(Path(profile), Path(params_file), YAML(typ="safe")))


def _with_profile(profile: Path, params_file: Path, yaml: YAML) -> dict:
    """``params_file`` read by ``yaml``, ``profile``'s layers merged in, ``profile`` recorded; validated."""
    layers = _layers(profile, yaml)
    params = _read_yaml(params_file, yaml, "parameter file")
    for source, overrides in layers:
        _merge(params, overrides, "", source)
    if PROFILE_KEY not in params and hasattr(params, "insert"):
        params.insert(0, PROFILE_KEY, profile.stem)  # a params.yaml from before the key: first, as committed
    else:
        params[PROFILE_KEY] = profile.stem  # keeps the line's comment
    validate_params(_plain(params), params_file)
    return params


def _plain(node):
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def set_arguments(profile: str | Path) -> list[str]:
    """The profile as ``dvc exp run`` arguments: ['-S', 'profile=NAME', '-S', 'train_keypoints.lr=0.001', ...]."""
    profile = Path(profile)
    args: list[str] = ["-S", f"{PROFILE_KEY}={profile.stem}"]
    for name, value in flatten(resolve_profile(profile)).items():
        text = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)
        args += ["-S", f"{name}={text}"]
    return args
