"""Time facelab's CSV loaders on the real files against the obvious per-row parse.

Run from the repository root (the real data lives in ../shared/data beside it):

    python benchmarks/bench_loading.py

For each data set it takes the best of 3 runs of

* facelab: ``readers.read_fer_csv`` / ``readers.read_keypoints_csv`` on the file, and
* naive: the same pandas read (``pd.read_csv(path, dtype={pixel column: object})``) followed by
  ``np.array(s.split(), dtype=np.uint8)`` for every row (and the same float/label columns),

both from the file to finished arrays, and prints a Markdown table plus the machine and the
peak resident memory after the first full FER parse (before any naive run, so it is facelab's).
The machine's load average is printed too: other processes on a shared machine slow both columns.
"train+val" is the two keypoint files joined into one (a two-member gzip, 3,446 rows, and the same
unzipped, as Kaggle ships training.csv) to come closer to Kaggle's 7,049-row file; the per-1000-rows
column extrapolates to such files. Plain files are parsed on two threads, gzip ones on one (the
other core decompresses).
"""

from __future__ import annotations

import gzip
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import goals  # benchmarks/goals.py
import numpy as np
import pandas as pd
from machine import cpu_model  # benchmarks/machine.py

from facelab.config import SHARED_DATA
from facelab.data import readers
from facelab.formats import KEYPOINT_COLUMNS

REPO = Path(__file__).resolve().parents[1]

DATA = REPO / SHARED_DATA
FER_FILE = DATA / "fer2013" / "fer2013-train-publictest.csv.gz"
YTF_TRAIN = DATA / "keypoints" / "ytf-keypoints-train.csv.gz"
YTF_VAL = DATA / "keypoints" / "ytf-keypoints-val.csv.gz"
REPEATS = 3
KAGGLE_ROWS = 7049


def naive_fer(path: Path):
    frame = pd.read_csv(path, dtype={"pixels": object})
    images = np.stack([np.array(s.split(), dtype=np.uint8) for s in frame["pixels"]]).reshape(-1, 48, 48)
    return images, frame["emotion"].to_numpy(np.int64), frame["Usage"].to_numpy(object)


def naive_keypoints(path: Path):
    frame = pd.read_csv(path, dtype={"Image": object})
    images = np.stack([np.array(s.split(), dtype=np.uint8) for s in frame["Image"]]).reshape(-1, 96, 96)
    return images, frame[list(KEYPOINT_COLUMNS)].to_numpy(np.float32)


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> tuple[float, object]:
    """Best wall-clock time of ``repeats`` runs (and the last result); records the CPU time of that run."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = time.perf_counter() - start
        if wall < best:
            best, CPU_SECONDS[fn] = wall, time.process_time() - cpu
    return best, result


CPU_SECONDS: dict = {}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    missing = [p for p in (FER_FILE, YTF_TRAIN, YTF_VAL) if not p.exists()]
    if missing:
        print(f"real data not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {cpu_model()}, {cores} cores usable ({os.cpu_count()} online), "
        f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}"
    )
    rss_start = peak_rss_mib()

    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    results = []
    # FER first, so the peak RSS below is facelab's parse, not the naive one.
    run = lambda: readers.read_fer_csv(FER_FILE)  # noqa: E731
    fer_time, fer = best_of(run)
    fer_cpu = CPU_SECONDS[run]
    rss_fer = peak_rss_mib()
    print(
        f"peak RSS: {rss_start:.0f} MiB after imports, {rss_fer:.0f} MiB after the full FER parse "
        f"(images alone: {fer.images.nbytes / 2**20:.0f} MiB)"
    )
    naive_time, naive = best_of(lambda: naive_fer(FER_FILE))
    assert np.array_equal(naive[0], fer.images) and np.array_equal(naive[1], fer.labels)
    results.append((FER_FILE.name, len(fer.labels), naive_time, fer_time, fer_cpu))

    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "ytf-keypoints-train+val.csv.gz"
        header_free_val = _drop_header_gz(YTF_VAL)
        joined.write_bytes(YTF_TRAIN.read_bytes() + header_free_val)  # a two-member gzip
        plain = Path(tmp) / "ytf-keypoints-train+val.csv"  # Kaggle ships training.csv unzipped
        plain.write_bytes(gzip.decompress(joined.read_bytes()))
        for label, path in (
            (YTF_TRAIN.name, YTF_TRAIN),
            ("ytf-keypoints train+val (.csv.gz)", joined),
            ("ytf-keypoints train+val (plain .csv)", plain),
        ):
            run = lambda: readers.read_keypoints_csv(path)  # noqa: E731
            kp_time, data = best_of(run)
            naive_time, naive = best_of(lambda: naive_keypoints(path))
            assert np.array_equal(naive[0], data.images)
            np.testing.assert_allclose(naive[1], data.keypoints)
            results.append((label, len(data.images), naive_time, kp_time, CPU_SECONDS[run]))

    print()
    print("| dataset | rows | naive s | facelab s | speed-up | rows/s | facelab s per 1000 rows | facelab CPU s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rows, naive_time, ours, cpu in results:
        print(
            f"| {name} | {rows:,} | {naive_time:.2f} | {ours:.3f} | {naive_time / ours:.1f}x | "
            f"{rows / ours:,.0f} | {1000 * ours / rows:.3f} | {cpu:.2f} |"
        )
    print()
    gz_rows, gz_time = results[-2][1], results[-2][3]
    plain_rows, plain_time = results[-1][1], results[-1][3]
    print(
        f"extrapolated: Kaggle training.csv ({KAGGLE_ROWS:,} rows) ~ {KAGGLE_ROWS * plain_time / plain_rows:.2f} s "
        f"as plain CSV, ~ {KAGGLE_ROWS * gz_time / gz_rows:.2f} s gzipped; "
        f"full fer2013.csv (35,887 rows) ~ {35887 * results[0][3] / results[0][1]:.2f} s gzipped"
    )
    print(
        f"best of {REPEATS}; both columns go from the file to finished uint8/float arrays; "
        "CPU s counts both threads (reader + parser) of the best run."
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    record_goals(results)
    return 0


def record_goals(results: list[tuple]) -> None:
    """FER2013 (35,887 rows) < 3 s, Kaggle keypoints (7,049 rows) < 1 s, both >= 5x the per-row loop."""
    fer_rows, fer_time = results[0][1], results[0][3]
    fer_full = 35887 * fer_time / fer_rows
    goals.record(
        "FER2013 (35,887 rows) parsed < 3 s",
        f"{fer_rows:,} rows in {fer_time:.2f} s; 35,887 extrapolated {fer_full:.2f} s",
        fer_full < 3.0,
    )
    (_, gz_rows, _, gz_time, _), (_, plain_rows, _, plain_time, _) = results[-2], results[-1]
    plain_full, gz_full = KAGGLE_ROWS * plain_time / plain_rows, KAGGLE_ROWS * gz_time / gz_rows
    goals.record(
        "keypoints (7,049 rows) parsed < 1 s",
        f"extrapolated from {plain_rows:,} rows: "
        f"{plain_full:.2f} s plain CSV (as Kaggle ships it), {gz_full:.2f} s gzipped",
        plain_full < 1.0,
        "" if gz_full < 1.0 else "gzipped: over 1 s",
    )
    speedups = [naive / ours for _, _, naive, ours, _ in results]
    goals.record(
        "parsing >= 5x the per-row loop",
        ", ".join(f"{s:.1f}x" for s in speedups),
        min(speedups) >= 5.0,
        "FER, YTF train, YTF train+val gz, plain",
    )


def _drop_header_gz(path: Path) -> bytes:
    text = gzip.decompress(path.read_bytes())
    return gzip.compress(text[text.index(b"\n") + 1 :], compresslevel=6)


if __name__ == "__main__":
    sys.exit(main())
