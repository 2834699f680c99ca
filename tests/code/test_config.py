"""params.yaml is validated before any work: wrong types and ranges give one clear line."""

import copy
from pathlib import Path

import pytest
import yaml

from facelab.cli import main
from facelab.config import flatten, in_queued_experiment, load_params, validate_params, workspace_root
from facelab.errors import FacelabError
from tests.support.bad_files import NOT_A_MAPPING, write

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def test_the_committed_params_are_valid():
    validate_params(copy.deepcopy(DEFAULT))


@pytest.mark.parametrize(
    "dotted, value, expected",
    [
        ("train_keypoints.lr", "fast", "train_keypoints.lr"),
        ("train_keypoints.epochs", 0, "train_keypoints.epochs"),
        ("train_emotion.dropout", 1.5, "train_emotion.dropout"),
        ("data.emotion.classes", ["anger", "boredom"], "boredom"),
        ("data.keypoints.missing", "guess", "data.keypoints.missing"),
        ("train_keypoints.resume", "yes", "train_keypoints.resume"),
        ("train_emotion.width", 8, "a multiple of 16"),  # oneDNN's kernels crash on narrower nets
        ("train_keypoints.width", 40, "train_keypoints.width"),
        ("train_emotion.tta.shift_px", -1, "train_emotion.tta.shift_px"),
        ("train_keypoints.tta.flip", "yes", "train_keypoints.tta.flip"),
        ("train_emotion.crop", 200, "train_emotion.crop = 200 is larger than train_emotion.image_size"),
        ("augment.emotion.erasing", 1.5, "augment.emotion.erasing = 1.5"),
        ("train_emotion.ema", 1.0, "train_emotion.ema = 1.0 is not a number >= 0 and < 1"),
        ("train_emotion.progressive.epochs", 10, "progressive.epochs = 10 leaves none of the 10 epochs"),
    ],
)
def test_bad_parameters_are_named(dotted, value, expected):
    params = copy.deepcopy(DEFAULT)
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    with pytest.raises(FacelabError) as err:
        validate_params(params, "params.yaml")
    message = str(err.value)
    assert expected in message and "\n" not in message and message.startswith("params.yaml")


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"crop": 40}, "train_emotion.progressive.crop = 40 is larger than train_emotion.progressive.image_size = 32"),
        ({"head": "flatten"}, "train_emotion.progressive needs head 'pool'"),
    ],
)
def test_progressive_resizing_is_checked_against_the_network(changes, expected):
    params = copy.deepcopy(DEFAULT)
    params["train_emotion"]["progressive"] = {"epochs": 2, "image_size": 32, "crop": changes.get("crop", 0)}
    params["train_emotion"]["head"] = changes.get("head", "pool")
    with pytest.raises(FacelabError) as err:
        validate_params(params, "params.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_unknown_and_missing_parameters(tmp_path):
    params = copy.deepcopy(DEFAULT)
    params["train_keypoints"]["learning_rate"] = 0.1
    with pytest.raises(FacelabError, match="unknown parameter train_keypoints.learning_rate"):
        validate_params(params)
    del params["train_keypoints"]["learning_rate"], params["seed"]
    with pytest.raises(FacelabError, match="missing parameter seed"):
        validate_params(params)


def test_file_source_needs_a_path():
    params = copy.deepcopy(DEFAULT)
    params["data"]["keypoints"]["source"] = "file"
    with pytest.raises(FacelabError, match="data.keypoints.path"):
        validate_params(params)


def test_invalid_yaml_names_the_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\ndata: [\n")
    with pytest.raises(FacelabError, match="params.yaml: line"):
        load_params(bad)


def test_flatten_gives_dotted_names():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_the_workspace_itself_is_not_a_queued_experiment(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert not in_queued_experiment()


def test_queued_experiment_copies_resolve_to_the_user_workspace(tmp_path, monkeypatch):
    copy_root = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy_root.mkdir(parents=True)
    (copy_root / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(copy_root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert workspace_root() == tmp_path / "repo"
    assert in_queued_experiment()  # its runs may not change the champion's task
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))
    assert workspace_root() == (tmp_path / "elsewhere").resolve()


@pytest.mark.parametrize("case", sorted(NOT_A_MAPPING))
def test_load_params_on_a_bad_file_is_one_line_naming_it(case, tmp_path):
    content, says = NOT_A_MAPPING[case]
    bad = write(tmp_path / "params.yaml", content)
    with pytest.raises(FacelabError) as err:
        load_params(bad)
    assert str(err.value).startswith(f"{bad}: ") and says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["check-params", "apply"])
@pytest.mark.parametrize("case", sorted(NOT_A_MAPPING))
def test_a_bad_params_file_exits_1_with_one_line_and_is_left_alone(case, command, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FACELAB_DEBUG", raising=False)
    content, says = NOT_A_MAPPING[case]
    bad = write(tmp_path / "params.yaml", content)
    before = None if content is None else bad.read_bytes()
    argv = ["check-params"] if command == "check-params" else ["params", "apply", str(REPO / "profiles" / "tiny.yaml")]
    assert main([*argv, "--params", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"facelab: error: {bad}: ") and says in err, err
    if before is not None:
        assert bad.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]  # no temporary file left beside it
