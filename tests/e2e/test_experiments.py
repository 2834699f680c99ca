"""Queued DVC experiments: two run at once in temporary copies, and both land in the one MLflow store."""

from __future__ import annotations

import json

import pytest

from facelab.sandbox import mlflow_client, run
from tests.support.dvc_queue import start_queue, stop_workers, wait_for_queue

pytestmark = pytest.mark.e2e


def test_two_queued_experiments_run_concurrently_into_one_store(project_copy):
    path, env = project_copy
    run(
        ["dvc", "exp", "run", "--queue", "-S", "train_keypoints.lr=0.001,0.003", "-S", "train_emotion.dropout=0.1"],
        path,
        env,
    )
    start_queue(path, env, jobs=2)
    try:
        status = wait_for_queue(path, env)
    finally:
        stop_workers(path, env)
    failed = [line.split()[1] for line in status.splitlines() if line.endswith("Failed")]
    logs = "".join(run(["dvc", "queue", "logs", name], path, env, check=False).stdout[-3000:] for name in failed)
    assert not failed, status + logs

    shown = json.loads(run(["dvc", "exp", "show", "--json"], path, env).stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    names, rmses = set(), set()
    for exp in experiments:
        for revision in exp["revs"]:
            data = revision["data"]
            lr = data["params"]["params.yaml"]["data"]["train_keypoints"]["lr"]
            rmse = data["metrics"]["metrics/evaluate.json"]["data"]["keypoints"]["rmse_px"]
            names.add(exp["name"])
            rmses.add((lr, rmse))
    assert len(names) == 2, shown
    assert {lr for lr, _ in rmses} == {0.001, 0.003}
    assert len({rmse for _, rmse in rmses}) == 2, "different learning rates gave identical metrics"

    # The runs executed in .dvc/tmp/exps copies, yet landed in the workspace's own store.
    client = mlflow_client(path)
    experiment = client.get_experiment_by_name("facelab")
    runs = client.search_runs([experiment.experiment_id])
    by_exp: dict[str, set[str]] = {}
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
        if "dvc.exp_name" in r.data.tags:
            by_exp.setdefault(r.data.tags["dvc.exp_name"], set()).add(r.info.run_name)
    assert set(by_exp) == names
    for stages in by_exp.values():
        assert {"prepare", "train_keypoints", "train_emotion", "evaluate", "combine"} <= stages
    for model in ("facelab-keypoints", "facelab-emotion"):
        versions = client.search_model_versions(f"name='{model}'")
        assert len(versions) == 2, f"{model}: registry lost a version ({len(versions)})"
        client.get_model_version_by_alias(model, "champion")
