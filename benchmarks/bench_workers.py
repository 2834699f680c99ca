"""Two training workers against one on the same cores: images/s of each training stage.

Run from the repository root:

    python benchmarks/bench_workers.py [--stages train_emotion train_keypoints] [--epochs 3]

What a user gets who starts two workers (``TF_CONFIG``, ``facelab workers-config``, a
``MultiWorkerMirroredStrategy``: facelab's own loop, ``distributed.fit_replicated``) on the cores that one worker
would use. For each stage, in a copy of the project (``facelab.sandbox.make_project_copy``) with the quick
profile's model and training settings on synthetic faces (no sharpness-aware steps: they refuse several
replicas), three trainings of the stage script, one after the other:

* ``one worker``: ``python stages/<stage>.py`` on two cores, two intra-op threads;
* ``two workers``: two processes on 127.0.0.1, each pinned to one core with one intra-op and one inter-op
  thread, each with ``batch_size`` as the profile has it (the global batch is twice that);
* ``two workers, same global batch``: the same with half the batch each (the same training as one worker).

images/s is the chief's ``final.images_per_second`` (the median epoch's images of every worker together, per
second; the first epoch traces and is slower) read from the copy's MLflow store. The ratio is two workers'
images/s over one worker's. Prints Markdown; the load average is printed with it (a busy machine slows every
row).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from facelab.sandbox import free_ports, make_project_copy, newest_stage_run, run

PROFILES = {"train_emotion": "profiles/quick-emotion-5.yaml", "train_keypoints": "profiles/quick-keypoints.yaml"}
SYNTHETIC_FACES = {"train_emotion": 4000, "train_keypoints": 800}  # about 2,300 training faces each
EPOCHS = 3
STAGE_TIMEOUT_S = 1800


def overrides(stage: str, epochs: int) -> dict:
    """The profile's model and training settings on synthetic faces, ``epochs`` long, on any number of replicas."""
    task = stage.split("_", 1)[1]
    return {
        "data": {task: {"source": "synthetic", "path": None, "test_path": None}},
        "synthetic": {f"{'keypoint' if task == 'keypoints' else task}_faces": SYNTHETIC_FACES[stage]},
        stage: {"epochs": epochs, "sam_rho": 0.0, "sam_epochs": 0, "ema": 0.0, "early_stopping_patience": 0},
    }


def apply(path: Path, env: dict, values: dict, name: str) -> None:
    profile = path.parent / f"{path.name}-{name}.yaml"
    profile.write_text(json.dumps(values))  # JSON is YAML
    run([sys.executable, "-m", "facelab.cli", "params", "apply", str(profile)], path, env)


def pinned(cores: set[int]):
    return lambda: os.sched_setaffinity(0, cores)


def threads(count: int) -> dict:
    return {"TF_NUM_INTRAOP_THREADS": str(count), "TF_NUM_INTEROP_THREADS": str(count), "OMP_NUM_THREADS": str(count)}


def train(copies: list[Path], env: dict, stage: str, cores: list[int]) -> dict:
    """``stage`` on one worker per copy (the first the chief), worker i pinned to ``cores[i]`` (one worker: all
    of ``cores``); the chief's newest run's images/s and global batch."""
    if len(copies) == 1:
        plans = [(copies[0], set(cores), {**env, **threads(len(cores))})]
    else:
        hosts = [f"127.0.0.1:{port}" for port in free_ports(len(copies))]
        plans = [
            (
                copy,
                {cores[i]},
                {
                    **env,
                    **threads(1),
                    "PYTHONPATH": str(copy / "src"),
                    "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}),
                },
            )
            for i, copy in enumerate(copies)
        ]
    workers = [
        subprocess.Popen(
            [sys.executable, f"stages/{stage}.py"],
            cwd=copy,
            env=worker_env,
            preexec_fn=pinned(worker_cores),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for copy, worker_cores, worker_env in plans
    ]
    try:
        outputs = [w.communicate(timeout=STAGE_TIMEOUT_S)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    if any(w.returncode for w in workers):
        raise SystemExit(f"{stage} failed:\n" + "\n---\n".join(o[-3000:] for o in outputs))
    newest = newest_stage_run(copies[0], stage)
    return {
        "images_per_second": newest.data.metrics["final.images_per_second"],
        "global_batch": int(newest.data.params["devices.global_batch_size"]),
        "replicas": int(newest.data.params["devices.replicas"]),
    }


def bench_stage(stage: str, epochs: int, work: Path, cores: list[int]) -> list[dict]:
    chief, env = make_project_copy(work / stage / "chief", PROFILES[stage])
    apply(chief, env, overrides(stage, epochs), "synthetic")
    run(["dvc", "repro", "augment"], chief, env, timeout=STAGE_TIMEOUT_S)
    other, _ = make_project_copy(work / stage / "other", None)
    shutil.copy2(chief / "params.yaml", other / "params.yaml")
    shutil.copytree(chief / "data", other / "data", dirs_exist_ok=True)
    batch = yaml.safe_load((chief / "params.yaml").read_text())[stage]["batch_size"]
    rows = []
    for label, copies, per_replica in (
        ("one worker, 2 threads", [chief], batch),
        ("two workers, 1 thread each", [chief, other], batch),
        ("two workers, 1 thread each, same global batch", [chief, other], batch // 2),
    ):
        for copy in copies:
            apply(copy, env, {stage: {"batch_size": per_replica}}, f"batch{per_replica}")
        started = time.perf_counter()
        measured = train(copies, env, stage, cores)
        rows.append({"stage": stage, "setup": label, "seconds": time.perf_counter() - started, **measured})
        print(f"... {stage}, {label}: {measured['images_per_second']:.0f} img/s", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", choices=list(PROFILES), default=list(PROFILES))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--work", type=Path, help="where the project copies go (default: a temporary folder)")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        print("two cores are needed", file=sys.stderr)
        return 1
    from machine import cpu_model  # benchmarks/machine.py

    work = args.work or Path(tempfile.mkdtemp(prefix="facelab-bench-workers-"))
    before = os.getloadavg()
    rows = [row for stage in args.stages for row in bench_stage(stage, args.epochs, work, cores)]
    print(
        f"\n`python benchmarks/bench_workers.py --epochs {args.epochs}`: {cpu_model()}, cores {cores}, "
        f"load average {before[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print("| stage | setup | replicas | global batch | images/s | ratio to one worker | stage s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        one = next(r for r in rows if r["stage"] == row["stage"] and r["replicas"] == 1)["images_per_second"]
        print(
            f"| {row['stage']} | {row['setup']} | {row['replicas']} | {row['global_batch']} | "
            f"{row['images_per_second']:.0f} | {row['images_per_second'] / one:.2f} | {row['seconds']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
