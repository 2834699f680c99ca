"""Where things are and what the parameters may be: facelab's one owner of paths and params.

Paths are resolved against the *workspace root*: the folder holding ``dvc.yaml``, or, inside
a queued ``dvc exp run`` (which runs in a temporary copy under ``.dvc/tmp/exps``), the
original repository DVC names in ``DVC_ROOT``. So a relative data path or the MLflow store
means the same place from every copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from facelab.errors import FacelabError
from facelab.formats import fer_label_id

PARAMS_FILE = "params.yaml"
# The real data sets beside the repository (read-only), relative to the workspace root as
# profiles/*.yaml name them; tests and benchmarks resolve it against their checkout.
SHARED_DATA = Path("..") / "shared" / "data"

# Outputs, relative to the stage's working copy (DVC tracks them there).
RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
AUGMENTED_DIR = Path("data/augmented")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")
# Training checkpoints for resuming an interrupted run: outside DVC's outputs, so they survive a restart.
CHECKPOINTS_DIR = Path(".facelab/checkpoints")


def repo_root(start: Path | None = None) -> Path:
    """The folder holding dvc.yaml at or above ``start`` (default: the current directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    return here


def workspace_root() -> Path:
    """The user's repository, also from a queued experiment's temporary copy (DVC sets DVC_ROOT)."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    root = repo_root()
    parts = root.parts
    # A temporary experiment copy lives in <repo>/.dvc/tmp/exps/<tmpdir>.
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def in_queued_experiment() -> bool:
    """True in a queued ``dvc exp run`` (a temporary copy of the repository, not the user's workspace)."""
    return repo_root() != workspace_root()


def user_path(path: str | os.PathLike) -> Path:
    """A path from params.yaml: absolute as given, relative ones against the workspace root."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else workspace_root() / p


# ---------------------------------------------------------------------------------------------
# params.yaml: the schema every run is checked against before any work starts.


def _is_bool(v):
    return isinstance(v, bool)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str(v):
    return isinstance(v, str) and v != ""


def _is_opt_str(v):
    return v is None or _is_str(v)


def _int(lo: int, hi: int | None = None) -> tuple[Callable[[Any], bool], str]:
    ok = lambda v: _is_int(v) and v >= lo and (hi is None or v <= hi)  # noqa: E731
    return ok, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")


def _num(lo: float, hi: float, lo_open: bool = False) -> tuple[Callable[[Any], bool], str]:
    ok = lambda v: _is_num(v) and (v > lo if lo_open else v >= lo) and v <= hi  # noqa: E731
    return ok, f"a number {'>' if lo_open else '>='} {lo} and <= {hi}"


def _choice(*options: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in options), "one of " + ", ".join(options)


BOOL = (_is_bool, "true or false")
OPT_PATH = (_is_opt_str, "a path or null")
STR = (_is_str, "a non-empty string")
CLASSES = (
    lambda v: isinstance(v, list) and len(v) >= 2 and all(_is_str(c) for c in v) and len(set(v)) == len(v),
    "a list of at least 2 distinct class names",
)
FRACTION = _num(0.0, 0.9, lo_open=True)
PRECISION = _choice("float32", "mixed_bfloat16", "mixed_float16", "auto")
STEM = _choice("imagenet", "stride2", "small")
# Filters of the first stage. TensorFlow's oneDNN CPU kernels (its default on x86) crash on this
# ResNet-18 at widths 8 and 12 (heap corruption, "could not create a primitive descriptor" in
# Conv2DBackpropFilter); multiples of 16 trained cleanly in every trial (docs/troubleshooting.md).
WIDTH = (lambda v: _is_int(v) and 16 <= v <= 512 and v % 16 == 0, "a multiple of 16 from 16 to 512")


def _train_schema() -> dict[str, tuple]:
    return {
        "epochs": _int(1, 10000),
        "batch_size": _int(1, 4096),
        "lr": _num(0.0, 1.0, lo_open=True),
        "optimizer": _choice("adamw", "sgd"),
        "lr_schedule": _choice("constant", "cosine", "onecycle"),
        "weight_decay": _num(0.0, 1.0),
        "weight_decay_on": _choice("all", "kernels"),
        # momentum of the weights' moving average (0 = off); 1 would never move
        "ema": (lambda v: _is_num(v) and 0 <= v < 1, "a number >= 0 and < 1"),
        # sharpness-aware minimisation (facelab.nn.sam): radius (0 = off), in the last N epochs (0 = all)
        "sam_rho": _num(0.0, 1.0),
        "sam_epochs": _int(0, 10000),
        "dropout": _num(0.0, 0.95),
        "width": WIDTH,
        "stem": STEM,
        "zero_init_residual": BOOL,
        # after training: BatchNorm statistics averaged over the training faces without augmentation
        "recompute_batchnorm": BOOL,
        "precision": PRECISION,
        "resume": BOOL,
        "early_stopping_patience": _int(0),
        # test-time averaging baked into the saved model (facelab.nn.tta): mirror image, and 4 shifts of s px
        "tta": {"flip": BOOL, "shift_px": _int(0, 16)},
    }


SCHEMA: dict[str, Any] = {
    # the name of the last profile applied (facelab params apply / sets): a label of the MLflow runs, not an input
    "profile": STR,
    "seed": _int(0),
    "data": {
        "keypoints": {
            "source": _choice("synthetic", "file"),
            "path": OPT_PATH,
            "test_path": OPT_PATH,
            "missing": _choice("drop", "mask"),
            "coordinates": _choice("centres", "edges"),
            "test_fraction": FRACTION,
            "val_fraction": FRACTION,
        },
        "emotion": {
            "source": _choice("synthetic", "file"),
            "path": OPT_PATH,
            "test_path": OPT_PATH,
            "classes": CLASSES,
            "test_fraction": FRACTION,
            "val_fraction": FRACTION,
        },
    },
    "synthetic": {
        "keypoint_faces": _int(20),
        "emotion_faces": _int(20),
    },
    "augment": {
        "keypoints": {
            "copies": _int(0, 20),
            "flip": BOOL,
            "rotation_deg": _num(0, 45),
            "shift_px": _num(0, 24),
            "scale": _num(0, 0.5),
            "brightness": _num(0, 0.9),
        },
        "emotion": {
            "flip": BOOL,
            "rotation": _num(0, 0.5),
            "shift": _num(0, 0.5),
            "zoom": _num(0, 0.5),
            "contrast": _num(0, 0.9),
            "erasing": _num(0, 1),
        },
    },
    "train_keypoints": {
        **_train_schema(),
        "head": _choice("dense", "flatten", "softargmax"),
        "loss": _choice("mse", "l1", "wing"),
    },
    "train_emotion": {
        **_train_schema(),
        "image_size": _int(32, 256),
        "crop": _int(0, 256),
        "head": _choice("pool", "flatten"),
        "label_smoothing": _num(0.0, 0.5),
        "mixup": _num(0.0, 1.0),
        "class_weights": _choice("none", "balanced", "sqrt"),
        # progressive resizing (facelab.nn.callbacks.ProgressiveResizing): the first `epochs` epochs (0 = off)
        # resize the faces to `image_size` and crop `crop` (0: none); the rest use image_size and crop above
        "progressive": {"epochs": _int(0, 10000), "image_size": _int(32, 256), "crop": _int(0, 256)},
    },
    "evaluate": {
        "champion_metric_keypoints": _choice("keypoints.rmse_px"),
        "champion_metric_emotion": _choice("emotion.f1_weighted", "emotion.accuracy", "emotion.f1_macro"),
    },
    "combine": {
        "faces": _int(1, 256),
        "columns": _int(1, 32),
    },
    "tracking": {
        "experiment": STR,
        "keypoints_model": STR,
        "emotion_model": STR,
        "analyzer_model": STR,
    },
    "gate": {
        "baseline": STR,
        "keypoints_rmse_px_rel": _num(0, 10),
        "emotion_f1_weighted_abs": _num(0, 1),
        "emotion_accuracy_abs": _num(0, 1),
    },
}


def _validate(node: dict, schema: dict, where: str, source: Path) -> None:
    if not isinstance(node, dict):
        raise FacelabError(f"{source}: {where or 'the file'} must be a mapping of keys, found {type(node).__name__}")
    for key, rule in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in node:
            raise FacelabError(f"{source}: missing parameter {name}")
        value = node[key]
        if isinstance(rule, dict):
            _validate(value, rule, name, source)
        else:
            check, expected = rule
            if not check(value):
                raise FacelabError(f"{source}: parameter {name} = {value!r} is not {expected}")
    for key in node:
        if key not in schema:
            name = f"{where}.{key}" if where else key
            raise FacelabError(f"{source}: unknown parameter {name} (a typo?)")


def validate_params(params: dict, source: Path | str = PARAMS_FILE) -> dict:
    """Check every parameter's presence, type and range; raise a one-line FacelabError if not."""
    source = Path(source)
    _validate(params, SCHEMA, "", source)
    for task in ("keypoints", "emotion"):
        section = params["data"][task]
        if section["source"] == "file" and not section["path"]:
            raise FacelabError(f"{source}: data.{task}.source is 'file' but data.{task}.path is not set")
    for name in params["data"]["emotion"]["classes"]:
        try:
            fer_label_id(name)
        except KeyError as exc:
            raise FacelabError(f"{source}: data.emotion.classes: {exc.args[0]}") from None
    emotion = params["train_emotion"]
    if emotion["crop"] > emotion["image_size"]:
        raise FacelabError(
            f"{source}: train_emotion.crop = {emotion['crop']} is larger than train_emotion.image_size = "
            f"{emotion['image_size']} (the crop is cut from the resized face)"
        )
    small = emotion["progressive"]
    if small["epochs"]:
        if small["epochs"] >= emotion["epochs"]:
            raise FacelabError(
                f"{source}: train_emotion.progressive.epochs = {small['epochs']} leaves none of the "
                f"{emotion['epochs']} epochs at the network's own size (it must be fewer)"
            )
        if small["crop"] > small["image_size"]:
            raise FacelabError(
                f"{source}: train_emotion.progressive.crop = {small['crop']} is larger than "
                f"train_emotion.progressive.image_size = {small['image_size']}"
            )
        if emotion["head"] != "pool":
            raise FacelabError(
                f"{source}: train_emotion.progressive needs head 'pool' (the '{emotion['head']}' head's weights "
                "depend on the face's size)"
            )
    ids = [fer_label_id(n) for n in params["data"]["emotion"]["classes"]]
    if len(set(ids)) != len(ids):
        raise FacelabError(f"{source}: data.emotion.classes names the same FER class twice")
    return params


def read_mapping(path: Path, what: str, parse: Callable[[str], Any], errors: tuple[type[Exception], ...]) -> dict:
    """``path``'s YAML mapping ({} when empty), parsed by ``parse`` (which raises ``errors``); one-line
    FacelabErrors naming ``path`` for every way it can be unreadable. ``what``: "parameter file", "profile"."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FacelabError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise FacelabError(f"{path}: is a directory, not a {what}") from None
    except UnicodeDecodeError:
        raise FacelabError(f"{path}: not a {what} (not UTF-8 text)") from None
    except OSError as exc:
        raise FacelabError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        data = parse(text)
    except errors as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FacelabError(f"{path}: {line}not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        found = "a list" if isinstance(data, list) else f"the single value {str(data)[:40]!r}"
        raise FacelabError(f"{path}: a {what} must be a mapping of parameters, found {found}")
    return data


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict:
    """Read and validate params.yaml."""
    path = Path(path)
    return validate_params(read_mapping(path, "parameter file", yaml.safe_load, (yaml.YAMLError,)), path)


def flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: the dotted names DVC and MLflow both show."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
