"""GPU check: the tiny profile and one epoch of each quick real-data profile: images/s, precision, peak GPU memory.

Run by ``benchmarks/gpu_check.sh`` (one command, which also makes the GPU venv); by hand:

    python benchmarks/gpu_check.py [--profiles tiny quick-keypoints quick-emotion-5 quick-emotion-7] [--require-gpu]
    python benchmarks/gpu_check.py --check-report install.json   # a `pip install --dry-run --report` of .[gpu]

Each profile runs in a throw-away copy of the project (``facelab.sandbox.make_project_copy``, the profile
applied, ``epochs: 1`` for the real-data ones, ``../shared/data`` linked beside it): ``dvc repro augment`` makes
the data (prepare + augment), then the profile's training stage(s) run in a child process of this script
that calls ``facelab.pipeline.train`` itself, so that it can read TensorFlow's peak GPU memory
(``tf.config.experimental.get_memory_info``) at the end. Printed per stage: the precision the run used,
images/s (median epoch, from the stage's MLflow run), training seconds, peak GPU memory, and the
data-preparation seconds. Prints Markdown.

``--check-report``: the resolution of the GPU install is consistent (every requirement of every package is
met within the set or by what the fresh venv already holds) and holds exactly one TensorFlow distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facelab.sandbox import CommandFailed, make_project_copy, newest_stage_run, run

REPO = Path(__file__).resolve().parents[1]

PROFILES = {  # profile -> the training stages it is about
    "tiny": ("train_keypoints", "train_emotion"),
    "quick-keypoints": ("train_keypoints",),
    "quick-emotion-5": ("train_emotion",),  # sam_epochs 8 >= 1: its one epoch takes sharpness-aware steps
    "quick-emotion-7": ("train_emotion",),
}
REAL_EPOCHS = 1
STAGE_TIMEOUT_S = 300  # per child process (data or one training stage)
RESULT_PREFIX = "GPU_CHECK "
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly")
ALREADY_IN_A_FRESH_VENV = {"pip", "setuptools"}  # python3.11 -m venv installs both


# --- in the child process: one training stage --------------------------------------------------


def train_stage(stage: str) -> None:
    """Run ``stage`` of the project in the current directory and print what it measured (one JSON line)."""
    import tensorflow as tf

    from facelab.config import load_params
    from facelab.pipeline import train

    started = time.perf_counter()
    params = load_params("params.yaml")
    summary = {"train_keypoints": train.run_keypoints, "train_emotion": train.run_emotion}[stage](params)
    timed = newest_stage_run(Path.cwd(), stage, params["tracking"]["experiment"]).data.metrics  # MLflow only
    gpus = tf.config.list_logical_devices("GPU")
    peak = tf.config.experimental.get_memory_info(gpus[0].name)["peak"] if gpus else None
    print(
        RESULT_PREFIX
        + json.dumps(
            {
                "stage": stage,
                "precision": summary["precision"],
                "images_per_second": timed["final.images_per_second"],
                "train_seconds": timed["final.train_seconds"],
                "stage_seconds": round(time.perf_counter() - started, 1),
                "peak_gpu_bytes": peak,
                "device": gpus[0].name if gpus else "CPU",
            }
        ),
        flush=True,
    )


# --- in the parent --------------------------------------------------------------------------


def project(profile: str, work: Path) -> tuple[Path, dict]:
    """A copy of the project with ``profile`` applied (real-data profiles: one epoch), ../shared beside it."""
    from ruamel.yaml import YAML

    root = work / profile
    root.mkdir(parents=True)
    shared = REPO.parent / "shared"
    if shared.exists():
        (root / "shared").symlink_to(shared)
    path, env = make_project_copy(root / "repo", f"profiles/{profile}.yaml")
    if profile != "tiny":
        yaml = YAML()
        params = yaml.load(path / "params.yaml")
        for stage in PROFILES[profile]:
            params[stage]["epochs"] = REAL_EPOCHS
        yaml.dump(params, path / "params.yaml")
        run(["git", "commit", "-qam", f"{profile}: {REAL_EPOCHS} epoch"], path, env)
    return path, env


def run_profile(profile: str, work: Path, timeout: int) -> list[dict]:
    """One row per training stage of ``profile``; a stage that fails or times out is a row saying so."""
    path, env = project(profile, work)
    started = time.perf_counter()
    rows = []
    try:
        run(["dvc", "repro", "augment"], path, env, timeout=timeout)
        data_seconds = round(time.perf_counter() - started, 1)
        for stage in PROFILES[profile]:
            result = run([sys.executable, str(Path(__file__).resolve()), "--train", stage], path, env, timeout=timeout)
            line = next(x for x in result.stdout.splitlines() if x.startswith(RESULT_PREFIX))
            rows.append({"profile": profile, "data_seconds": data_seconds, **json.loads(line[len(RESULT_PREFIX) :])})
    except (CommandFailed, subprocess.TimeoutExpired) as exc:
        print(str(exc)[-3000:], file=sys.stderr)
        rows.append({"profile": profile, "failed": f"{type(exc).__name__} after {time.perf_counter() - started:.0f} s"})
    return rows


def gib(value: int | None) -> str:
    return "n/a (no GPU)" if value is None else f"{value / 2**30:.2f} GiB"


def check_report(report_path: Path) -> int:
    """``pip check`` for a dry-run resolution: requirements met, one TensorFlow distribution."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    report = json.loads(report_path.read_text())
    items = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
    env = report["environment"]
    extras: dict[str, set[str]] = {name: set() for name in items}
    for item in report["install"]:
        extras[canonicalize_name(item["metadata"]["name"])] |= set(item.get("requested_extras") or [])

    def wanted(name: str, req: Requirement) -> bool:
        return not req.marker or any(req.marker.evaluate(dict(env, extra=e)) for e in extras.get(name, set()) | {""})

    for _ in range(3):  # the extras the set asks for itself (facelab[gpu] -> tensorflow[and-cuda] -> nvidia-*)
        for name, meta in items.items():
            for raw in meta.get("requires_dist", []):
                req = Requirement(raw)
                if wanted(name, req):
                    extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    unmet = []
    for name, meta in items.items():
        for raw in meta.get("requires_dist", []):
            req = Requirement(raw)
            dep = items.get(canonicalize_name(req.name))
            if not wanted(name, req) or canonicalize_name(req.name) in ALREADY_IN_A_FRESH_VENV and dep is None:
                continue
            if dep is None or not req.specifier.contains(dep["version"], prereleases=True):
                unmet.append(f"{name} needs {raw}, resolved {dep['version'] if dep else 'nothing'}")
    tensorflows = [f"{n}=={items[n]['version']}" for n in TENSORFLOW_DISTRIBUTIONS if n in items]
    nvidia = sorted(f"{n}=={m['version']}" for n, m in items.items() if n.startswith("nvidia-"))
    print(
        f"GPU install resolved: {len(items)} packages; TensorFlow: {', '.join(tensorflows) or 'none'}; "
        f"{len(nvidia)} NVIDIA packages ({', '.join(nvidia)}); unmet requirements: {len(unmet)}"
    )
    for line in unmet:
        print("  unmet:", line)
    return 0 if len(tensorflows) == 1 and not unmet else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=list(PROFILES))
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 when TensorFlow sees no GPU")
    parser.add_argument("--timeout", type=int, default=STAGE_TIMEOUT_S, help="seconds per child process")
    parser.add_argument("--work", type=Path, help="where the project copies go (default: a temporary folder)")
    parser.add_argument("--train", choices=["train_keypoints", "train_emotion"], help=argparse.SUPPRESS)
    parser.add_argument("--check-report", type=Path, help="check a pip --dry-run --report of the GPU install")
    args = parser.parse_args()
    if args.train:
        train_stage(args.train)
        return 0
    if args.check_report:
        return check_report(args.check_report)

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(
        f"TensorFlow {tf.__version__}, GPUs: {[g.name for g in gpus] or 'none'}, "
        f"built with CUDA: {tf.test.is_built_with_cuda()}",
        flush=True,
    )
    if args.require_gpu and not gpus:
        print("TensorFlow sees no GPU: nothing measured (check the driver: nvidia-smi)", file=sys.stderr)
        return 1
    work = args.work or Path(tempfile.mkdtemp(prefix="facelab-gpu-check-"))
    started = time.perf_counter()
    rows = []
    for profile in args.profiles:
        print(f"... {profile}", flush=True)
        rows.extend(run_profile(profile, work, args.timeout))
    print(
        f"\n{len(rows)} training runs in {time.perf_counter() - started:.0f} s (copies in {work}), "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| profile | stage | device | precision | images/s | training s | peak GPU memory | data s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['profile']} | failed: {r['failed']} | | | | | | |")
            continue
        print(
            f"| {r['profile']} | {r['stage']} | {r['device']} | {r['precision']} | {r['images_per_second']:.0f} | "
            f"{r['train_seconds']:.1f} | {gib(r['peak_gpu_bytes'])} | {r['data_seconds']:.1f} |"
        )
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
