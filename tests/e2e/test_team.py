"""A team on one tracking server and one remote store, for real (docs/team.md).

PostgreSQL, an S3 server (moto) and ``mlflow server`` with basic-auth run on 127.0.0.1
(``facelab.tracking.local_services``, started and stopped by the fixture). Two members clone one Git
remote and run queued experiments at the same time, each with its own parameters, so two
different models race for ``champion``; the tracking server is restarted while one of their
stages runs. Then: every run finished, every version tagged, champion the best version; results
pushed (``dvc push``, ``dvc exp push``); a third clone ``dvc pull``s, has nothing to reproduce and
predicts with the server's champions; a request without credentials gets 401; and no password
or key is in anything the run left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import requests

from facelab.sandbox import make_project_copy, run
from facelab.tracking import local_services
from tests.support.dvc_queue import start_queue, stop_workers, wait_for_queue

pytestmark = [pytest.mark.e2e, pytest.mark.team]
REPO = Path(__file__).resolve().parents[2]

# Per session, so the scan below can look for them; never written into a tracked file.
ADMIN_PASSWORD = f"adm-{secrets.token_hex(8)}"
USERS = {name: f"{name}-{secrets.token_hex(8)}" for name in ("alice", "bob", "carol")}
AWS_KEY, AWS_SECRET = f"AKIA{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30)
SECRETS = [ADMIN_PASSWORD, AWS_SECRET, *USERS.values()]
EXPERIMENTS = {
    "alice": ("train_keypoints.lr=0.001", "train_emotion.dropout=0.1"),
    "bob": ("train_keypoints.lr=0.003", "train_emotion.dropout=0.3"),
}
SHARED_STAGES = {"prepare", "augment"}
EXP_STAGES = {"train_keypoints", "train_emotion", "evaluate", "combine"}
STAGES = SHARED_STAGES | EXP_STAGES
QUEUE_TIMEOUT_S = 2400  # on a 2-core machine busy with other trainings two tiny experiments took over 15 min
CHAMPION_METRICS = {"facelab-keypoints": ("keypoints.rmse_px", min), "facelab-emotion": ("emotion.f1_weighted", max)}
RESTART_WAIT_S = 600
YTF_VAL = REPO.parent / "shared" / "data" / "keypoints" / "ytf-keypoints-val.csv.gz"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """The team services on free 127.0.0.1 ports, stopped afterwards even when the test fails."""
    try:
        local_services.postgres_bin()
    except local_services.ServiceError as exc:
        if os.environ.get("FACELAB_REQUIRE_TEAM"):  # .ci/run: a missing PostgreSQL is a failure there
            raise
        pytest.skip(str(exc))
    folder = tmp_path_factory.mktemp("team-services")
    secrets_env = {
        local_services.ADMIN_PASSWORD_ENV: ADMIN_PASSWORD,
        "AWS_ACCESS_KEY_ID": AWS_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    local_services.MLFLOW_WORKERS = 1  # one uvicorn worker starts (and restarts) twice as fast on 2 cores
    with mock.patch.dict(os.environ, secrets_env):
        try:
            state = local_services.start(folder)
            yield folder, state
        finally:
            local_services.stop(folder)


def _admin_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _member(name: str, remote: Path, dest: Path, base_env: dict, uri: str, dvc_local: bool) -> tuple[Path, dict]:
    """A member's clone: MLflow credentials in the environment, the S3 key by `--local` or AWS_*."""
    run(["git", "clone", "-q", str(remote), str(dest)], dest.parent, base_env)
    env = dict(
        base_env,
        PYTHONPATH=str(dest / "src"),
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_TRACKING_USERNAME=name,
        MLFLOW_TRACKING_PASSWORD=USERS[name],
    )
    if dvc_local:
        run(["dvc", "remote", "modify", "--local", "team", "access_key_id", AWS_KEY], dest, env)
        run(["dvc", "remote", "modify", "--local", "team", "secret_access_key", AWS_SECRET], dest, env)
    else:
        env.update(AWS_ACCESS_KEY_ID=AWS_KEY, AWS_SECRET_ACCESS_KEY=AWS_SECRET)
    return dest, env


def _kill_left_over(folder: Path) -> None:
    """Kill what still runs in ``folder`` (an experiment whose worker was stopped when the test failed)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            inside = Path(os.readlink(proc / "cwd")).is_relative_to(folder)
        except OSError:
            continue
        if inside and int(proc.name) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _check_registry(client, model: str, expected_versions: int) -> dict[int, float]:
    """Every version tagged with its test metric and decision; champion the best of them. Returns the values."""
    metric, best = CHAMPION_METRICS[model]
    versions = client.search_model_versions(f"name='{model}'")
    assert len(versions) == expected_versions, f"{model}: {len(versions)} versions"
    for version in versions:
        assert f"test.{metric}" in version.tags and "champion_decision" in version.tags, (model, version.tags)
    values = {int(v.version): float(v.tags[f"test.{metric}"]) for v in versions}
    champion = int(client.get_model_version_by_alias(model, "champion").version)
    assert values[champion] == best(values.values()), f"{model}: champion v{champion} of {values}"
    return values


def _stages_run(dvc_output: str) -> set[str]:
    """The stages DVC ran (not skipped as unchanged) according to its output."""
    return set(re.findall(r"^Running stage '([^']+)'", dvc_output, re.MULTILINE))


def _restart_during_a_stage(client, folder: Path, project: Path, env: dict) -> tuple[str, set[str]]:
    """Run a new emotion training in ``project`` and restart the server while its stage runs.

    Either the stage survives through retries, or it ends with one ``facelab: error: MLflow server ...
    unreachable`` line and a second ``dvc repro`` completes it. Returns what happened and the stages
    that ran: ``combine`` only when evaluate wrote other champions than the pulled ``champions.json``
    (else DVC skips it, unchanged).
    """
    log = project / "repro.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["dvc", "exp", "run", "-S", "train_emotion.dropout=0.2"],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        experiment = client.get_experiment_by_name("facelab").experiment_id
        deadline = time.monotonic() + RESTART_WAIT_S
        while process.poll() is None and time.monotonic() < deadline:
            running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
            if any(r.info.run_name == "train_emotion" for r in running):
                break
            time.sleep(1)
        assert process.poll() is None, f"the stage ended before the restart:\n{log.read_text()[-3000:]}"
        down_s = local_services.restart_mlflow(folder)
        code = process.wait(timeout=RESTART_WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    if code == 0:
        return f"server down {down_s:.1f} s; the stage survived", _stages_run(output)
    errors = [line for line in output.splitlines() if line.startswith("facelab: error:")]
    assert len(errors) == 1 and "unreachable after" in errors[0], output[-4000:]
    rerun = run(["dvc", "repro"], project, env).stdout
    outcome = f"server down {down_s:.1f} s; the stage failed with {errors[0]!r}; dvc repro completed it"
    return outcome, _stages_run(output) | _stages_run(rerun)


def _photo(path: Path, project: Path) -> tuple[Path, bool]:
    """A JPEG with a face: a real YTF face where the data is here, else one of the prepared test faces."""
    if YTF_VAL.exists():
        import pandas as pd

        pixels = pd.read_csv(YTF_VAL, nrows=1)["Image"][0]
        face, real = np.array(pixels.split(), np.uint8).reshape(96, 96), True
    else:
        face, real = np.load(project / "data/prepared/keypoints_test.npz")["images"][0].squeeze(), False
        face = (face * 255).astype(np.uint8) if face.dtype != np.uint8 else face
    photo = np.full((360, 360), 128, np.uint8)
    photo[60:300, 60:300] = cv2.resize(face, (240, 240), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), photo)
    return path, real


def _scan_for_secrets(paths: list[Path], texts: dict[str, str]) -> list[str]:
    found = []
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            data = file.read_bytes()
            found += [f"{file}: {s[:6]}..." for s in SECRETS if s.encode() in data]
    for where, text in texts.items():
        found += [f"{where}: {s[:6]}..." for s in SECRETS if s in text]
    return found


def test_two_members_one_server_one_remote(services, tmp_path):
    folder, state = services
    uri, endpoint = state["tracking_uri"], state["s3_endpoint"]
    origin, env = make_project_copy(tmp_path / "origin")
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    # The committed part of the DVC remote: where it is, never the key.
    run(["dvc", "remote", "add", "-d", "team", f"s3://{local_services.BUCKET}/dvc"], origin, env)
    run(["dvc", "remote", "modify", "team", "endpointurl", endpoint], origin, env)
    run(["git", "commit", "-q", "-am", "team remote"], origin, env)
    # The shared data once, on main and in S3 (members' experiments then only train, evaluate, combine).
    lead = dict(
        env,
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_TRACKING_USERNAME=local_services.ADMIN_USER,
        MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD,
        AWS_ACCESS_KEY_ID=AWS_KEY,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
    )
    run(["dvc", "repro", "augment"], origin, lead)
    run(["dvc", "push"], origin, lead)
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-q", "-m", "prepared data"], origin, env)
    remote = tmp_path / "remote.git"
    run(["git", "clone", "-q", "--bare", str(origin), str(remote)], tmp_path, env)

    admin = requests.auth.HTTPBasicAuth(local_services.ADMIN_USER, ADMIN_PASSWORD)
    for name, password in USERS.items():
        answer = requests.post(
            f"{uri}/api/2.0/mlflow/users/create", json={"username": name, "password": password}, auth=admin, timeout=30
        )
        assert answer.status_code == 200, answer.text
    assert requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30).status_code == 401
    assert (
        requests.get(
            f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30, auth=("alice", "wrong")
        ).status_code
        == 401
    )

    members = {
        "alice": _member("alice", remote, tmp_path / "alice", env, uri, dvc_local=True),
        "bob": _member("bob", remote, tmp_path / "bob", env, uri, dvc_local=False),
    }
    for name, (path, member_env) in members.items():
        run(["dvc", "pull", "prepare", "augment"], path, member_env)  # (the later stages have not run on main)
        sets = [arg for s in EXPERIMENTS[name] for arg in ("-S", s)]
        run(["dvc", "exp", "run", "--queue", "-n", f"{name}-exp", *sets], path, member_env)

    with mock.patch.dict(
        os.environ, {"MLFLOW_TRACKING_USERNAME": local_services.ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    ):
        client = _admin_client(uri)
        started = time.monotonic()
        try:
            for path, member_env in members.values():  # both at once: the two members' queues overlap
                start_queue(path, member_env, jobs=1)
            statuses = {
                name: wait_for_queue(path, member_env, QUEUE_TIMEOUT_S) for name, (path, member_env) in members.items()
            }
        finally:
            for path, member_env in members.values():
                stop_workers(path, member_env)
            _kill_left_over(tmp_path)
        print(f"\nmembers' experiments took {time.monotonic() - started:.0f} s")
        for name, (path, member_env) in members.items():
            logs = run(["dvc", "queue", "logs", f"{name}-exp"], path, member_env, check=False).stdout[-4000:]
            assert "Success" in statuses[name] and "Failed" not in statuses[name], statuses[name] + logs

        # Every run finished; no version lost or untagged; champion is the better model (no lost update).
        experiment = client.get_experiment_by_name("facelab")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        assert {(r.info.run_name, r.info.status) for r in runs} == {(s, "FINISHED") for s in STAGES}
        by_exp: dict[str | None, list[str]] = {}
        for r in runs:
            by_exp.setdefault(r.data.tags.get("dvc.exp_name"), []).append(r.info.run_name)
        assert {k: sorted(v) for k, v in by_exp.items()} == {
            None: sorted(SHARED_STAGES),
            **{f"{n}-exp": sorted(EXP_STAGES) for n in members},
        }
        for model in CHAMPION_METRICS:
            values = _check_registry(client, model, expected_versions=2)
            assert len(set(values.values())) == 2, f"{model}: both members trained the same model {values}"
        analyzers = client.search_model_versions("name='facelab-face-analyzer'")
        assert len(analyzers) == 2 and all("keypoints_version" in v.tags for v in analyzers)

        # Results to the team: experiments (and their cached outputs) to Git and S3; alice's result on main.
        for path, member_env in members.values():
            run(["dvc", "exp", "push", "origin", "-A"], path, member_env)
        alice, alice_env = members["alice"]
        run(["dvc", "exp", "apply", "alice-exp"], alice, alice_env)
        run(["git", "add", "-A"], alice, alice_env)
        run(["git", "commit", "-q", "-m", "alice-exp: the tiny pipeline's results"], alice, alice_env)
        run(["git", "push", "-q", "origin", "main"], alice, alice_env)
        run(["dvc", "push"], alice, alice_env)

        # A third member: pull, nothing to reproduce, predict with the server's champions.
        carol, carol_env = _member("carol", remote, tmp_path / "carol", env, uri, dvc_local=True)
        run(["dvc", "pull"], carol, carol_env)
        assert "up to date" in run(["dvc", "status"], carol, carol_env).stdout
        repro = run(["dvc", "repro"], carol, carol_env)
        assert "Running stage" not in repro.stdout, repro.stdout
        run(["dvc", "exp", "pull", "origin", "bob-exp"], carol, carol_env)
        assert "bob-exp" in run(["dvc", "exp", "list", "--all-commits", "--name-only"], carol, carol_env).stdout
        photo, real_face = _photo(tmp_path / "photo.jpg", carol)
        predicted = run(["facelab", "predict", str(photo), "--json"], carol, carol_env)
        [record] = json.loads(predicted.stdout[predicted.stdout.index("[") :])
        assert record["photo"].endswith("photo.jpg")
        if real_face:
            assert len(record["faces"]) == 1 and len(record["faces"][0]["keypoints"]) == 15, record

        # The server restarts while carol's training stage runs: it survives, or fails with one line and
        # `dvc repro` completes it; either way nothing is half-registered and every run is ended.
        champions_file = carol / "models" / "champions.json"
        champions_before = json.loads(champions_file.read_text())  # as alice's evaluate wrote it, pulled
        outcome, carol_ran = _restart_during_a_stage(client, folder, carol, carol_env)
        print(f"restart: {outcome}; carol's experiment ran {sorted(carol_ran)}")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        assert not [r.info.run_name for r in runs if r.info.status not in ("FINISHED", "FAILED")]
        assert {"train_emotion", "evaluate"} <= carol_ran <= {"train_emotion", "evaluate", "combine"}, carol_ran
        # combine reruns only when champions.json changed: carol's evaluate writes the server's champions
        # now, which differ from the pulled file when carol's model took over, or when bob's model took
        # over after alice's evaluate wrote the file she committed
        champions_after = json.loads(champions_file.read_text())
        assert ("combine" in carol_ran) == (champions_after != champions_before), (
            carol_ran,
            champions_before,
            champions_after,
        )
        finished = len(SHARED_STAGES) + 2 * len(EXP_STAGES) + len(carol_ran)  # one FINISHED run per stage run
        assert len([r for r in runs if r.info.status == "FINISHED"]) == finished, sorted(
            (r.info.run_name, r.info.status) for r in runs
        )
        _check_registry(client, "facelab-keypoints", expected_versions=2)
        _check_registry(client, "facelab-emotion", expected_versions=3)

        # No password or key in what was logged, committed or cached (the S3 key id is not a secret).
        params_and_tags = {f"run {r.info.run_id}": json.dumps([r.data.params, r.data.tags]) for r in runs}
        git_history = run(["git", "log", "-p", "--all"], remote, env).stdout
        leaks = _scan_for_secrets(
            [
                p / name
                for p in (origin, alice, members["bob"][0], carol)
                for name in (".dvc/config", "dvc.lock", "params.yaml", "queue-start.log", ".dvc/tmp/exps")
                if (p / name).exists()
            ]
            + [folder / "mlflow.log", folder / "s3.log", folder / "state.json", folder / "basic_auth.ini"],
            {**params_and_tags, "git history": git_history, "dvc pull": repro.stdout + predicted.stderr},
        )
        assert not leaks, leaks
        # ... while the --local credential is where a member expects it, outside git.
        assert AWS_SECRET in (carol / ".dvc/config.local").read_text()
        assert shutil.which("git") and "config.local" not in run(["git", "ls-files", ".dvc"], carol, carol_env).stdout
