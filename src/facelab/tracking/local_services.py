"""The team deployment on one machine without Docker, for the tests and for trying it out.

Starts, on 127.0.0.1 only and on free ports:

* PostgreSQL: a throw-away cluster in a temporary folder (as the ``postgres`` user when run as
  root: ``initdb`` refuses root), password authentication, databases ``mlflow`` (runs and
  registry) and ``mlflow_auth`` (basic-auth's users and permissions);
* an S3-compatible server (moto's, in memory: ``serve_s3``) with one bucket; ``restart-s3`` keeps its
  objects in ``DIR/s3-objects`` while it is down, as a disk-backed S3 server would;
* ``mlflow server`` on PostgreSQL, artifacts in ``s3://BUCKET/mlflow`` served through the server
  (clients need no storage credentials), with ``--app-name basic-auth``.

    export FACELAB_TEAM_ADMIN_PASSWORD=...  AWS_ACCESS_KEY_ID=...  AWS_SECRET_ACCESS_KEY=...
    python -m facelab.tracking.local_services start DIR    # prints the addresses; state in DIR/state.json
    python -m facelab.tracking.local_services stop DIR     # stops all three, removes the database folder
    python -m facelab.tracking.local_services restart-mlflow DIR   # (or restart-s3: its objects are kept)

Secrets come from the environment and are never written into the repository: the admin password
goes to ``mlflow server`` through ``MLFLOW_AUTH_ADMIN_PASSWORD``, the database password (random
unless ``FACELAB_TEAM_PG_PASSWORD`` is set) only into ``DIR/pgpass`` (mode 600), read by libpq, and
basic-auth's CSRF key (random unless ``MLFLOW_FLASK_SERVER_SECRET_KEY`` is set) into
``DIR/flask-secret`` (mode 600); ``stop`` deletes both.
DIR holds state, configs and logs; keep it outside the repository. The compose file
``docs/team/docker-compose.yml`` describes the same deployment for people with Docker. Needs the
``team-test`` extra (psycopg2, boto3, moto) and PostgreSQL's server programs.

May import: the root modules (``facelab.sandbox`` for free ports).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from facelab.sandbox import HOST, free_port

BUCKET = "facelab-team"
S3_OBJECTS_DIR = "s3-objects"  # where restart-s3 keeps the objects while the (in-memory) S3 server is down
PG_USER = "facelab"
# SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the team extra installs psycopg2-binary.
DATABASES = ("mlflow", "mlflow_auth")
ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV = "FACELAB_TEAM_ADMIN_PASSWORD"
PG_PASSWORD_ENV = "FACELAB_TEAM_PG_PASSWORD"
FLASK_SECRET_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
MLFLOW_WORKERS = int(os.environ.get("FACELAB_TEAM_MLFLOW_WORKERS", "2"))
START_TIMEOUT_S = 600  # generous: on a busy 2-core machine mlflow server took up to 5 min to answer
STOP_TIMEOUT_S = 30
BIN = Path(sys.executable).parent
AUTH_INI = """[mlflow]
# Members may read and write every experiment and model (a team shares one registry);
# the admin can narrow this per user through the permissions API.
default_permission = EDIT
database_uri = postgresql+psycopg2://{user}@{host}:{port}/mlflow_auth
admin_username = {admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


class ServiceError(RuntimeError):
    """A service did not start or stop; the message names it and its log."""


def postgres_bin() -> Path:
    """The folder with initdb and pg_ctl: PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise ServiceError(
            "PostgreSQL not found (no pg_ctl on PATH or in /usr/lib/postgresql/*/bin): apt-get install postgresql"
        )
    return Path(candidates[-1]).parent


def _as_db_owner(cmd: list[str]) -> list[str]:
    """initdb and pg_ctl refuse root: run them as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # our own child: reap it if it exited
        return finished == 0
    except ChildProcessError:  # not our child (a later call of this script): ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _wait(check, what: str, log: Path, pid: int, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    why = f"not ready after {timeout:.0f} s" if _alive(pid) else "exited"
    raise ServiceError(f"{what} {why} (log {log}):\n{tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


# --- PostgreSQL ----------------------------------------------------------------------------------


def start_postgres(state: dict, password: str) -> None:
    pg = postgres_bin()
    base = Path(tempfile.mkdtemp(prefix="facelab-pg-"))  # outside DIR: the postgres user must reach it
    state["pg_base"], state["pg_port"] = str(base), free_port()
    pwfile = base / "pw"
    _write_private(pwfile, password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (base, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    log = base / "postgres.log"
    initdb = [str(pg / "initdb"), "-D", str(base / "data"), "-U", PG_USER, "-E", "UTF8", "--auth=scram-sha-256"]
    initdb += [f"--pwfile={pwfile}", "--no-instructions"]
    subprocess.run(_as_db_owner(initdb), check=True, capture_output=True, text=True)
    pwfile.unlink()
    options = f"-p {state['pg_port']} -c listen_addresses={HOST} -c unix_socket_directories={base}"
    subprocess.run(
        _as_db_owner(
            [str(pg / "pg_ctl"), "-D", str(base / "data"), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]
        ),
        check=True,
        capture_output=True,
        text=True,
    )
    import psycopg2

    connection = psycopg2.connect(host=HOST, port=state["pg_port"], user=PG_USER, password=password, dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for name in DATABASES:
            cursor.execute(f"CREATE DATABASE {name}")
    connection.close()


def stop_postgres(state: dict) -> None:
    base = state.get("pg_base")
    if not base or not Path(base).exists():
        return
    if (Path(base) / "data" / "postmaster.pid").exists():
        subprocess.run(
            _as_db_owner([str(postgres_bin() / "pg_ctl"), "-D", f"{base}/data", "-m", "fast", "-w", "stop"]),
            capture_output=True,
            text=True,
        )
    shutil.rmtree(base, ignore_errors=True)


# --- processes: S3 and MLflow ----------------------------------------------------------------------


def _spawn(cmd: list[str], log: Path, env: dict) -> int:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )  # its own group: stop() ends its workers too
    return process.pid


def _stop_group(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        _alive(pid)  # reaps the leader when it is our child
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def s3_client(state: dict):
    """A boto3 client of the state's S3 server (moto takes any key: AWS_* from the environment, if set)."""
    import boto3

    keys = {k.lower(): os.environ.get(k, "local") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return boto3.client("s3", endpoint_url=s3_endpoint(state), region_name="us-east-1", **keys)


def serve_s3(folder: Path) -> None:
    """moto's S3 server on the state's port, with the bucket and the objects ``stop_s3`` kept in
    ``DIR/s3-objects`` (moto holds them in memory only) back before it answers anyone: it listens at
    once, so a client's request waits (it is not refused) while they come back through a private port."""
    import threading

    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app, kept = DomainDispatcherApplication(create_backend_app), folder / S3_OBJECTS_DIR
    private, public = (
        make_server(HOST, port, app, threaded=True, request_handler=MotoRequestHandler)
        for port in (0, load_state(folder)["s3_port"])
    )  # both listen from here on
    threading.Thread(target=private.serve_forever, daemon=True).start()
    client = s3_client({"s3_port": private.server_port})
    for bucket in sorted({BUCKET, *(p.name for p in kept.iterdir())}) if kept.is_dir() else [BUCKET]:
        client.create_bucket(Bucket=bucket)
    for file in sorted(f for f in kept.rglob("*") if f.is_file()) if kept.is_dir() else []:
        bucket, *key = file.relative_to(kept).parts
        client.put_object(Bucket=bucket, Key="/".join(key), Body=file.read_bytes())  # one part, as DVC puts them
    private.shutdown()
    shutil.rmtree(kept, ignore_errors=True)
    public.serve_forever()


def _s3_ready(state: dict) -> bool:
    try:
        s3_client(state).head_bucket(Bucket=BUCKET)
        return True
    except Exception:  # not listening yet, or its objects still coming back
        return False


def start_s3(state: dict, folder: Path) -> None:
    """The S3 server (``serve_s3``) on the state's port (a new free one the first time)."""
    state.setdefault("s3_port", free_port())
    save_state(folder, state)  # serve_s3 reads the port there
    log, cmd = folder / "s3.log", [sys.executable, "-m", __spec__.name, "serve-s3", str(folder)]
    state["s3_pid"] = _spawn(cmd, log, dict(os.environ))
    save_state(folder, state)  # at once: a stop() during the wait below must find the process
    _wait(lambda: _s3_ready(state), "S3 server (moto)", log, state["s3_pid"])


def stop_s3(state: dict, folder: Path, keep_objects: bool = True) -> None:
    """Stop the S3 server; with ``keep_objects``, first copy every object to ``DIR/s3-objects`` for
    ``start_s3`` (a restart then loses nothing, as with a disk-backed S3 server)."""
    try:
        if keep_objects and state.get("s3_pid") and _port_open(state["s3_port"]):
            client, kept = s3_client(state), folder / S3_OBJECTS_DIR
            partial = kept.with_name(kept.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            for bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]:
                (partial / bucket).mkdir(parents=True)
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                    for key in [found["Key"] for found in page.get("Contents", []) if not found["Key"].endswith("/")]:
                        (partial / bucket / key).parent.mkdir(parents=True, exist_ok=True)  # (no folder markers)
                        client.download_file(bucket, key, str(partial / bucket / key))
            shutil.rmtree(kept, ignore_errors=True)
            partial.rename(kept)
    finally:
        _stop_group(state.pop("s3_pid", None))


def s3_endpoint(state: dict) -> str:
    return f"http://{HOST}:{state['s3_port']}"


def tracking_uri(state: dict) -> str:
    return f"http://{HOST}:{state['mlflow_port']}"


def _mlflow_env(state: dict, folder: Path) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "PGPASSFILE": str(folder / "pgpass"),
            "MLFLOW_AUTH_CONFIG_PATH": str(folder / "basic_auth.ini"),
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint(state),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": (folder / "flask-secret").read_text().strip(),
            # MLflow 3's job runner (six huey consumers, ~250 MB each) serves GenAI features facelab
            # does not use; without it the server starts and restarts faster on small machines.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
        }
    )
    if os.environ.get(ADMIN_PASSWORD_ENV):  # needed the first time only: the admin then exists in PostgreSQL
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = os.environ[ADMIN_PASSWORD_ENV]
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    return env


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_mlflow(state: dict, folder: Path) -> None:
    """``mlflow server`` on the state's port (a new free one the first time)."""
    state.setdefault("mlflow_port", free_port())
    log = folder / "mlflow.log"
    database = f"postgresql+psycopg2://{PG_USER}@{HOST}:{state['pg_port']}/mlflow"
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", database]
    cmd += ["--artifacts-destination", f"s3://{BUCKET}/mlflow", "--serve-artifacts", "--app-name", "basic-auth"]
    cmd += ["--host", HOST, "--port", str(state["mlflow_port"]), "--workers", str(MLFLOW_WORKERS)]
    cmd += ["--artifacts-destination", f"s3://{BUCKET}/mlflow", "--serve-artifacts", "--app-name", "basic-auth"]
    cmd += ["--host", HOST, "--port", str(state["mlflow_port"]), "--workers", str(MLFLOW_WORKERS)]
    state["mlflow_pid"] = _spawn(cmd, log, _mlflow_env(state, folder))
    save_state(folder, state)  # at once: a stop() during the wait below must find the process
    _wait(lambda: _healthy(state["mlflow_port"]), "mlflow server", log, state["mlflow_pid"])


def stop_mlflow(state: dict) -> None:
    _stop_group(state.pop("mlflow_pid", None))


def restart(folder: Path, service: str, down_s: float = 0.0, while_down: Callable[[], object] | None = None) -> float:
    """Stop ``service`` (``mlflow`` or ``s3``), wait ``down_s`` and then for ``while_down()`` to return (e.g.
    until a client says it is retrying), start it again on the same port; returns the seconds it was down."""
    state = load_state(folder)
    if f"{service}_pid" not in state:
        raise ServiceError(f"no {service} server runs from {folder} (start it first)")
    started = time.monotonic()
    try:
        stop_mlflow(state) if service == "mlflow" else stop_s3(state, folder)
        save_state(folder, state)
        time.sleep(down_s)
        if while_down is not None:
            while_down()
    finally:  # started again even when while_down fails
        start_mlflow(state, folder) if service == "mlflow" else start_s3(state, folder)
        save_state(folder, state)
    return time.monotonic() - started


# --- all of it ----------------------------------------------------------------------------------


def load_state(folder: Path) -> dict:
    if not folder.is_dir():
        raise ServiceError(f"{folder}: no such folder (nothing was started there)")
    path = folder / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(folder: Path, state: dict) -> None:
    (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n")


def start(folder: Path) -> dict:
    """Start PostgreSQL, S3 and MLflow; returns the state (ports, pids, addresses; no secrets)."""
    if not os.environ.get(ADMIN_PASSWORD_ENV):
        raise ServiceError(f"set {ADMIN_PASSWORD_ENV} (the MLflow admin password) first")
    if not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
        raise ServiceError("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the S3 credentials) first")
    folder.mkdir(parents=True, exist_ok=True)
    state: dict = {}
    try:
        password = os.environ.get(PG_PASSWORD_ENV) or secrets.token_urlsafe(24)
        start_postgres(state, password)
        save_state(folder, state)
        _write_private(folder / "pgpass", f"{HOST}:{state['pg_port']}:*:{PG_USER}:{password}\n")
        # The CSRF key of basic-auth's forms: the same across restarts, so a restart keeps sessions valid.
        _write_private(folder / "flask-secret", os.environ.get(FLASK_SECRET_ENV) or secrets.token_urlsafe(32))
        (folder / "basic_auth.ini").write_text(
            AUTH_INI.format(user=PG_USER, host=HOST, port=state["pg_port"], admin=ADMIN_USER)
        )
        start_s3(state, folder)
        save_state(folder, state)
        start_mlflow(state, folder)
    except BaseException:
        save_state(folder, state)
        stop(folder)
        raise
    state.update({"tracking_uri": tracking_uri(state), "s3_endpoint": s3_endpoint(state), "bucket": BUCKET})
    save_state(folder, state)
    return state


def stop(folder: Path) -> None:
    """Stop whatever ``start`` left running in ``folder`` (safe to call twice, or after a failed start)."""
    state = load_state(folder)
    stop_mlflow(state)
    stop_s3(state, folder, keep_objects=False)
    stop_postgres(state)
    state.pop("pg_base", None)
    save_state(folder, state)
    for secret in ("pgpass", "flask-secret"):
        (folder / secret).unlink(missing_ok=True)
    shutil.rmtree(folder / S3_OBJECTS_DIR, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facelab.tracking.local_services", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("action", choices=["start", "stop", "restart-mlflow", "restart-s3", "serve-s3"])
    parser.add_argument("dir", type=Path, help="folder for state, configs and logs (outside the repository)")
    args = parser.parse_args(argv)
    folder = args.dir.resolve()
    try:
        if args.action == "start":
            state = start(folder)
            print(f"MLflow server  {state['tracking_uri']}  (user {ADMIN_USER}; basic-auth)")
            print(f"S3 endpoint    {state['s3_endpoint']}  (bucket {BUCKET})")
            print(f"PostgreSQL     {HOST}:{state['pg_port']}  (databases {', '.join(DATABASES)})")
            print(f"stop with: python -m facelab.tracking.local_services stop {folder}")
        elif args.action == "stop":
            stop(folder)
        elif args.action == "serve-s3":  # the S3 server process start_s3 runs
            serve_s3(folder)
        else:
            service = args.action.removeprefix("restart-")
            print(f"{service} server down for {restart(folder, service):.1f} s")
    except (ServiceError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"team-services: error: {exc} {detail}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
