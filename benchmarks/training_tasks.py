"""The parameters of bench_training.py's tasks (imported as `training_tasks`): fixed ones and profiles.

``fixed_task_params`` pins, in a copy of params.yaml, what the fixed tasks (keypoints, emotion, emotion96) hold
constant; ``profile_params`` says which training stage a profile is about and gives params.yaml with the
profile applied (``facelab.profiles.applied_params``); ``whole_faces`` rounds a keypoint measurement's batches up
to whole faces; ``describe`` is a row's network. No TensorFlow here: a missing or invalid profile is reported
before bench_training.py starts it.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"
TASKS = ("keypoints", "emotion")


def fixed_task_params(params: dict, task: str, width: int, classes: int) -> dict:
    """params.yaml with what the fixed tasks hold constant whatever it says: ResNet-18 ``width`` with the default
    head, no crop, input 48 resized to 48 (96 for emotion96), ``classes`` emotion classes, no keypoint dropout;
    precision auto, AdamW sparing nothing, MSE, no mixup. The rest (stem, batch, lr...) is params.yaml's."""
    params = copy.deepcopy(params)
    pinned = {"width": width, "zero_init_residual": False, "precision": "auto", "optimizer": "adamw"}
    pinned["weight_decay_on"] = "all"
    if task == "keypoints":
        params["train_keypoints"].update(pinned, dropout=0.0, head="dense", loss="mse")
    else:
        size = 96 if task == "emotion96" else 48
        params["train_emotion"].update(pinned, image_size=size, crop=0, head="pool", mixup=0.0)
        params["data"]["emotion"]["classes"] = [f"class {i}" for i in range(classes)]
    return params


def profile_params(name: str) -> tuple[str, dict]:
    """(task, params.yaml with profiles/NAME.yaml applied) for NAME (".yaml" optional).

    The task is the one whose faces the profile reads from a file (``data.<task>.source: file``); when both or
    neither do, the one whose sections (``data.<task>``, ``augment.<task>``, ``train_<task>``) it sets, emotion
    if it sets both. A missing file or an invalid profile raises a one-line ``FacelabError``.
    """
    from facelab.errors import FacelabError
    from facelab.profiles import applied_params, resolve_profile

    path = PROFILES / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml")))
        raise FacelabError(f"profiles/{path.name} not found (profiles there: {known})")
    params = applied_params(path, REPO / "params.yaml")
    from_file = [task for task in TASKS if params["data"][task]["source"] == "file"]
    if len(from_file) == 1:
        return from_file[0], params
    overrides = resolve_profile(path)
    keys = {*overrides, *(overrides.get("data") or {}), *(overrides.get("augment") or {})}
    touched = {task for task in TASKS if {task, f"train_{task}"} & keys}
    return ("keypoints" if touched == {"keypoints"} else "emotion"), params


def whole_faces(task: str, params: dict, steps: int) -> int:
    """``steps``, for keypoints rounded up so that its batches hold whole faces (each 1 + copies images)."""
    if task != "keypoints":
        return steps
    per_face = params["augment"]["keypoints"]["copies"] + 1
    unit = per_face // math.gcd(params["train_keypoints"]["batch_size"], per_face)
    return -(-steps // unit) * unit


def describe(task: str, cfg: dict, profile: bool) -> str:
    """A row's network: input px (and for a profile: task, crop, width, head), stem."""
    size = "96" if task == "keypoints" else "48" + (f"->{cfg['image_size']}" if cfg["image_size"] != 48 else "")
    if profile:
        crop = f", crop {cfg['crop']}" if task != "keypoints" and cfg["crop"] else ""
        size = f"{task} {size}{crop}, width {cfg['width']}, {cfg['head']} head"
    return f"{size}, {cfg['stem']} stem"
