"""Make a throw-away copy of the repository (a git repo with DVC) to run the real pipeline in."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True, timeout: int = 1200):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def make_project_copy(dest: Path, profile: str | None = "profiles/tiny.yaml") -> tuple[Path, dict]:
    """A git+DVC copy of the repository at ``dest`` using its own src/ and its own MLflow store."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = REPO / name
        if not source.exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED)
        else:
            shutil.copy2(source, target)
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


def mlflow_client(project: Path):
    """A client on the copy's own store, for tracking and registry alike (not the process-wide URIs)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 now (for the workers of a local TF_CONFIG cluster)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def newest_stage_run(project: Path, stage: str, experiment: str = "facelab"):
    """The newest MLflow run named ``stage`` in the copy's own store (its final.* metrics: images/s, seconds)."""
    client = mlflow_client(project)
    found = client.get_experiment_by_name(experiment)
    newest_first = ["attributes.start_time DESC"]
    return client.search_runs([found.experiment_id], f"attributes.run_name = '{stage}'", order_by=newest_first)[0]
