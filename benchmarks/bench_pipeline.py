"""Pipeline overhead: `dvc repro` wall time per stage, peak memory per stage, and the no-op `dvc repro`.

Run from the repository root:

    python benchmarks/bench_pipeline.py [--default] [--real-fer] [--keep]

Everything runs in throw-away copies of the project (``facelab.sandbox.make_project_copy``: the
repository's dvc.yaml, params.yaml, stages/ and src/, a profile applied, git-initialised, with its own
MLflow store), so the working tree is not touched.

* tiny profile (``profiles/tiny.yaml``), always: one ``dvc repro`` of the whole pipeline from a fresh
  copy (total wall time), then ``dvc repro`` with nothing changed, NOCHANGE_REPEATS times (best and
  all times; goal < 3 s).
* ``--default``: the same on the synthetic default (params.yaml as it is; several minutes; goal < 5 min
  on 2 free cores).
* ``--real-fer``: ``dvc repro evaluate`` with REAL_FER_PROFILE (all 7 classes of the real FER2013
  file, FER_FILE) for REAL_FER_EPOCHS epoch, to see each stage's peak memory on it (goal < 4 GiB).

Per-stage figures come from a ``python`` shim put first on PATH for DVC's stage commands
(``python stages/<stage>.py``): it runs the real interpreter as its one child, then appends to a log
that child's wall time and its peak resident set (``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the
largest of the stage process and anything it waited for). "DVC's own time" is the total ``dvc repro``
wall time minus the stage processes' time (start-up, hashing, lock and cache writes). The stages are
timed while the machine may be busy with other work: the load average is printed with every table.
Prints Markdown.
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

import goals  # benchmarks/goals.py
import yaml

from facelab.sandbox import make_project_copy

REPO = Path(__file__).resolve().parents[1]
TINY_PROFILE = "profiles/tiny.yaml"
FER_FILE = (REPO.parent / "shared" / "data" / "fer2013" / "fer2013-train-publictest.csv.gz").resolve()
NOCHANGE_REPEATS = 3
NOCHANGE_GOAL_S = 3.0
DEFAULT_GOAL_S = 5 * 60
PREPARE_MEMORY_GOAL_GIB = 4.0  # every stage on the real FER file
REAL_FER_PROFILE = "profiles/quick-emotion-7.yaml"  # all 35,887 rows' 7 classes: the most faces kept
REAL_FER_EPOCHS = 1  # memory does not grow with epochs; one keeps the run to a few minutes
REAL_FER_STAGES = {"prepare", "augment", "train_emotion", "evaluate"}
TIMEOUT_S = 1800  # per dvc command

SHIM = """#!{python}
# facelab benchmark shim: runs the real interpreter, then logs its wall time and peak RSS.
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call([{python!r}, *sys.argv[1:]])
record = {{"argv": sys.argv[1:], "seconds": time.perf_counter() - start, "code": code,
          "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}
with open({log!r}, "a") as fh:
    fh.write(json.dumps(record) + "\\n")
sys.exit(code if code >= 0 else 128 - code)
"""


def load_avg() -> str:
    return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())


class Copy:
    """A project copy with the python shim on PATH and a per-stage log."""

    def __init__(self, dest: Path, profile: str | None, extra_profiles: tuple[str | dict, ...] = ()):
        """``profile`` applied by make_project_copy, then each of ``extra_profiles`` in turn: a profile file of
        the copy (path relative to its root) or a dict of overrides."""
        started = time.perf_counter()
        self.root, env = make_project_copy(dest, profile=profile)
        for i, extra in enumerate(extra_profiles):
            if isinstance(extra, dict):
                path = dest.parent / f"{dest.name}-extra-{i}.yaml"
                path.write_text(yaml.safe_dump(extra))
                extra = str(path)
            self.run([sys.executable, "-m", "facelab.cli", "params", "apply", extra], env=env)
        self.log = dest.parent / f"{dest.name}-stages.jsonl"
        shim_dir = dest.parent / f"{dest.name}-shim"
        shim_dir.mkdir()
        shim = shim_dir / "python"
        shim.write_text(SHIM.format(python=sys.executable, log=str(self.log)))
        shim.chmod(0o755)
        env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
        self.env = env
        self.dvc = str(Path(sys.executable).parent / "dvc")
        self.copy_seconds = time.perf_counter() - started
        with open(self.root / "dvc.yaml") as fh:
            stages = yaml.safe_load(fh)["stages"]
        self.stage_of_script = {spec["cmd"].split()[-1]: name for name, spec in stages.items()}
        self.stage_order = list(stages)

    def run(self, cmd: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
        start = time.perf_counter()
        result = subprocess.run(
            cmd, cwd=self.root, env=env or self.env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(
                f"{' '.join(cmd)} failed ({result.returncode}) in {self.root}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return seconds, result

    def stage_records(self) -> list[dict]:
        if not self.log.exists():
            return []
        records = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        for record in records:
            script = next((a for a in record["argv"] if a.startswith("stages/")), None)
            record["stage"] = self.stage_of_script.get(script, " ".join(record["argv"]))
        return records

    def repro(self, *args: str) -> tuple[float, list[dict], str]:
        """Wall time of ``dvc repro *args``, the stage records it added, and its output."""
        before = len(self.stage_records())
        seconds, result = self.run([self.dvc, "repro", *args])
        return seconds, self.stage_records()[before:], result.stdout + result.stderr


def pipeline_table(label: str, profile: str | None, goal_s: float | None, workdir: Path) -> str:
    copy = Copy(workdir / label.replace(" ", "-"), profile)
    load_start = load_avg()
    print(f"[{label}] full dvc repro in {copy.root} (load {load_start})", file=sys.stderr, flush=True)
    total, records, _ = copy.repro()
    load_full = load_avg()
    nochange = []
    for _ in range(NOCHANGE_REPEATS):
        seconds, ran, output = copy.repro()
        if ran:
            raise SystemExit(f"`dvc repro` with nothing changed ran stages {[r['stage'] for r in ran]}:\n{output}")
        nochange.append(seconds)
    print(
        f"[{label}] full {total:.1f} s, no-change {', '.join(f'{s:.2f}' for s in nochange)} s",
        file=sys.stderr,
        flush=True,
    )

    lines = [
        f"#### Pipeline, {label}: `dvc repro` from a fresh copy\n",
        f"Profile: {profile or 'none (params.yaml: the synthetic default)'}; load average (1/5/15 min) "
        f"{load_start} at start, {load_full} after the full run.\n",
        "| stage | wall s (stage process) | share | peak RSS MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    order = {name: i for i, name in enumerate(copy.stage_order)}
    for record in sorted(records, key=lambda r: order.get(r["stage"], 99)):
        lines.append(
            f"| {record['stage']} | {record['seconds']:.1f} | {100 * record['seconds'] / total:.0f} % "
            f"| {record['maxrss_kib'] / 1024:.0f} |"
        )
    stage_sum = sum(r["seconds"] for r in records)
    lines.append(
        f"| DVC's own time (total - stages) | {total - stage_sum:.1f} | {100 * (total - stage_sum) / total:.0f} % | |"
    )
    goal = ""
    if goal_s is not None:
        goal = f" (goal < {goal_s / 60:.0f} min: {'met' if total < goal_s else 'missed'})"
    lines.append(
        f"| **total `dvc repro`**{goal} | **{total:.1f}** | 100 % | "
        f"{max(r['maxrss_kib'] for r in records) / 1024:.0f} (max) |"
    )
    lines.append("")
    best = min(nochange)
    goals.record(
        f"`dvc repro` with nothing changed < {NOCHANGE_GOAL_S:.0f} s ({label})",
        f"{best:.2f} s (best of {NOCHANGE_REPEATS})",
        best < NOCHANGE_GOAL_S,
    )
    if goal_s is not None:
        slowest = max(records, key=lambda r: r["seconds"])
        goals.record(
            f"{label} from a fresh copy < {goal_s / 60:.0f} min",
            f"{total:.0f} s",
            total < goal_s,
            f"slowest stage {slowest['stage']} {slowest['seconds']:.0f} s",
        )
    lines.append(
        f"`dvc repro` with nothing changed (right after): best of {NOCHANGE_REPEATS} **{best:.2f} s** "
        f"(all: {', '.join(f'{s:.2f}' for s in nochange)} s; goal < {NOCHANGE_GOAL_S:.0f} s: "
        f"{'met' if best < NOCHANGE_GOAL_S else 'missed'}); load average {load_avg()}.\n"
    )
    return "\n".join(lines)


def real_fer_table(workdir: Path) -> str:
    if not FER_FILE.exists():
        return f"real FER2013 file not found at {FER_FILE}: the stages' memory on it not measured.\n"
    overrides = {"data": {"emotion": {"path": str(FER_FILE)}}, "train_emotion": {"epochs": REAL_FER_EPOCHS}}
    copy = Copy(workdir / "real-fer", TINY_PROFILE, extra_profiles=(REAL_FER_PROFILE, overrides))
    load_start = load_avg()
    print(f"[real FER] dvc repro evaluate in {copy.root} (load {load_start})", file=sys.stderr, flush=True)
    total, records, _ = copy.repro("evaluate")
    counts = json.loads((copy.root / "metrics" / "prepare.json").read_text())
    emotion = counts.get("emotion", {})
    per_class = counts.get("emotion_train_per_class", {})
    cfg = yaml.safe_load((copy.root / "params.yaml").read_text())["train_emotion"]
    lines = [
        "#### The stages on the real FER2013 file: peak memory\n",
        f"`{REAL_FER_PROFILE}` (`data.emotion.path: {FER_FILE}`, {FER_FILE.stat().st_size / 2**20:.0f} MiB gzip; "
        f"width {cfg['width']}, {cfg['image_size']}x{cfg['image_size']}, batch {cfg['batch_size']}) with "
        f"`train_emotion.epochs: {REAL_FER_EPOCHS}`; the keypoint stages on the tiny profile's synthetic faces. "
        f"`dvc repro evaluate`: {total:.0f} s; load average {load_start} -> {load_avg()}.\n",
        "| stage | wall s (stage process) | peak RSS | goal < 4 GiB |",
        "| --- | ---: | ---: | --- |",
    ]
    order = {name: i for i, name in enumerate(copy.stage_order)}
    for record in sorted(records, key=lambda r: order.get(r["stage"], 99)):
        gib = record["maxrss_kib"] / 2**20
        real = "" if record["stage"] in REAL_FER_STAGES else " (synthetic keypoints only)"
        verdict = "met" if gib < PREPARE_MEMORY_GOAL_GIB else "missed"
        lines.append(
            f"| {record['stage']}{real} | {record['seconds']:.1f} | **{record['maxrss_kib'] / 1024:.0f} MiB "
            f"({gib:.2f} GiB)** | {verdict if not real else ''} |"
        )
    measured = [r for r in records if r["stage"] in REAL_FER_STAGES]
    largest = max(measured, key=lambda r: r["maxrss_kib"])
    largest_gib = largest["maxrss_kib"] / 2**20
    goals.record(
        f"each stage's peak memory on the real FER file < {PREPARE_MEMORY_GOAL_GIB:.0f} GiB",
        f"largest {largest['stage']} {largest_gib:.2f} GiB",
        largest_gib < PREPARE_MEMORY_GOAL_GIB,
        ", ".join(f"{r['stage']} {r['maxrss_kib'] / 2**20:.2f}" for r in measured),
    )
    lines += [
        "",
        f"prepare kept {sum(emotion.values()):,} FER faces of the {len(per_class)} classes of the profile ("
        + ", ".join(f"{k} {v:,}" for k, v in emotion.items())
        + "; train per class: "
        + ", ".join(f"{k} {v:,}" for k, v in per_class.items())
        + "); the whole file is parsed.\n",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", action="store_true", help="also the synthetic default (several minutes)")
    parser.add_argument("--real-fer", action="store_true", help="also the stages on the real FER2013 file (memory)")
    parser.add_argument("--keep", action="store_true", help="keep the copies (printed) instead of deleting them")
    args = parser.parse_args()

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="facelab-bench-pipeline-"))
    try:
        parts = [pipeline_table("tiny profile", TINY_PROFILE, None, workdir)]
        if args.default:
            parts.append(pipeline_table("synthetic default", None, DEFAULT_GOAL_S, workdir))
        if args.real_fer:
            parts.append(real_fer_table(workdir))
    finally:
        if args.keep:
            print(f"copies kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("### Pipeline overhead (`dvc repro`)\n")
    print(
        f"`python benchmarks/bench_pipeline.py{' --default' if args.default else ''}"
        f"{' --real-fer' if args.real_fer else ''}`, {os.cpu_count()} CPUs. Per-stage wall time and peak RSS "
        "are those of the stage's own process (a `python` shim on PATH); a fresh copy also creates its "
        "MLflow SQLite store in its first stage.\n"
    )
    print("\n".join(parts))
    print(f"Total benchmark time {time.perf_counter() - started:.0f} s; load average at the end {load_avg()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
