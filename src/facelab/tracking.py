"""Tracking and registry: the only module that talks to MLflow.

* The store: ``MLFLOW_TRACKING_URI`` when set, else SQLite at ``<workspace>/mlflow.db`` by
  absolute path (with a busy timeout), with artifacts in ``<workspace>/mlartifacts``: runs
  from a queued ``dvc exp run`` (in a temporary copy) land in the user's own store.
* Runs: one per stage execution, named after the stage, with the stage's parameters under
  the same dotted names as ``params.yaml``, tagged with the git commit and DVC's experiment
  name, and ended as KILLED when interrupted (Ctrl-C / SIGTERM).
* Registry: models are registered under aliases (``candidate`` on every new version,
  ``champion`` moved only to a version whose test metric is no worse than the champion's,
  with the reason written on the version).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from facelab.config import flatten, workspace_root

CANDIDATE, CHAMPION = "candidate", "champion"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
SQLITE_BUSY_TIMEOUT_S = 60
RETRIES = 8
T = TypeVar("T")


def default_tracking_uri() -> str:
    return f"sqlite:///{workspace_root() / DB_FILE}?timeout={SQLITE_BUSY_TIMEOUT_S}"


def tracking_uri() -> str:
    # Note: mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in this process.
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text or "unique constraint" in text


def retry(fn: Callable[[], T], what: str = "MLflow call") -> T:
    """Run ``fn``, retrying with back-off when SQLite reports a lock held by another process."""
    for attempt in range(RETRIES):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps SQLAlchemy errors in its own types
            if attempt == RETRIES - 1 or not _is_transient(exc):
                raise
            time.sleep(0.2 * 2 ** attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, one process at a time: MLflow creates and migrates a new database on
    first use, and two processes doing so at once fail ("duplicate column name")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):].split("?")[0] + ".lock")
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
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path.cwd())
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_tags(stage: str) -> dict[str, str]:
    tags = {"facelab.stage": stage}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev"),
                     ("DVC_STAGE", "dvc.stage")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that runs and files are closed as for Ctrl-C."""


def _raise_terminated(signum, frame):
    raise _Terminated(f"signal {signum}")


@contextlib.contextmanager
def stage_run(stage: str, params: dict, experiment: str) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one stage execution, with its parameters (dotted names) and tags.

    Ends FINISHED, FAILED on an error, or KILLED on Ctrl-C / SIGTERM (then re-raised).
    """
    connect(experiment)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    run = retry(lambda: mlflow.start_run(run_name=stage, tags=run_tags(stage)), "start run")
    status = "FAILED"
    try:
        log_params(params)
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        retry(lambda: mlflow.end_run(status), "end run")
        signal.signal(signal.SIGTERM, previous)


def log_params(params: dict) -> None:
    flat = {k: ("null" if v is None else v) for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 90):  # MLflow takes at most 100 params a batch
        chunk = dict(items[i:i + 90])
        retry(lambda: mlflow.log_params(chunk), "log params")


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    finite = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float))}
    if finite:
        retry(lambda: mlflow.log_metrics(finite, step=step), "log metrics")


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


# --- registry --------------------------------------------------------------------------------

def log_and_register_keras(model, name: str, input_example, description: str = "",
                           tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log ``model`` to the active run with a signature, register it, alias it ``candidate``.

    Returns the registry reference that later stages use: name, version, run_id, model_uri.
    """
    import mlflow.keras
    from mlflow.models import infer_signature

    prediction = model(input_example, training=False)
    signature = infer_signature(input_example, prediction.numpy())
    # No input_example: MLflow 3.17's Keras flavour fails to write it (its folder does not exist yet).
    info = mlflow.keras.log_model(model, name="model", signature=signature, pip_requirements=pinned_requirements(KERAS_REQUIREMENTS) or ["keras", "tensorflow"])
    version = retry(lambda: mlflow.register_model(info.model_uri, name), "register model")
    client = MlflowClient()
    if description:
        retry(lambda: client.update_model_version(name, version.version, description=description), "describe")
    if tags:
        tag_version(name, int(version.version), tags)
    retry(lambda: client.set_registered_model_alias(name, CANDIDATE, version.version), "alias candidate")
    return {"name": name, "version": int(version.version), "run_id": mlflow.active_run().info.run_id,
            "model_uri": info.model_uri}


KERAS_REQUIREMENTS = ("keras", "tensorflow", "numpy")
TENSORFLOW_MODULE = "tensorflow"


def _distributions(package: str) -> list[str]:
    """The installed distributions to pin for ``package``. ``tensorflow`` is the module: it is pinned as the
    build installed here, ``tensorflow-cpu`` (``.[cpu]``) or ``tensorflow`` (``.[gpu]``, pinned without its
    CUDA extra: that wheel serves on a CPU as well), so a model is served with the TensorFlow it was trained with."""
    if package != TENSORFLOW_MODULE:
        return [package]
    from importlib.metadata import packages_distributions

    return sorted({name.replace("_", "-").lower() for name in packages_distributions().get(TENSORFLOW_MODULE, [])})


def pinned_requirements(packages: tuple[str, ...]) -> list[str]:
    """``package==version`` for each of ``packages`` installed here (a logged model's pip requirements)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in packages:
        for name in _distributions(package):
            try:
                pins.append(f"{name}=={version(name)}")
            except PackageNotFoundError:
                continue
    return pins


def tag_version(name: str, version: int, tags: dict[str, Any]) -> None:
    client = MlflowClient()
    for key, value in flatten(tags).items():
        retry(lambda: client.set_model_version_tag(name, str(version), key, str(value)), "tag version")


def champion_version(name: str):
    """The model version holding ``champion``, or None."""
    client = MlflowClient()
    try:
        return retry(lambda: client.get_model_version_by_alias(name, CHAMPION), "get champion")
    except (MlflowException, RestException) as exc:
        if "not found" in str(exc).lower() or "RESOURCE_DOES_NOT_EXIST" in str(exc):
            return None
        raise


def promote_if_no_worse(name: str, version: int, metric: str, value: float, higher_is_better: bool) -> dict:
    """Move ``champion`` to ``version`` when its ``metric`` is no worse than the champion's.

    The version is tagged with its metric either way; the decision and the figures behind it
    are written in the tag ``champion_decision``. Returns that decision as a dict.
    """
    client = MlflowClient()
    tag_version(name, version, {f"test.{metric}": value})
    current = champion_version(name)
    current_value = None
    if current is not None and f"test.{metric}" in current.tags:
        current_value = float(current.tags[f"test.{metric}"])
    if current is None or int(current.version) == int(version):
        promote, reason = True, "no champion yet" if current is None else "already champion"
    elif current_value is None:
        promote, reason = True, f"champion v{current.version} has no recorded {metric}"
    else:
        better_or_equal = value >= current_value if higher_is_better else value <= current_value
        promote = better_or_equal
        relation = "no worse than" if promote else "worse than"
        reason = f"{metric} {value:.6g} is {relation} champion v{current.version}'s {current_value:.6g}"
    if promote:
        retry(lambda: client.set_registered_model_alias(name, CHAMPION, str(version)), "alias champion")
    decision = {"model": name, "version": int(version), "promoted": promote, "reason": reason,
                "metric": metric, "value": value,
                "previous_champion": None if current is None else int(current.version)}
    tag_version(name, version, {"champion_decision": ("promoted: " if promote else "kept out: ") + reason})
    return decision


def load_keras(model_uri: str):
    """A Keras model from a ``models:/name@alias`` (or any MLflow) URI, in Keras safe mode."""
    import mlflow.keras

    return mlflow.keras.load_model(model_uri, load_model_kwargs={"safe_mode": True, "compile": False})


def version_tags(name: str, alias: str = CHAMPION) -> dict[str, str]:
    """The tags of the version that holds ``alias`` (e.g. the emotion model's class list)."""
    client = MlflowClient()
    return dict(retry(lambda: client.get_model_version_by_alias(name, alias), "get alias").tags)


def alias_uri(name: str, alias: str = CHAMPION) -> str:
    return f"models:/{name}@{alias}"
