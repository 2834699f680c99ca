"""Run facelab's benchmarks one after another and write their tables to benchmarks/RESULTS.md.

    python benchmarks/run_all.py            # quick mode (what `make bench` runs), about 20 minutes
    python benchmarks/run_all.py --full     # also the slow parts: the synthetic-default pipeline
    python benchmarks/run_all.py --only training pipeline   # a subset (names below)

Each benchmark is its own script, run in turn in a subprocess with this interpreter from the
repository root (never two at once: they would slow each other). Their Markdown output (stdout) is
collected under a header naming the date, the machine (CPU model, cores, memory), the load average
and the Python / TensorFlow / Keras / DVC versions, written to benchmarks/RESULTS.md and printed.
Above them goes one table of the speed issue's goals, met or missed, that the scripts record as they
measure (benchmarks/goals.py).
Their progress (stderr) is shown as they run. A benchmark that fails is reported with its exit
status and the end of its stderr; the others still run.

Quick mode leaves out the slow parts (the arguments below, BENCHMARKS): the synthetic-default pipeline
(``bench_pipeline.py --default``, several minutes), the emotion model at the original emotion recipe's
96x96 (``bench_training.py --tasks ... emotion96``) and the two-worker trainings (``bench_workers.py``,
about 10 minutes), and serves the analyser to 2 clients x 5 photos instead of 8 x 30 on three servers
(``bench_serving.py --quick``); bench_pipeline's stages on the real FER file (one epoch, a few minutes: their
peak memory) are in both, and so is the training throughput of the networks the real-data profiles train
(``bench_training.py --profiles``, a few short rounds each): those of TRAINING_PROFILES whose profiles/NAME.yaml
exists when run_all starts (``training_profile_args``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import goals  # noqa: E402  (benchmarks/goals.py)
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"

# bench_training.py --profiles: the real-data profiles' networks (the fast-* ones may not exist yet)
TRAINING_PROFILES = (
    "quick-keypoints",
    "quick-emotion-5",
    "quick-emotion-7",
    "fast-keypoints",
    "fast-emotion-5",
    "fast-emotion-7",
)


def training_profile_args(names=TRAINING_PROFILES) -> list[str]:
    """``--profiles`` with those of ``names`` whose profiles/NAME.yaml exists; [] when none does."""
    present = [name for name in names if (REPO / "profiles" / f"{name}.yaml").is_file()]
    return ["--profiles", *present] if present else []


PROFILE_ARGS = training_profile_args()
# name: script, arguments in quick mode (None: --full or --only only), arguments with --full
BENCHMARKS = {
    "loading": ("bench_loading.py", [], []),
    "inference": ("bench_inference.py", [], []),
    "training": ("bench_training.py", PROFILE_ARGS, ["--tasks", "keypoints", "emotion", "emotion96", *PROFILE_ARGS]),
    "pipeline": ("bench_pipeline.py", ["--real-fer"], ["--real-fer", "--default"]),
    "onnx": ("bench_onnx.py", [], ["--repeats", "5"]),
    "workers": ("bench_workers.py", None, []),  # about 10 minutes: six short trainings
    "serving": ("bench_serving.py", ["--quick"], []),  # mlflow models serve under 2 clients (quick), 8 (full)
}
TENSORFLOW = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly")  # whichever is installed
TIMEOUT_S = 3600
STDERR_TAIL = 3000


def memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def version(*packages: str) -> str:
    """The installed version of the first of ``packages`` that is installed."""
    for package in packages:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def load_avg() -> str:
    return "{:.2f} / {:.2f} / {:.2f}".format(*os.getloadavg())


def header(mode: str) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join(
        [
            "# facelab benchmarks",
            "",
            f"Written by `python benchmarks/run_all.py{' --full' if mode == 'full' else ''}` ({mode} mode); "
            "every number below is from that run.",
            "",
            f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
            f"- machine: {cpu_model()}, {cores} cores usable ({os.cpu_count()} online), {memory_gib()} memory, "
            f"{platform.system()} {platform.release()}",
            f"- load average (1/5/15 min) at start: {load_avg()} (other processes on this machine slow every figure; "
            "each table gives the load while it was measured)",
            f"- Python {platform.python_version()}, TensorFlow {version(*TENSORFLOW)}, Keras {version('keras')}, "
            f"DVC {version('dvc')}, MLflow {version('mlflow')}, numpy {version('numpy')}",
            "",
        ]
    )


def run_one(name: str, script: str, args: list[str]) -> str:
    cmd = [sys.executable, str(HERE / script), *args]
    shown = " ".join(["python", f"benchmarks/{script}", *args])
    if not (HERE / script).exists():
        return f"## {name}\n\n`{shown}`: script not found, skipped.\n"
    print(f"== {shown} (load {load_avg()})", file=sys.stderr, flush=True)
    load_start, started = load_avg(), time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    stderr_tail = []
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        # stdout is the table (small); stderr is progress, echoed as it comes.
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
        reader.start()
        for line in proc.stderr:
            sys.stderr.write(line)
            stderr_tail.append(line)
            del stderr_tail[:-80]
        try:
            code = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        reader.join()
    seconds = time.perf_counter() - started
    output = "".join(chunks).strip()
    lines = [
        f"## {name}",
        "",
        f"`{shown}`: {seconds:.0f} s, load average {load_start} at start, {load_avg()} at end.",
        "",
    ]
    if code != 0:
        tail = "".join(stderr_tail)[-STDERR_TAIL:]
        lines += [f"**failed (exit status {code})**; end of its stderr:", "", "```", tail.rstrip(), "```", ""]
    if output:
        lines += [output, ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="everything, including the slow parts")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write (default {RESULTS})")
    args = parser.parse_args()

    mode = "full" if args.full else "quick"
    started = header(mode)  # the date and load average before the first benchmark
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "goals.jsonl"
        os.environ[goals.LEDGER_ENV] = str(ledger)  # the benchmarks inherit it and record their goals
        for name, (script, quick, full) in BENCHMARKS.items():
            if args.only and name not in args.only or quick is None and not (args.full or args.only):
                continue
            sections.append(run_one(name, script, full if args.full or quick is None else quick))
        goal_table = goals.table(ledger)
    sections = [started, goal_table, *sections, f"Load average at the end: {load_avg()}.\n"]
    text = "\n".join(sections)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
