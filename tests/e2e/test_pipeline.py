"""End to end: `dvc repro` on the tiny synthetic profile, then MLflow and the registry checked through MLflow's API."""

from __future__ import annotations

import json
import math

import pytest

from facelab.sandbox import make_project_copy, mlflow_client, project_store_uri, run

pytestmark = pytest.mark.e2e
STAGES = ("prepare", "augment", "train_keypoints", "train_emotion", "evaluate", "combine")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path, env = make_project_copy(tmp_path_factory.mktemp("e2e") / "repo")
    result = run(["dvc", "repro"], path, env)
    return path, env, result


def test_every_stage_ran_and_wrote_its_outputs(project):
    path, _, result = project
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    for output in (
        "data/prepared/keypoints_test.npz",
        "data/augmented/keypoints_train.npz",
        "models/keypoints.keras",
        "models/emotion.keras",
        "reports/evaluate/confusion.png",
        "reports/combine/faces.png",
        "reports/combine/predictions.json",
        "plots/train_keypoints_history.csv",
    ):
        assert (path / output).exists(), output


def test_metrics_are_finite_and_named_as_documented(project):
    path, _, _ = project
    metrics = json.loads((path / "metrics/evaluate.json").read_text())
    for value in (metrics["keypoints"]["rmse_px"], metrics["emotion"]["f1_weighted"], metrics["emotion"]["accuracy"]):
        assert math.isfinite(value)
    assert 0 <= metrics["emotion"]["f1_weighted"] <= 1
    predictions = json.loads((path / "reports/combine/predictions.json").read_text())
    assert len(predictions["faces"]) == 4
    assert len(predictions["faces"][0]["keypoints"]) == 15


def test_mlflow_has_every_stage_run_and_both_champions(project):
    path, _, _ = project
    client = mlflow_client(path)
    experiment = client.get_experiment_by_name("facelab")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.info.run_name: r for r in runs}
    assert set(STAGES) <= set(by_stage)
    assert all(r.info.status == "FINISHED" for r in runs)
    train = by_stage["train_keypoints"]
    assert train.data.params["train_keypoints.lr"] == "0.001"
    assert "git_commit" in train.data.tags
    assert len(client.get_metric_history(train.info.run_id, "loss")) == 2  # one per epoch
    assert "keypoints.rmse_px" in by_stage["evaluate"].data.metrics
    for name in ("facelab-keypoints", "facelab-emotion"):
        champion = client.get_model_version_by_alias(name, "champion")
        candidate = client.get_model_version_by_alias(name, "candidate")
        assert str(champion.version) == str(candidate.version) == "1"
        assert champion.tags["champion_decision"].startswith("promoted")
    assert path.joinpath("mlartifacts").is_dir()  # artifacts beside the store, by absolute path


def test_training_runs_hold_what_the_results_table_needs(project):
    """Each training run records the profile, commit, machine, minutes, images/s, its validation figures as
    served and (added by evaluate) its test figures; `facelab results` draws the tables and the picture."""
    path, env, _ = project
    client = mlflow_client(path)
    runs = client.search_runs([client.get_experiment_by_name("facelab").experiment_id])
    by_stage = {r.info.run_name: r for r in runs}
    emotion = by_stage["train_emotion"]
    assert emotion.data.params["profile"] == "tiny"
    assert emotion.data.tags["facelab.data"] == "synthetic"
    assert int(emotion.data.tags["facelab.cores"]) >= 1 and emotion.data.tags["facelab.cpu_model"]
    assert emotion.data.metrics["run.wall_minutes"] > 0 and emotion.data.metrics["run.cpu_minutes"] > 0
    evaluate = json.loads((path / "metrics/evaluate.json").read_text())
    assert emotion.data.metrics["test.accuracy"] == pytest.approx(evaluate["emotion"]["accuracy"])
    assert by_stage["train_keypoints"].data.metrics["test.rmse_px"] == pytest.approx(evaluate["keypoints"]["rmse_px"])
    assert "test.accuracy" not in by_stage["evaluate"].data.metrics  # on the training run, not a copy elsewhere

    out = run(["facelab", "results", "--all", "--out", "results"], path, env).stdout
    assert "### keypoints" in out and "### emotion-5" in out
    row = next(line for line in out.splitlines() if line.startswith("| 20") and "tiny" in line)
    assert f"{evaluate['emotion']['accuracy']:.3f}" in out and "synthetic" in row
    assert (path / "results/results.md").read_text() in out
    assert (path / "results/accuracy-vs-minutes.png").stat().st_size > 0
    real_only = run(["facelab", "results"], path, env, check=False)  # synthetic runs are left out by default
    assert real_only.returncode == 1 and "no finished training run on real data" in real_only.stderr


# the phases each stage times (facelab.tracking.provenance.phase), besides "other" (the run's time in none)
STAGE_PHASES = {
    "prepare": {"load", "save", "pictures", "log"},
    "augment": {"load", "augment", "save", "pictures", "log"},
    "train_keypoints": {"load", "build", "train", "validate", "checkpoints", "score", "save", "register", "log"},
    "evaluate": {"load", "score", "save", "pictures", "register", "log"},
    "combine": {"load", "predict", "pictures", "save", "register", "log"},
}
STAGE_PHASES["train_emotion"] = STAGE_PHASES["train_keypoints"] | {"recompute_batchnorm"}  # the tiny profile's


def test_every_stage_run_records_where_its_minutes_went(project):
    """Each stage run has minutes.<phase> for the phases it ran (adding up to its wall minutes), a training run
    its epochs' training and validation minutes; `facelab results --phases` prints them and writes them with --out.
    """
    path, env, _ = project
    client = mlflow_client(path)
    runs = client.search_runs([client.get_experiment_by_name("facelab").experiment_id])
    by_stage = {r.info.run_name: r for r in runs}
    for stage, phases in STAGE_PHASES.items():
        metrics = by_stage[stage].data.metrics
        recorded = {name.removeprefix("minutes.") for name in metrics if name.startswith("minutes.")}
        assert recorded == phases | {"other"}, stage
        total = sum(metrics[f"minutes.{name}"] for name in recorded)
        assert total == pytest.approx(metrics["run.wall_minutes"], abs=0.01), stage  # each rounded to 0.001
    for stage in ("train_keypoints", "train_emotion"):
        run_id = by_stage[stage].info.run_id
        assert by_stage[stage].data.metrics["minutes.train"] > 0
        for name in ("epoch.train_minutes", "epoch.val_minutes"):
            assert [m.step for m in client.get_metric_history(run_id, name)] == [1, 2], name  # one per epoch
    for name in ("minutes.train", "epoch.train_minutes"):  # MLflow only: no timing in the DVC-tracked outputs
        for tracked in (*path.glob("metrics/*.json"), *path.glob("plots/*.csv")):
            assert name not in tracked.read_text(), tracked

    out = run(["facelab", "results", "--all", "--phases", "--out", "results-phases"], path, env).stdout
    assert "### minutes per phase" in out
    header = next(line for line in out.splitlines() if line.startswith("| date | stage | run |"))
    assert "| load |" in header and "| validate |" in header and "| recompute_batchnorm |" in header
    for stage in STAGE_PHASES:
        assert f"| {stage} | {by_stage[stage].info.run_id[:8]} |" in out, stage
    assert (path / "results-phases/results.md").read_text() in out
    assert "minutes per phase" not in run(["facelab", "results", "--all"], path, env).stdout  # only when asked


def test_the_served_analyser_reproduces_evaluate_s_figures(project, monkeypatch):
    """What is served is what was scored: the registered pyfunc's FaceAnalyzer, loaded through MLflow,
    gives on the test faces exactly the figures evaluate wrote (the TTA is inside the models)."""
    import mlflow.pyfunc

    from facelab.data.artifacts import load_split
    from facelab.reports.scoring import emotion_scores, keypoint_rmse

    path, _, _ = project
    uri = project_store_uri(path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # Earlier tests in this process may have set MLflow's URIs, which win over the variable: set them too.
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        served = mlflow.pyfunc.load_model("models:/facelab-face-analyzer@champion")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    analyzer = served.unwrap_python_model().analyzer
    champions = json.loads((path / "models/champions.json").read_text())
    assert served.metadata.metadata == {
        f"{task}_model": f"{entry['name']}/{entry['version']}" for task, entry in champions.items()
    }
    scored = json.loads((path / "metrics/evaluate.json").read_text())
    keypoints = load_split(path / "data/prepared/keypoints_test.npz")
    emotion = load_split(path / "data/prepared/emotion_test.npz")
    rmse = keypoint_rmse(keypoints["keypoints"], analyzer.keypoints(keypoints["images"]))
    assert rmse == pytest.approx(scored["keypoints"]["rmse_px"], rel=1e-6)
    predicted = analyzer.probabilities(emotion["images"]).argmax(axis=1)
    scores = emotion_scores(emotion["labels"], predicted, [str(c) for c in emotion["classes"]])
    for metric in ("f1_weighted", "accuracy", "f1_macro"):
        assert scores[metric] == pytest.approx(scored["emotion"][metric], rel=1e-9)
    assert scored["precision"] == {"keypoints": "float32", "emotion": "float32"}  # the tiny profile's


def test_the_validation_figures_that_rank_ideas_score_the_saved_models(project):
    """metrics/train_*.json's served_val_* figures are the saved models (test-time averaging inside) on the
    validation split, scored as evaluate scores the test split: ideas are ranked on what is served."""
    from facelab.data.artifacts import load_split
    from facelab.nn import inference
    from facelab.reports.scoring import emotion_scores, keypoint_rmse

    path, _, _ = project
    trained = json.loads((path / "metrics/train_keypoints.json").read_text())
    val = load_split(path / "data/prepared/keypoints_val.npz")
    predicted = inference.predict(inference.load_model(path / "models/keypoints.keras"), val["images"])
    assert trained["served_val_rmse_px"] == pytest.approx(keypoint_rmse(val["keypoints"], predicted), rel=1e-6)
    assert trained["served_val_rmse_px"] != pytest.approx(trained["val_rmse_px"], rel=1e-6)  # not the network alone

    trained = json.loads((path / "metrics/train_emotion.json").read_text())
    val = load_split(path / "data/prepared/emotion_val.npz")
    predicted = inference.predict(inference.load_model(path / "models/emotion.keras"), val["images"]).argmax(axis=1)
    scores = emotion_scores(val["labels"], predicted, trained["classes"])
    assert trained["served_val_accuracy"] == pytest.approx(scores["accuracy"], rel=1e-9)
    assert trained["served_val_f1_weighted"] == pytest.approx(scores["f1_weighted"], rel=1e-9)


def test_each_training_run_logs_its_validation_figures_under_fewer_averaging_views(project):
    """Beside the served figure, MLflow has the network's validation figure with no averaging and with each kind
    of view alone (``averaging.<views>.val_*``): a view that costs shows in every run."""
    from facelab.data.artifacts import load_split
    from facelab.nn import inference, tta
    from facelab.reports.scoring import keypoint_rmse

    path, _, _ = project
    client = mlflow_client(path)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("facelab").experiment_id])}
    served = inference.load_model(path / "models/keypoints.keras")
    settings = tta.settings(served)
    assert settings["flip"]  # the synthetic default averages with the mirror image, so two settings are logged
    logged = runs["train_keypoints"].data.metrics
    trained = json.loads((path / "metrics/train_keypoints.json").read_text())
    assert logged[f"averaging.{tta.label(**settings)}.val_rmse_px"] == pytest.approx(trained["served_val_rmse_px"])
    val = load_split(path / "data/prepared/keypoints_val.npz")
    alone = keypoint_rmse(val["keypoints"], inference.predict(tta.unwrap(served), val["images"]))
    assert logged["averaging.none.val_rmse_px"] == pytest.approx(alone, rel=1e-6)
    assert alone != pytest.approx(trained["served_val_rmse_px"], rel=1e-6)
    emotion = runs["train_emotion"].data.metrics
    settings = tta.settings(inference.load_model(path / "models/emotion.keras"))
    for option in tta.parts(**settings):
        assert {f"averaging.{tta.label(**option)}.val_{f}" for f in ("accuracy", "f1_weighted")} <= set(emotion)


def test_mlflow_shows_the_data_sets_and_what_each_figure_was_measured_on(project):
    path, _, _ = project
    client = mlflow_client(path)
    experiment = client.get_experiment_by_name("facelab")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    contexts = {
        name: {
            (d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"])
            for d in runs[name].inputs.dataset_inputs
        }
        for name in ("train_keypoints", "evaluate")
    }
    assert contexts["train_keypoints"] == {("keypoints_train", "training"), ("keypoints_val", "validation")}
    assert contexts["evaluate"] == {("keypoints_test", "test"), ("emotion_test", "test")}
    version = client.get_model_version_by_alias("facelab-emotion", "champion")
    assert version.tags["facelab.labels"] == "anger,disgust,sadness,happiness,surprise"
    assert version.tags["facelab.input_size"] == "48x48"
    test_input = next(d for d in runs["evaluate"].inputs.dataset_inputs if d.dataset.name == "emotion_test")
    assert version.tags["facelab.test_set"] == test_input.dataset.digest


def test_second_repro_is_a_no_op(project):
    path, env, _ = project
    result = run(["dvc", "repro"], path, env)
    assert "Running stage" not in result.stdout


def test_a_rerun_on_a_fresh_store_leaves_the_tree_clean(project):
    """A fresh clone's `make pipeline` leaves `git status` clean: training is deterministic and model files are
    written byte for byte reproducibly, so a forced rerun of every stage against a new MLflow store (what a
    fresh clone has: the registry versions start at 1 again) changes no tracked file, dvc.lock included."""
    import shutil

    path, env, _ = project
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-q", "-m", "first run"], path, env)
    for store in path.glob("mlflow.db*"):
        store.unlink()
    shutil.rmtree(path / "mlartifacts")
    run(["dvc", "repro", "-f"], path, env)
    changed = run(["git", "status", "--porcelain"], path, env).stdout
    assert changed.strip() == "", changed
