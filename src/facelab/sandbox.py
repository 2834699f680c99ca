"""A throwaway copy of a facelab project and free local ports: for the tests and the benchmarks.

* ``make_project_copy``: a git + DVC copy of the checkout facelab runs from (its stage scripts, src/, params,
  profiles; no data, no dvc.lock: every stage runs there), with an environment that runs the copy's own
  src/ and its own MLflow store; ``run``: a command in it, its output in the error when it fails.
* ``project_store_uri``, ``mlflow_client``, ``newest_stage_run``: that copy's MLflow store (SQLite beside
  its dvc.yaml), read without touching the process-wide MLflow URIs.
* ``free_port``, ``free_ports``: TCP ports free on 127.0.0.1 now (a server, the workers of a local
  TF_CONFIG cluster, the team services of ``facelab.tracking.local_services``).

May import: the root modules (MLflow only inside the functions that read a store).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from facelab.errors import FacelabError

HOST = "127.0.0.1"
# The checkout facelab runs from: an editable install (pip install -e ., make install) imports src/facelab/.
SOURCE_CHECKOUT = Path(__file__).resolve().parents[2]
COPIED = [
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    "pyproject.toml",
    "stages",
    "src",
    "profiles",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "metrics",
    "plots",
    "models/.gitignore",
]
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info")
DEFAULT_PROFILE = "profiles/tiny.yaml"
COMMAND_TIMEOUT_S = 1200
STORE_FILE = "mlflow.db"


class CommandFailed(AssertionError):
    """A command run by ``run`` exited non-zero; the message holds the ends of its output.

    An AssertionError, so that a test whose command fails reads as a failed check."""


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` different TCP ports free on ``host`` now (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` now."""
    return free_ports(1, host)[0]


def run(
    cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True, timeout: int = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``, output captured as text; ``check``: CommandFailed unless it exits 0."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise CommandFailed(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def make_project_copy(
    dest: Path, profile: str | None = DEFAULT_PROFILE, source: Path = SOURCE_CHECKOUT
) -> tuple[Path, dict]:
    """A git+DVC copy of ``source`` at ``dest`` with ``profile`` applied; returns it and the environment that
    runs its own src/ and its own MLflow store (``mlflow.db`` in it: no MLFLOW_TRACKING_URI, no DVC_ROOT)."""
    if not (source / "dvc.yaml").exists():
        raise FacelabError(f"{source}: no dvc.yaml: a project copy needs facelab installed from its checkout (-e)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        origin = source / name
        if not origin.exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=IGNORED)
        else:
            shutil.copy2(origin, target)
    # A fresh pipeline: no lock from the original, so every stage runs here.
    (dest / "dvc.lock").unlink(missing_ok=True)
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    env["PYTHONPATH"] = str(dest / "src")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "facelab-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@facelab.invalid"
    if profile:
        run([sys.executable, "-m", "facelab.cli", "params", "apply", profile], dest, env)
    run(["git", "init", "-q", "-b", "main"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "-m", "copy"], dest, env)
    return dest, env


def project_store_uri(project: Path) -> str:
    """The copy's own MLflow store, as its stages find it (no MLFLOW_TRACKING_URI in its environment)."""
    return f"sqlite:///{project / STORE_FILE}"


def mlflow_client(project: Path):
    """A client on the copy's own store, for tracking and registry alike (not the process-wide URIs)."""
    from mlflow import MlflowClient

    uri = project_store_uri(project)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def newest_stage_run(project: Path, stage: str, experiment: str = "facelab"):
    """The newest MLflow run named ``stage`` in the copy's own store (its final.* metrics: images/s, seconds)."""
    client = mlflow_client(project)
    found = client.get_experiment_by_name(experiment)
    newest_first = ["attributes.start_time DESC"]
    return client.search_runs([found.experiment_id], f"attributes.run_name = '{stage}'", order_by=newest_first)[0]
