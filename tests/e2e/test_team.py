"""A team on one tracking server and one remote store, for real (docs/team.md).

PostgreSQL, an S3 server (moto) and ``mlflow server`` with basic-auth run on 127.0.0.1
(``facelab.tracking.local_services``, started and stopped by the fixture). Two members clone one Git
remote and run queued experiments at the same time, each with its own parameters, so two
different models race for ``champion``. Then: every run finished, every version tagged, champion the
best version; results pushed (``dvc push``, ``dvc exp push``); a third clone ``dvc pull``s, has nothing
to reproduce and predicts with the server's champions; a request without credentials gets 401; and
no password or key is in anything the run left behind.

Faults, each made to happen rather than hoped for (the server is stopped first, and started again
only once the client has shown it is waiting):

* the tracking server restarts while a training stage runs: the stage printed facelab's retry line
  (``store.retry``) while the server was down, and still ended with exit 0, its run FINISHED with
  every epoch's metrics and its artifacts;
* the S3 server restarts (its objects kept, as a disk-backed one keeps them) while a stage uploads
  its artifacts through the tracking server: the upload's 5xx answers went through facelab's retry
  (the line again) and every artifact arrived, byte for byte; and while ``dvc push`` runs: with
  DVC's default retries (botocore's 5 tries, about 15 s) the push fails, with the retries
  docs/team.md sets (``AWS_RETRY_MODE=standard``, ``AWS_MAX_ATTEMPTS=10``) it waits out the restart,
  and ``dvc status -c`` then finds every output in the remote; no object stored before the restart
  was lost.

The stages in a fault get a retry budget (``FACELAB_RETRY_BUDGET_S``) as long as a restart may take on
a loaded machine, so what is proven does not depend on how fast the server comes back; the default
budget's end (one error line) is tests/code/test_retry.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
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
from tests.support.logged_processes import finish, killed_on_failure, start, wait_for_line

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
RETRY_NOTICE = "retrying for up to"  # facelab's line when store.retry starts waiting out a failure
S3_RETRIES = {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "10"}  # docs/team.md: DVC waits out an S3 restart
S3_DOWN = "Could not connect to the endpoint URL"  # botocore, once its tries are spent
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


def _restart_during_a_stage(client, folder: Path, project: Path, env: dict) -> tuple[str, float, set[str]]:
    """Run a new emotion training in ``project``; stop the tracking server while its stage runs and
    start it again once the stage has said it is retrying. Returns that line, the seconds the server was
    down and the stages that ran: ``combine`` only when evaluate wrote other champions than the pulled
    ``champions.json`` (else DVC skips it, unchanged)."""
    log = project / "repro.log"
    env = dict(env, FACELAB_RETRY_BUDGET_S=str(RESTART_WAIT_S))
    seen = {"stage": start(["dvc", "exp", "run", "-S", "train_emotion.dropout=0.2"], project, env, log)}
    with killed_on_failure(seen):
        experiment = client.get_experiment_by_name("facelab").experiment_id
        deadline = time.monotonic() + RESTART_WAIT_S
        while seen["stage"].poll() is None and time.monotonic() < deadline:
            running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
            if any(r.info.run_name == "train_emotion" for r in running):
                break
            time.sleep(1)
        assert seen["stage"].poll() is None, f"the stage ended before the restart:\n{log.read_text()[-3000:]}"

        def while_down():
            seen["notice"] = wait_for_line(log, RETRY_NOTICE, seen["stage"])

        down_s = local_services.restart(folder, "mlflow", while_down=while_down)
        output = finish(seen["stage"], log)
    return seen["notice"], down_s, _stages_run(output)


def _latest_run(client, name: str):
    experiment = client.get_experiment_by_name("facelab").experiment_id
    [found] = client.search_runs(
        [experiment], f"attributes.run_name = '{name}'", order_by=["start_time DESC"], max_results=1
    )
    return found


def _objects(state: dict) -> dict[str, str]:
    """Every object in the team's bucket: key -> md5 of its bytes."""
    client = local_services.s3_client(state)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=local_services.BUCKET)
    keys = [found["Key"] for page in pages for found in page.get("Contents", [])]
    bucket = local_services.BUCKET
    return {key: hashlib.md5(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() for key in keys}


def _restart_s3_during_push_and_upload(client, folder: Path, pusher: tuple, uploader: tuple) -> dict[str, str]:
    """Stop S3 (its objects kept); while it is down, ``dvc push`` with DVC's default retries fails in
    ``pusher``'s clone, ``uploader``'s evaluate stage reaches its artifact upload and says it is retrying,
    and a ``dvc push`` with ``S3_RETRIES`` starts talking to the remote; then S3 starts again. The stage and
    that push must complete, every artifact arrived and every output is in the remote; no object stored
    before was lost or changed. Returns what happened."""
    (pusher, pusher_env), (uploader, uploader_env) = pusher, uploader
    started = time.monotonic()
    before = _objects(local_services.load_state(folder))
    reference = _latest_run(client, "evaluate")  # what a fault-free evaluate run logged
    expected = {Path(a.path).name for a in client.list_artifacts(reference.info.run_id, "evaluate")}
    logs = {
        "default push": pusher / "push-default.log",
        "stage": uploader / "evaluate.log",
        "push": pusher / "push.log",
    }
    uploader_env = dict(uploader_env, FACELAB_RETRY_BUDGET_S=str(RESTART_WAIT_S))
    seen: dict = {}

    def while_down():
        default_env = {k: v for k, v in pusher_env.items() if k not in S3_RETRIES}
        seen["default push"] = start(["dvc", "push"], pusher, default_env, logs["default push"])
        seen["stage"] = start(["dvc", "repro", "-f", "-s", "evaluate"], uploader, uploader_env, logs["stage"])
        seen["notice"] = wait_for_line(logs["stage"], RETRY_NOTICE, seen["stage"])
        assert seen["default push"].wait(timeout=RESTART_WAIT_S) != 0, logs["default push"].read_text()[-3000:]
        seen["push error"] = wait_for_line(logs["default push"], S3_DOWN, seen["default push"])
        seen["push"] = start(["dvc", "push", "-v"], pusher, dict(pusher_env, **S3_RETRIES), logs["push"])
        wait_for_line(logs["push"], "Collecting status from", seen["push"])  # its first requests: refused
        time.sleep(1)

    with killed_on_failure(seen):
        down_s = local_services.restart(folder, "s3", while_down=while_down)
        outputs = {name: finish(seen[name], logs[name]) for name in ("stage", "push")}
    after = _objects(local_services.load_state(folder))
    lost = sorted(key for key, digest in before.items() if after.get(key) != digest)
    assert not lost, f"{len(lost)} of {len(before)} objects lost or changed by the restart: {lost[:5]}"
    assert "(log artifact: " in seen["notice"] and "500" in seen["notice"], seen["notice"]  # S3 behind the server
    assert "pushed" in outputs["push"], outputs["push"][-3000:]
    assert "in sync" in run(["dvc", "status", "-c"], pusher, pusher_env).stdout
    evaluate = _latest_run(client, "evaluate")
    assert evaluate.info.run_id != reference.info.run_id and evaluate.info.status == "FINISHED", evaluate
    assert "keypoints.rmse_px" in evaluate.data.metrics, evaluate.data.metrics
    logged = {Path(a.path).name for a in client.list_artifacts(evaluate.info.run_id, "evaluate")}
    assert logged == expected, (logged, expected)
    copies = uploader.parent / "evaluate-artifacts"
    copies.mkdir()
    client.download_artifacts(evaluate.info.run_id, "evaluate", str(copies))
    local = {name: uploader / ("metrics" if name == "evaluate.json" else "reports/evaluate") / name for name in logged}
    different = [name for name, path in local.items() if (copies / "evaluate" / name).read_bytes() != path.read_bytes()]
    assert not different, different  # byte for byte as the stage wrote them
    return {
        "S3 down": f"{down_s:.1f} s, {len(before)} objects kept; all of it took {time.monotonic() - started:.0f} s",
        "stage": seen["notice"],
        "default push": seen["push error"].strip()[-160:],
    }


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

        # The server restarts while carol's training stage runs: the stage waits it out (facelab's retry
        # line while the server is down) and finishes with nothing lost; nothing is half-registered.
        champions_file = carol / "models" / "champions.json"
        champions_before = json.loads(champions_file.read_text())  # as alice's evaluate wrote it, pulled
        notice, down_s, carol_ran = _restart_during_a_stage(client, folder, carol, carol_env)
        print(f"restart: server down {down_s:.1f} s; the stage said {notice!r}; carol ran {sorted(carol_ran)}")
        assert notice.startswith(f"facelab: MLflow server {uri} unreachable ("), notice
        trained = _latest_run(client, "train_emotion")
        assert trained.info.status == "FINISHED", trained
        epochs = int(trained.data.metrics["final.epochs_run"])
        steps = sorted(m.step for m in client.get_metric_history(trained.info.run_id, "val_loss"))
        assert steps == list(range(1, epochs + 1)), steps  # every epoch's metrics
        history = client.list_artifacts(trained.info.run_id, "train_emotion")
        assert [Path(a.path).name for a in history] == ["train_emotion_history.csv"], history
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

        # S3 restarts while a stage uploads its artifacts (through the server) and while `dvc push` runs.
        s3_restart = _restart_s3_during_push_and_upload(client, folder, (carol, carol_env), (alice, alice_env))
        print(f"S3 restart: {s3_restart}")

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
