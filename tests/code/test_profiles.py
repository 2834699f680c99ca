"""Every profile in profiles/ is a valid set of overrides for params.yaml, and names its own command;
``extends`` chains, the recorded profile name, and bad profiles as one line naming the file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from facelab.cli import main
from facelab.config import flatten, load_params
from facelab.profiles import applied_params, apply_profile, resolve_profile, set_arguments
from tests.support.bad_files import NOT_A_MAPPING, write

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted((REPO / "profiles").glob("*.yaml"))


def test_there_are_profiles():
    assert len(PROFILES) >= 5


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_profile_applies_to_params_yaml_and_validates(profile, tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    in_memory = applied_params(profile, params)  # what benchmarks read without writing params.yaml
    apply_profile(profile, params)  # raises FacelabError naming the parameter when a value is wrong
    applied = load_params(params)
    assert in_memory == applied
    sets = set_arguments(profile)
    assert sets and all(flag == "-S" for flag in sets[::2])
    for name_value in sets[1::2]:
        name, _ = name_value.split("=", 1)
        node = applied
        for key in name.split("."):
            node = node[key]  # every override names a parameter that exists


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_profile_s_documented_command_is_its_own(profile):
    commands = re.findall(r"facelab params apply (\S+)", profile.read_text())
    assert all(path == f"profiles/{profile.name}" for path in commands), commands
    names = re.findall(r"dvc exp run -n (\S+)", profile.read_text())
    assert all(name == profile.stem for name in names), names


# ---- extends: a full or fast profile lists only what it changes in its quick one ----

DERIVED_DIFFERENCES = {  # full or fast profile -> (the quick profile it extends, what it changes there)
    "full-emotion-7": (
        "quick-emotion-7",
        {
            "augment.emotion.rotation": 0.04,
            "augment.emotion.zoom": 0.1,
            "train_emotion.epochs": 54,
            "train_emotion.batch_size": 64,
            "train_emotion.lr": 0.002,
            "train_emotion.dropout": 0.3,
            "train_emotion.progressive.epochs": 0,
        },
    ),
    "full-emotion-5": (
        "quick-emotion-5",
        {
            "train_emotion.epochs": 100,
            "train_emotion.recompute_batchnorm": False,
            "train_emotion.sam_rho": 0.0,
            "train_emotion.sam_epochs": 0,
        },
    ),
    "full-keypoints": ("quick-keypoints", {"train_keypoints.epochs": 24, "train_keypoints.tta.flip": True}),
    "fast-keypoints": (
        "quick-keypoints",
        {"augment.keypoints.copies": 1, "train_keypoints.epochs": 6, "train_keypoints.width": 32},
    ),
    "fast-emotion-5": (
        "quick-emotion-5",
        {
            "augment.emotion.rotation": 0,
            "augment.emotion.zoom": 0,
            "train_emotion.epochs": 23,
            "train_emotion.batch_size": 128,
            "train_emotion.lr": 0.004,
            "train_emotion.dropout": 0,
            "train_emotion.sam_rho": 0.0,
            "train_emotion.sam_epochs": 0,
            "train_emotion.class_weights": "none",
            "train_emotion.progressive.epochs": 8,
            "train_emotion.progressive.image_size": 40,
            "train_emotion.progressive.crop": 32,
        },
    ),
    "fast-emotion-7": (
        "quick-emotion-7",
        {
            "train_emotion.epochs": 18,
            "train_emotion.image_size": 48,
            "train_emotion.crop": 40,
            "train_emotion.progressive.epochs": 8,
            "train_emotion.progressive.image_size": 40,
            "train_emotion.progressive.crop": 32,
        },
    ),
}


@pytest.mark.parametrize("derived", sorted(DERIVED_DIFFERENCES))
def test_a_full_or_fast_profile_is_its_quick_profile_plus_its_differences(derived):
    quick, differences = DERIVED_DIFFERENCES[derived]
    listed = yaml.safe_load((REPO / "profiles" / f"{derived}.yaml").read_text())
    assert listed.pop("extends") == f"{quick}.yaml"
    assert flatten(listed) == differences  # only the differences are listed
    quick_values = flatten(resolve_profile(REPO / "profiles" / f"{quick}.yaml"))
    assert all(quick_values.get(name) != value for name, value in differences.items())
    assert flatten(resolve_profile(REPO / "profiles" / f"{derived}.yaml")) == {**quick_values, **differences}


def test_extends_chains_resolve_relative_to_the_extending_profile(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "a.yaml").write_text("train_emotion:\n  epochs: 3\n  width: 32\ncombine:\n  faces: 8\n")
    (folder / "b.yaml").write_text("extends: a.yaml\ntrain_emotion:\n  epochs: 4\n")
    (folder / "c.yaml").write_text("extends: b.yaml\ncombine:\n  columns: 2\n")
    expected = {"train_emotion": {"epochs": 4, "width": 32}, "combine": {"faces": 8, "columns": 2}}
    assert resolve_profile(folder / "c.yaml") == expected
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_profile(folder / "c.yaml", params)
    applied = load_params(params)
    assert applied["profile"] == "c"
    assert applied["train_emotion"]["epochs"] == 4 and applied["train_emotion"]["width"] == 32
    assert applied["combine"] == {"faces": 8, "columns": 2}


# ---- the profile's name is recorded ----


def test_apply_records_the_profile_name_and_keeps_the_comment(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    assert main(["params", "apply", str(REPO / "profiles" / "full-emotion-7.yaml"), "--params", str(params)]) == 0
    line = next(x for x in params.read_text().splitlines() if x.startswith("profile:"))
    assert line.split("#")[0].split() == ["profile:", "full-emotion-7"]
    assert (
        line.split("#", 1)[1]
        == next(x for x in (REPO / "params.yaml").read_text().splitlines() if x.startswith("profile:")).split("#", 1)[1]
    )
    assert load_params(params)["train_emotion"]["epochs"] == 54  # from full-emotion-7
    assert load_params(params)["train_emotion"]["crop"] == 56  # from quick-emotion-7, through extends


def test_sets_names_the_profile(capsys):
    assert main(["params", "sets", str(REPO / "profiles" / "full-keypoints.yaml")]) == 0
    out = capsys.readouterr().out.split()
    pairs = [out[i + 1] for i in range(0, len(out), 2) if out[i] == "-S"]
    assert len(pairs) * 2 == len(out)
    assert "profile=full-keypoints" in pairs
    assert "train_keypoints.epochs=24" in pairs and "train_keypoints.head=softargmax" in pairs  # its own, and quick's
    assert not any(p.startswith("extends=") for p in pairs)


# ---- bad profiles: one line naming the file, exit 1, params.yaml unchanged ----


BAD_PROFILES = {  # name -> (the profile's content (None: a directory), what the error says)
    **NOT_A_MAPPING,
    "sets-profile": ("profile: mine\ntrain_emotion:\n  epochs: 3\n", "may not set 'profile'"),
    "extends-missing": ("extends: nowhere.yaml\ntrain_emotion:\n  epochs: 3\n", "nowhere.yaml not found"),
    "extends-itself": ("extends: extends-itself.yaml\n", "cycle"),
}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("FACELAB_DEBUG", raising=False)
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    return tmp_path


def _fails_with_one_line(argv, capsys, names: Path, says: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("facelab: error: "), err
    assert str(names) in err and says in err, err


@pytest.mark.parametrize("action", ["apply", "sets"])
@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_a_bad_profile_is_one_line_naming_it(case, action, project, capsys):
    content, says = BAD_PROFILES[case]
    profile = write(project / f"{case}.yaml", content)
    params = project / "params.yaml"
    before = params.read_bytes()
    argv = ["params", action, str(profile)] + (["--params", str(params)] if action == "apply" else [])
    _fails_with_one_line(argv, capsys, profile, says)
    assert params.read_bytes() == before
    assert sorted(p.name for p in project.iterdir()) == sorted(["params.yaml", profile.name])  # no temporary left


def test_an_extends_cycle_is_one_line(project, capsys):
    (project / "a.yaml").write_text("extends: b.yaml\n")
    (project / "b.yaml").write_text("extends: c.yaml\n")
    (project / "c.yaml").write_text("extends: a.yaml\ntrain_emotion:\n  epochs: 3\n")
    before = (project / "params.yaml").read_bytes()
    argv = ["params", "apply", str(project / "a.yaml"), "--params", str(project / "params.yaml")]
    _fails_with_one_line(argv, capsys, project / "c.yaml", "cycle (a.yaml -> b.yaml -> c.yaml -> a.yaml)")
    assert (project / "params.yaml").read_bytes() == before


def test_a_bad_base_profile_is_named_itself(project, capsys):
    (project / "base.yaml").write_text("- not a mapping\n")
    (project / "top.yaml").write_text("extends: base.yaml\ntrain_emotion:\n  epochs: 3\n")
    before = (project / "params.yaml").read_bytes()
    argv = ["params", "apply", str(project / "top.yaml"), "--params", str(project / "params.yaml")]
    _fails_with_one_line(argv, capsys, project / "base.yaml", "found a list")
    assert (project / "params.yaml").read_bytes() == before


def test_an_unknown_parameter_names_the_profile_that_sets_it(project, capsys):
    (project / "base.yaml").write_text("train_emotion:\n  epochs: 3\n")
    (project / "top.yaml").write_text("extends: base.yaml\ntrain_emotion:\n  learning_rate: 0.1\n")
    before = (project / "params.yaml").read_bytes()
    argv = ["params", "apply", str(project / "top.yaml"), "--params", str(project / "params.yaml")]
    _fails_with_one_line(argv, capsys, project / "top.yaml", "train_emotion.learning_rate is not a parameter")
    assert (project / "params.yaml").read_bytes() == before
