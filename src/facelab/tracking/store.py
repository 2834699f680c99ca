"""The MLflow store: where it is and how facelab talks to it, and the runs it holds. With
``facelab.tracking.registry`` (the model registry) and ``facelab.serve.pyfunc``, the only modules that import
MLflow (the champion rules that use it are ``facelab.tracking.champions``).

* The store: ``MLFLOW_TRACKING_URI`` when set, else SQLite at ``<workspace>/mlflow.db`` by
  absolute path (with a busy timeout), with artifacts in ``<workspace>/mlartifacts``: runs
  from a queued ``dvc exp run`` (in a temporary copy) land in the user's own store.
* Runs: one per stage execution (``stage_run``), named after the stage, with the stage's parameters under
  the same dotted names as ``params.yaml``, tagged with the git commit and DVC's experiment
  name, with their data splits as MLflow datasets (``log_dataset``: the run page's "Datasets"),
  and ended as KILLED when interrupted (Ctrl-C / SIGTERM: the signal waits for the store call in flight).
  A run that does not finish leaves no model version behind: its versions are deleted when it ends or, when
  the store was unreachable then, by the next stage run in this workspace (``close_abandoned_runs``).
* Retries: every MLflow call facelab makes goes through ``retry``, which waits out what passes by
  itself (SQLite's "database is locked"; a server restarting: connection refused or reset,
  timeouts, HTTP 408/429/5xx, MLflow's retryable error codes) with a bounded back-off of about
  ``RETRY_BUDGET_S`` seconds (one line on stderr when the wait starts: ``facelab: MLflow server URI unreachable
  (what: error), retrying for up to N s``), then ends the stage with one line (``FacelabError``).
* Logging to runs: ``log_params``, ``log_metrics``, ``set_tags``, ``log_artifacts``, ``log_dataset``,
  ``epoch_logger`` (the active run), ``log_run_metrics`` and ``log_artifact_to_run`` (another run), and
  ``download`` (a local copy of an artifact).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from facelab.config import flatten, workspace_root
from facelab.errors import FacelabError
from facelab.tracking import provenance
from facelab.tracking.uris import CHAMPION

FINGERPRINT_CHARS = 16  # hex characters kept of a data set's hash (dataset digests, champions' fingerprints)
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
OPEN_RUNS_DIR = Path(".facelab") / "open-runs"  # notes of the runs open in this workspace (close_abandoned_runs)
SQLITE_BUSY_TIMEOUT_S = 60
# Back-off between tries: 0.25 s doubling up to 5 s, for at most RETRY_BUDGET_S of waiting in all
# (at most 16 tries): a tracking server that restarts in 10-30 s is waited out, one that stays down
# ends the stage in about a minute. FACELAB_RETRY_BUDGET_S overrides the budget (tests use a small one).
RETRY_FIRST_DELAY_S, RETRY_MAX_DELAY_S, RETRY_BUDGET_S = 0.25, 5.0, 60.0
# MLflow's own HTTP retries (7, ~4 min of back-off by default) would hide a server that is down
# behind minutes of silence; facelab keeps a short inner layer and does the long wait itself.
# Set these variables yourself to override.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
TRANSIENT_TEXT = ("database is locked", "database table is locked", "unique constraint")
TRANSIENT_ERROR_CODES = {"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR"}
TRANSIENT_HTTP_STATUS = re.compile(r"failed with error code (408|429|5\d\d)\b")
T = TypeVar("T")


def default_tracking_uri() -> str:
    return f"sqlite:///{workspace_root() / DB_FILE}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def tracking_uri() -> str:
    # Note: mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in this process.
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (MLflow wraps requests' errors in its own)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass by itself: a locked SQLite store, or a server that is (re)starting."""
    import requests

    network = (
        ConnectionError,
        TimeoutError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        requests.exceptions.RetryError,
        requests.exceptions.ChunkedEncodingError,
    )
    for cause in _causes(exc):
        text = str(cause).lower()
        if isinstance(cause, network) or any(t in text for t in TRANSIENT_TEXT):
            return True
        if isinstance(cause, RestException) and cause.error_code in TRANSIENT_ERROR_CODES:
            return True  # the server answered with a retryable error (e.g. its database restarting)
        if isinstance(cause, MlflowException) and TRANSIENT_HTTP_STATUS.search(text):
            return True  # a non-JSON 5xx from the server or a proxy in front of it
    return False


def _redacted(uri: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", uri)


def retry(fn: Callable[[], T], what: str = "MLflow call") -> T:
    """Run ``fn``, retrying with a bounded back-off while the store is locked or the server unreachable.

    Errors that will not pass by themselves are raised at once. When the budget is spent, raises one
    ``FacelabError`` line naming the store, the number of tries and the last error.
    """
    budget = float(os.environ.get("FACELAB_RETRY_BUDGET_S", RETRY_BUDGET_S))
    started, delay, tries = time.monotonic(), RETRY_FIRST_DELAY_S, 0
    while True:
        tries += 1
        try:
            with _signals_after_the_call():
                return fn()
        except Exception as exc:  # MLflow wraps SQLAlchemy's and requests' errors in its own types
            if not _is_transient(exc):
                raise
            uri = _redacted(tracking_uri())
            where = f"MLflow server {uri} unreachable" if uri.startswith("http") else f"MLflow store {uri} busy"
            root = list(_causes(exc))[-1]  # e.g. ConnectionRefusedError, not MLflow's wrapping of it
            last = _redacted(" ".join(f"{type(root).__name__}: {root}".split()))
            waited = time.monotonic() - started
            if waited + delay > budget:
                raise FacelabError(f"{where} after {tries} tries in {waited:.0f} s ({what}): {last[:200]}") from exc
            if tries == 1:  # one line when the wait starts: a long silence then has a reason
                print(f"facelab: {where} ({what}: {last[:120]}), retrying for up to {budget:.0f} s", file=sys.stderr)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_S)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, one process at a time: MLflow creates and migrates a new database on
    first use, and two processes doing so at once fail ("duplicate column name")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///") :].split("?")[0] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(experiment: str) -> str:
    """Point MLflow at the store and make sure ``experiment`` exists; returns its id."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        for name, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    # The whole set-up under the lock: MlflowClient() already creates and migrates a new store.
    with _store_lock(uri):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient()

        def ensure() -> str:
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                return found.experiment_id
            location = None
            if uri == default_tracking_uri():  # our own SQLite store: artifacts beside it, by absolute path
                location = (workspace_root() / ARTIFACTS_DIR).as_uri()
            try:
                return client.create_experiment(experiment, artifact_location=location)
            except MlflowException:
                found = client.get_experiment_by_name(experiment)  # created by a concurrent run
                if found is None:
                    raise
                return found.experiment_id

        experiment_id = retry(ensure, "create experiment")
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path.cwd())
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_tags(stage: str) -> dict[str, str]:
    """The stage, the commit, DVC's experiment and the machine (``provenance.machine_tags``)."""
    tags = {"facelab.stage": stage, **provenance.machine_tags()}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    for env, tag in (
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev"),
        ("DVC_STAGE", "dvc.stage"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that runs and files are closed as for Ctrl-C."""


# A signal that arrives while a store call is in flight waits for the call to end: raised in the middle of
# a SQLite write it would leave that connection's transaction open, and the write that ends the run KILLED
# would then find the store locked by its own process until the retry budget ran out.
_store_calls = 0
_pending_signal: int | None = None


def _interrupt(signum: int) -> KeyboardInterrupt:
    return _Terminated(f"signal {signum}") if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_terminated(signum, frame):
    global _pending_signal
    if _store_calls:
        _pending_signal = signum
        return
    raise _interrupt(signum)


@contextlib.contextmanager
def _signals_after_the_call() -> Iterator[None]:
    """Hold SIGTERM / Ctrl-C (under ``stage_run``'s handler) until the store call inside ends, then raise."""
    global _store_calls, _pending_signal
    _store_calls += 1
    try:
        yield
    finally:
        _store_calls -= 1
        if not _store_calls and _pending_signal is not None:
            signum, _pending_signal = _pending_signal, None
            raise _interrupt(signum)


@contextlib.contextmanager
def stage_run(
    stage: str, params: dict, experiment: str, phases: provenance.PhaseTimer | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage execution, with its parameters (dotted names) and tags, and (when it
    finishes) its wall and CPU minutes and its phases' minutes (``provenance``; connecting and starting the
    run are its "log" phase), counted from the start of ``phases`` (the stage's timer when it timed phases
    before the run; default: a timer started now).

    Ends FINISHED, FAILED on an error, or KILLED on Ctrl-C / SIGTERM (then re-raised). A run that
    does not finish leaves no model version behind: the versions it registered are deleted at its
    end or, when the store was unreachable then, by the next stage run in this workspace
    (``close_abandoned_runs``), so the rerun of the stage leaves nothing half-registered.
    """
    phases = phases or provenance.start_phases()
    with phases.phase("log"):
        connect(experiment)
        close_abandoned_runs()
        previous = {signum: signal.signal(signum, _raise_terminated) for signum in (signal.SIGTERM, signal.SIGINT)}
        run = retry(lambda: mlflow.start_run(run_name=stage, tags=run_tags(stage)), "start run")
        marker = _mark_open(run.info.run_id)
    status, store_down = "FAILED", False
    try:
        with phases.phase("log"):
            log_params(params)
        yield run
        log_metrics({**phases.stopwatch.minutes(), **phases.minutes()})
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        store_down = _is_transient(exc)  # the store stayed unreachable through a whole retry budget
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _end_run(run.info.run_id, status, marker, patient=not store_down)


def _end_run(run_id: str, status: str, marker: Path, patient: bool) -> None:
    """End the run (by id first: mlflow.end_run forgets the active run before it calls the server,
    so a retried end_run would end nothing). A failed run's versions are deleted. When
    the store was already found unreachable, one try only: the marker stays and the next stage
    run in this workspace ends the run (``close_abandoned_runs``)."""
    client = MlflowClient()
    try:
        if patient:
            retry(lambda: client.set_terminated(run_id, status), "end run")
        else:
            client.set_terminated(run_id, status)
    except Exception:
        if patient:
            raise
        return  # the error already in flight says the store is unreachable
    retry(lambda: mlflow.end_run(status), "end run")
    if status != "FINISHED":
        _discard_unfinished_versions(run_id)
    marker.unlink(missing_ok=True)


def _mark_open(run_id: str) -> Path:
    """A note in the workspace that this process has ``run_id`` open (removed when the run ends)."""
    marker = workspace_root() / OPEN_RUNS_DIR / f"{run_id}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pid": os.getpid(), "store": _redacted(tracking_uri())}))
    return marker


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _discard_unfinished_versions(run_id: str) -> None:
    """Delete the model versions registered by ``run_id``, a run that did not finish: its stage reruns
    and registers anew. A version that already holds ``champion`` is kept (never the case for a
    training run, whose versions are promoted by a later ``evaluate``)."""
    client = MlflowClient()
    for found in retry(lambda: client.search_model_versions(f"run_id='{run_id}'"), "find versions"):
        # search results carry no aliases: read each version itself
        version = retry(lambda: client.get_model_version(found.name, found.version), "get version")
        if CHAMPION not in version.aliases:
            retry(lambda: client.delete_model_version(version.name, version.version), "delete version")


def close_abandoned_runs() -> None:
    """End as FAILED the runs this workspace left open on this store (their process died while the
    store was unreachable), and delete the versions they registered."""
    folder = workspace_root() / OPEN_RUNS_DIR
    for marker in sorted(folder.glob("*.json")) if folder.exists() else []:
        try:
            note = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue  # being written by a stage starting now
        if note.get("store") != _redacted(tracking_uri()) or _process_alive(int(note.get("pid", 0))):
            continue
        run_id = marker.stem
        client = MlflowClient()
        try:
            status = retry(lambda: client.get_run(run_id), "get run").info.status
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            status = None  # deleted meanwhile by someone: nothing to close
        if status == "RUNNING":
            retry(lambda: client.set_terminated(run_id, "FAILED"), "end abandoned run")
        if status is not None:
            _discard_unfinished_versions(run_id)
        marker.unlink(missing_ok=True)


def log_params(params: dict) -> None:
    flat = {k: ("null" if v is None else v) for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 90):  # MLflow takes at most 100 params a batch
        chunk = dict(items[i : i + 90])
        retry(lambda: mlflow.log_params(chunk), "log params")


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    finite = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
    if finite:
        retry(lambda: mlflow.log_metrics(finite, step=step), "log metrics")


def set_tags(tags: dict[str, str]) -> None:
    retry(lambda: mlflow.set_tags(tags), "set tags")


def log_run_metrics(run_id: str, metrics: dict[str, float]) -> None:
    """Add ``metrics`` to another (usually finished) run, e.g. a model's test figures to its training run."""
    client = MlflowClient()
    stamp = int(time.time() * 1000)
    for key, value in flatten(metrics).items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            retry(lambda: client.log_metric(run_id, key, float(value), timestamp=stamp), "log metric")


def log_artifact_to_run(run_id: str, path: str | os.PathLike, folder: str | None = None) -> None:
    """Log the file ``path`` to the run ``run_id`` (not the active run), under ``folder``."""
    client = MlflowClient()
    retry(lambda: client.log_artifact(run_id, str(path), folder), "log artifact")


def download(artifact_uri: str, folder: str | os.PathLike, what: str = "download artifacts") -> str:
    """A local copy of ``artifact_uri`` (``runs:/...``, ``models:/...``) under ``folder``: its path."""
    return retry(lambda: mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(folder)), what)


def log_artifacts(*paths: str | os.PathLike, folder: str | None = None) -> None:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            retry(lambda: mlflow.log_artifacts(str(path), folder), "log artifacts")
        elif path.exists():
            retry(lambda: mlflow.log_artifact(str(path), folder), "log artifact")


def epoch_logger():
    """A Keras callback that logs every epoch's logs as MLflow metrics (step = epoch)."""
    import keras

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            log_metrics({k: v for k, v in (logs or {}).items()}, step=epoch + 1)

    return MlflowEpochLogger()


def log_dataset(name: str, images, targets, context: str, source: str, digest: str) -> None:
    """Log arrays as an MLflow dataset input of the active run (the run page's "Datasets")."""
    import mlflow.data

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(images, targets=targets, name=name, source=source, digest=digest)
    retry(lambda: mlflow.log_input(dataset, context=context), "log dataset")
