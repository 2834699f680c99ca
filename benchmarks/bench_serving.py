"""Benchmark: the served face analyser (`mlflow models serve`) under concurrent clients, one worker and several.

    python benchmarks/bench_serving.py           # 8 clients x 30 photos (+ 3 bad bodies each); servers 1, 2, 2x1
    python benchmarks/bench_serving.py --quick   # 2 clients x 5 photos (+ 1 bad body each); servers 1, 2
    python benchmarks/bench_serving.py --workers 1 2 4x1 --clients 8 --photos 30 --bad 3 --store copy

Serves ``models:/facelab-face-analyzer@champion`` (params.yaml ``tracking:``) with ``mlflow models serve
--env-manager local --host 127.0.0.1 --port P --workers W`` for each ``--workers`` spec: ``W`` (TensorFlow's own
threads: all cores in each worker) or ``WxT`` (``TF_NUM_INTRAOP_THREADS=T`` in each). The store (``--store``):
``workspace``, a copy of this checkout's ``mlflow.db`` (what ``dvc repro`` registered here), or ``copy``, a
throwaway project copy (``facelab.sandbox``) with ``profiles/tiny.yaml`` after ``dvc repro`` there (about 90 s
more); ``auto`` takes the workspace's when it holds the analyser. Nothing is written to the workspace.

For each server, after a warm-up (2W clients, 3 photos each), 1 client and then ``--clients`` clients (threads,
each on its own keep-alive connection, its requests one after another, one photo per ``POST /invocations``) send
``--photos`` photos each with ``--bad`` bad bodies mixed in (an image cell that is not base64, or base64 of text).
Every answer is checked against ``facelab predict --json`` for the same photo on the same two model versions (as
tests/e2e/test_serve.py); a bad body must get the error record. Reported: photos/s, p50/p95/p99 latency of the
photo requests, the peak RSS of the server's processes under load, each worker's RSS and anonymous memory (RSS
less file-mapped pages: what the worker alone holds). Markdown on stdout, progress on stderr; exit status 1 when
an answer was wrong or missing or a server failed. Traffic to 127.0.0.1 only; every wait is bounded; the servers
are stopped at the end, also on failure or SIGTERM (and by the kernel if this process is killed: PDEATHSIG).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import datetime as dt
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil
from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

from facelab.config import load_params
from facelab.sandbox import HOST, free_port, make_project_copy, project_store_uri, run

REPO = Path(__file__).resolve().parents[1]
WORKSPACE_STORE = REPO / "mlflow.db"
TINY_PROFILE = "profiles/tiny.yaml"
MODES = {  # workers: (W, T): W workers with T TensorFlow intra-op threads each (0: TensorFlow's default)
    "default": {"clients": 8, "photos": 30, "bad": 3, "workers": [(1, 0), (2, 0), (2, 1)]},
    "quick": {"clients": 2, "photos": 5, "bad": 1, "workers": [(1, 0), (2, 0)]},
}
DISTINCT_PHOTOS = 12  # JPEGs with 1-3 synthetic faces each, sent in turn
PHOTO_SIZE = (480, 640)  # height, width
WARMUP_PHOTOS = 3  # per warm-up client
READY_TIMEOUT_S = 300  # a loaded 2-core machine needs a minute or more to start TensorFlow in each worker
REQUEST_TIMEOUT_S = 120
RUN_DEADLINE_S = 600  # no request is sent after this long in one run
STOP_TIMEOUT_S = 30
SAMPLE_EVERY_S = 0.25  # memory sampling under load
KEYPOINT_ATOL_PX, PROBABILITY_ATOL = 0.02, 1e-4  # served against facelab predict, as tests/e2e/test_serve.py
NOT_BASE64, NOT_AN_IMAGE = "this is not base64 !", base64.b64encode(b"just some text").decode("ascii")
MIB = 2**20
# Each server process's role, by its command line (uvicorn --workers W > 1 starts its workers with spawn_main).
ROLES = {"spawn_main": "worker", "resource_tracker": "resource tracker", "uvicorn": "uvicorn", "mlflow": "mlflow"}


def log(message: str) -> None:
    print(f"[bench_serving {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the store, the photos and the answers they must get -----------------------------------------------------


def analyser_store(choice: str, folder: Path, names: dict) -> tuple[str, str]:
    """The MLflow store to serve from (a URI) and what it is, in words."""
    if choice in ("auto", "workspace") and WORKSPACE_STORE.exists():
        (folder / "store").mkdir()
        copied = folder / "store" / "mlflow.db"  # its artifacts stay where they are (absolute file: URIs)
        with sqlite3.connect(f"file:{WORKSPACE_STORE}?mode=ro", uri=True) as source, sqlite3.connect(copied) as dest:
            source.backup(dest)
        if analyser_versions(f"sqlite:///{copied}", names):
            return f"sqlite:///{copied}", "a copy of this checkout's `mlflow.db` (what `dvc repro` registered here)"
    if choice == "workspace":
        raise SystemExit(f"{WORKSPACE_STORE}: missing, or no {names['analyzer_model']}@champion: run dvc repro")
    log(f"a project copy with {TINY_PROFILE}: dvc repro (about 90 s on 2 idle cores)")
    project, env = make_project_copy(folder / "project", TINY_PROFILE)
    run(["dvc", "repro"], project, env)
    return project_store_uri(project), f"a project copy with `{TINY_PROFILE}` after `dvc repro` there"


def analyser_versions(uri: str, names: dict) -> dict | None:
    """The analyser's champion version and the two model versions it holds (None: no such version)."""
    from mlflow import MlflowClient

    try:
        version = MlflowClient(uri, uri).get_model_version_by_alias(names["analyzer_model"], "champion")
    except Exception:  # MLflow's not-found error
        return None
    return {
        "model_uri": f"models:/{names['analyzer_model']}@champion",
        "analyzer": f"{names['analyzer_model']}/{version.version}",
        "keypoints": f"models:/{names['keypoints_model']}/{version.tags['keypoints_version']}",
        "emotion": f"models:/{names['emotion_model']}/{version.tags['emotion_version']}",
        "classes": version.tags["classes"],
    }


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs of 1-3 synthetic faces (facelab.data.synthetic) on blurred noise; a face is kept only where
    the Haar detector finds it (the others are skipped, from a bounded pool)."""
    import cv2

    from facelab.data import synthetic
    from facelab.serve.photos import detect_faces

    pool = synthetic.make_keypoint_faces(8 * count, seed=0)[0]
    folder.mkdir(parents=True, exist_ok=True)
    paths, next_face = [], 0
    for index in range(count):
        rng = np.random.default_rng(index)
        photo = cv2.GaussianBlur(rng.integers(60, 200, PHOTO_SIZE).astype(np.uint8), (0, 0), 8)
        wanted, placed = 1 + index % 3, 0
        while placed < wanted and next_face < len(pool):
            size, x, y = 150 + 10 * placed, 20 + 205 * placed, 60 + 50 * placed
            trial = photo.copy()
            trial[y : y + size, x : x + size] = cv2.resize(pool[next_face], (size, size), interpolation=cv2.INTER_CUBIC)
            next_face += 1
            if len(detect_faces(trial)) == placed + 1:
                photo, placed = trial, placed + 1
        paths.append(folder / f"photo-{index:02d}.jpg")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return paths


def reference_records(photos: list[Path], uri: str, versions: dict, folder: Path) -> dict[str, dict]:
    """``facelab predict --json`` on the analyser's two model versions: photo file name -> its record."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "facelab.cli", "predict", *map(str, photos), "--json", "--out", str(folder)]
    cmd += ["--keypoints-model", versions["keypoints"], "--emotion-model", versions["emotion"]]
    cmd += ["--classes", versions["classes"], "--params", str(REPO / "params.yaml")]
    records = json.loads(run(cmd, REPO, env).stdout)
    return {Path(record["photo"]).name: {**record, "photo": Path(record["photo"]).name} for record in records}


def expected_error(name: str) -> dict:
    """The record the analyser answers for a body that is not an image (facelab.serve.pyfunc._image_bytes)."""
    return {"photo": name, "error": f"{name}: not an image file (no known image format)"}


def wrong(answer: dict, expected: dict) -> str:
    """'' when ``answer`` is ``expected`` (numbers within the tolerances), else what differs."""
    if set(answer) != set(expected) or "error" in expected:
        return "" if answer == expected else f"{json.dumps(answer)[:300]} != {json.dumps(expected)[:300]}"
    if any(answer[key] != expected[key] for key in ("photo", "width", "height")):
        return f"photo/size {answer['photo']} {answer['width']}x{answer['height']}"
    if len(answer["faces"]) != len(expected["faces"]):
        return f"{len(answer['faces'])} faces, expected {len(expected['faces'])}"
    for got, want in zip(answer["faces"], expected["faces"]):
        if got["box"] != want["box"] or got["emotion"] != want["emotion"]:
            return f"box/emotion {got['box']} {got['emotion']} != {want['box']} {want['emotion']}"
        for key, atol in (("keypoints", KEYPOINT_ATOL_PX), ("probabilities", PROBABILITY_ATOL)):
            values = list(got[key].values()), list(want[key].values())
            if list(got[key]) != list(want[key]) or not np.allclose(*values, atol=atol):
                return f"{key} differ by more than {atol}"
        if abs(got["probability"] - want["probability"]) > PROBABILITY_ATOL:
            return "probability differs"
    return ""


def plan(photos: list[Path], client: int, count: int, bad: int) -> list[tuple[str, str, bool]]:
    """One client's requests in order: (name, image cell, is a photo); the bad bodies spread among the photos."""
    requests = []
    for index in range(count):
        path = photos[(client * count + index) % len(photos)]
        requests.append((path.name, base64.b64encode(path.read_bytes()).decode("ascii"), True))
    for index in range(bad):
        cell = NOT_BASE64 if (client + index) % 2 == 0 else NOT_AN_IMAGE
        requests.insert((index + 1) * len(requests) // (bad + 1), (f"bad-{client}-{index}", cell, False))
    return requests


# --- the server ---------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the server's process: SIGTERM when this benchmark dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the finally blocks and SIGTERM's handler only
        pass


def start_server(model_uri: str, store_uri: str, spec: tuple[int, int], port: int, log: Path) -> subprocess.Popen:
    """``mlflow models serve`` with ``spec`` = (workers, TensorFlow intra-op threads each; 0: TensorFlow's)."""
    workers, threads = spec
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    cmd += ["--host", HOST, "--port", str(port), "--workers", str(workers)]
    env = dict(os.environ, MLFLOW_TRACKING_URI=store_uri, TF_CPP_MIN_LOG_LEVEL="2")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn, from this venv
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip


def wait_ready(server: subprocess.Popen, port: int, workers: int, log: Path) -> float:
    """Seconds until every worker has loaded the model (uvicorn logs each one's startup) and /ping answers."""
    started = time.monotonic()
    while time.monotonic() < started + READY_TIMEOUT_S:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        if log.read_text().count("Application startup complete") >= workers:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            try:
                if post(conn, "GET", "/ping", None)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            finally:
                conn.close()
        time.sleep(1)
    raise RuntimeError(f"not ready within {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen) -> None:
    """TERM to the server's process group, KILL after STOP_TIMEOUT_S, then KILL to whatever is left in it."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=STOP_TIMEOUT_S)
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def server_processes(server: subprocess.Popen) -> list[psutil.Process]:
    try:
        return [root := psutil.Process(server.pid), *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def memory(server: subprocess.Popen) -> list[tuple[str, float, float]]:
    """(role, RSS MiB, anonymous MiB) of each server process (the mlflow command, uvicorn, its workers). Anonymous:
    RSS less the pages mapped from files (the libraries, which workers share): the models, TensorFlow's heap."""
    rows = []
    for proc in server_processes(server):
        try:
            line, info = " ".join(proc.cmdline()), proc.memory_info()
        except psutil.Error:
            continue
        role = next((role for mark, role in ROLES.items() if mark in line), line[:40])
        rows.append((role, info.rss / MIB, (info.rss - info.shared) / MIB))
    if not any(row[0] == "worker" for row in rows):  # one worker: uvicorn itself holds the model
        rows = [("worker" if row[0] == "uvicorn" else row[0], *row[1:]) for row in rows]
    return rows


# --- the clients --------------------------------------------------------------------------------------------


def post(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
    conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
    answer = conn.getresponse()
    return answer.status, answer.read()


def drive(port: int, plans: list[list], expected: dict[str, dict], server: subprocess.Popen) -> dict:
    """Each plan on its own thread and connection, all released at once: the photos' latencies, the wrong answers,
    the wall time from the release to the last answer, the server's peak RSS meanwhile."""
    latencies, problems, lock, gate = [], [], threading.Lock(), threading.Barrier(len(plans) + 1)
    deadline = time.monotonic() + RUN_DEADLINE_S

    def client(requests: list) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
        gate.wait()
        for name, cell, is_photo in requests:
            if time.monotonic() > deadline:
                with lock:
                    problems.append(f"{name}: not sent (past the {RUN_DEADLINE_S} s deadline)")
                continue
            body = json.dumps({"dataframe_records": [{"image": cell, "name": name}]}).encode()
            start = time.perf_counter()
            try:
                status, data = post(conn, "POST", "/invocations", body)
                seconds = time.perf_counter() - start
                records = json.loads(data)["predictions"] if status == 200 else None
                reason = f"HTTP {status}: {data[:200]!r}" if records is None else ""
                if not reason:
                    want = expected[name] if is_photo else expected_error(name)
                    reason = "not one record" if len(records) != 1 else wrong(records[0], want)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                seconds, reason = time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
            with lock:
                latencies.extend([seconds] if is_photo else [])
                problems.extend([f"{name}: {reason}"] if reason else [])
        conn.close()

    threads = [threading.Thread(target=client, args=(requests,), daemon=True) for requests in plans]
    for thread in threads:
        thread.start()
    gate.wait()
    started, peak, give_up = time.perf_counter(), 0.0, deadline + REQUEST_TIMEOUT_S
    for thread in threads:
        while thread.is_alive() and time.monotonic() < give_up:
            peak = max(peak, sum(rss for _, rss, _ in memory(server)))
            thread.join(SAMPLE_EVERY_S)
    wall = time.perf_counter() - started
    return {"latencies": latencies, "problems": problems, "wall": wall, "requests": sum(map(len, plans)), "peak": peak}


# --- the runs and the report --------------------------------------------------------------------------------


def serve_and_load(args, versions: dict, store_uri: str, photos: list[Path], expected: dict, folder: Path):
    """One server per ``--workers`` spec, loaded by 1 client and by ``--clients``: the rows, the failed servers."""
    rows, failures = [], []
    for spec in args.workers:
        (workers, threads), port, log_file = spec, free_port(), folder / f"server-{spec[0]}x{spec[1]}.log"
        log(f"{workers} worker(s), {threads or 'default'} threads each: mlflow models serve on {HOST}:{port}")
        server = start_server(versions["model_uri"], store_uri, spec, port, log_file)
        try:
            ready_s = wait_ready(server, port, workers, log_file)
            log(f"ready after {ready_s:.0f} s; warm-up")
            warmup = drive(port, [plan(photos, c, WARMUP_PHOTOS, 0) for c in range(2 * workers)], expected, server)
            for clients in dict.fromkeys((1, args.clients)):
                result = drive(port, [plan(photos, c, args.photos, args.bad) for c in range(clients)], expected, server)
                result["problems"][:0] = warmup["problems"] if clients == 1 else []  # reported with the first run
                about = {"workers": workers, "threads": threads or "default", "clients": clients, "ready_s": ready_s}
                rows.append({**about, **result, "processes": memory(server)})
                rate = len(result["latencies"]) / result["wall"]
                log(f"{workers} worker(s), {clients} client(s): {rate:.1f} photos/s, {len(result['problems'])} wrong")
        except RuntimeError as exc:
            log(f"{workers} worker(s): {exc}")
            failures.append(f"{workers} worker(s), {threads or 'default'} threads: {str(exc).splitlines()[0]}")
        finally:
            stop_server(server)
    return rows, failures


def markdown(args, rows: list, failures: list, about: dict) -> str:
    lines = [
        "### Serving under load (`mlflow models serve`)",
        "",
        f"`{about['command']}` ({about['seconds']:.0f} s), {about['date']}; {cpu_model()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB; load average (1/5/15 min) {about['load_start']} at start, "
        f"{about['load_end']} at end (2.0 = both cores busy).",
        "",
        f"- `{about['model_uri']}` = {about['analyzer']} (`{about['keypoints']}`, `{about['emotion']}`) from "
        f"{about['store']}; MLflow {metadata.version('mlflow')}, uvicorn {metadata.version('uvicorn')}",
        f"- `mlflow models serve -m {about['model_uri']} --env-manager local --host 127.0.0.1 --port P --workers W` "
        "(TF threads T: `TF_NUM_INTRAOP_THREADS=T` in its environment); each client a thread on its own keep-alive "
        "connection sending one photo per request (`dataframe_records`), one request after another",
        f"- {len(about['photos'])} distinct {PHOTO_SIZE[1]}x{PHOTO_SIZE[0]} JPEGs ({about['faces']} faces) sent in "
        f"turn, {args.photos} photos and {args.bad} bad bodies (not base64, base64 of text) per client, after a "
        f"warm-up of {WARMUP_PHOTOS} photos on each of 2W clients (checked, not timed)",
        "- every answer checked against `facelab predict --json` on the same two versions (boxes and emotion equal, "
        f"keypoints within {KEYPOINT_ATOL_PX} px, probabilities within {PROBABILITY_ATOL}); bad bodies: the error "
        "record. photos/s: photo requests over the wall time (bad bodies included); latency: the photo requests'; "
        "server RSS: the peak sum over its processes under load; per worker: RSS (anonymous: RSS less the pages "
        "mapped from files, the libraries the workers share) after the run",
        "",
        "| workers | TF threads each | clients | photos + bad bodies | wrong or missing answers | photos/s | p50 ms "
        "| p95 ms | p99 ms | server RSS, peak MiB | per worker RSS (anonymous) MiB | ready after s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in rows:
        latencies, photos = row["latencies"], len(row["latencies"])
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) * 1e3 if latencies else (0, 0, 0)
        per_worker = ", ".join(f"{rss:.0f} ({anon:.0f})" for role, rss, anon in row["processes"] if role == "worker")
        lines.append(
            f"| {row['workers']} | {row['threads']} | {row['clients']} | {photos} + {row['requests'] - photos} "
            f"| {len(row['problems'])} | {photos / row['wall']:.1f} | {p50:.0f} | {p95:.0f} | {p99:.0f} "
            f"| {row['peak']:.0f} | {per_worker} | {row['ready_s']:.0f} |"
        )
    others = {f"{role} {rss:.0f}": None for row in rows for role, rss, _ in row["processes"] if role != "worker"}
    lines += ["", f"The server's other processes (RSS MiB): {', '.join(others) or 'none'}."]
    problems = [problem for row in rows for problem in row["problems"]] + failures
    if problems:
        lines += ["", f"**{len(problems)} wrong or missing answers or failed servers**; the first:", ""]
        lines += [f"- {problem}" for problem in problems[:10]]
    return "\n".join(lines) + "\n"


def worker_spec(text: str) -> tuple[int, int]:
    """``W`` or ``WxT``: W uvicorn workers, each with T TensorFlow intra-op threads (none: TensorFlow's own)."""
    workers, _, threads = text.partition("x")
    if not workers.isdigit() or int(workers) < 1 or threads and not threads.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected W or WxT, e.g. 2 or 2x1")
    return int(workers), int(threads or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 clients x 5 photos (+ 1 bad body each), servers 1, 2")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 8; --quick 2)")
    parser.add_argument("--photos", type=int, help="photo requests per client (default 30; --quick 5)")
    parser.add_argument("--bad", type=int, help="bad bodies per client (default 3; --quick 1)")
    parser.add_argument("--workers", type=worker_spec, nargs="+", help="servers: W or WxT (default 1 2 2x1)")
    parser.add_argument("--store", choices=["auto", "workspace", "copy"], default="auto")
    args = parser.parse_args()
    for key, value in MODES["quick" if args.quick else "default"].items():
        setattr(args, key, value if getattr(args, key) is None else getattr(args, key))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop the servers

    load, date = "{:.2f} / {:.2f} / {:.2f}", dt.datetime.now().astimezone().strftime("%F %H:%M %Z")
    about = {"load_start": load.format(*os.getloadavg()), "date": date}
    about["command"] = " ".join(["python benchmarks/bench_serving.py", *sys.argv[1:]])
    started, names = time.perf_counter(), load_params(REPO / "params.yaml")["tracking"]
    with tempfile.TemporaryDirectory(prefix="facelab-bench-serving-") as tmp:
        folder = Path(tmp)
        store_uri, about["store"] = analyser_store(args.store, folder, names)
        about.update(versions := analyser_versions(store_uri, names))
        about["photos"] = make_photos(folder / "photos", DISTINCT_PHOTOS)
        log(f"reference answers: facelab predict --json on {len(about['photos'])} photos")
        expected = reference_records(about["photos"], store_uri, versions, folder / "predict")
        about["faces"] = sum(len(record.get("faces", [])) for record in expected.values())
        rows, failures = serve_and_load(args, versions, store_uri, about["photos"], expected, folder)
    about["seconds"], about["load_end"] = time.perf_counter() - started, load.format(*os.getloadavg())
    print(markdown(args, rows, failures, about))
    return 1 if failures or any(row["problems"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
