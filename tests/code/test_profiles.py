"""Every profile in profiles/ is a valid set of overrides for params.yaml, and names its own command."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from facelab.config import load_params
from facelab.profiles import apply_profile, set_arguments

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted((REPO / "profiles").glob("*.yaml"))


def test_there_are_profiles():
    assert len(PROFILES) >= 5


@pytest.mark.parametrize("profile", PROFILES, ids=[p.stem for p in PROFILES])
def test_a_profile_applies_to_params_yaml_and_validates(profile, tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_profile(profile, params)  # raises FacelabError naming the parameter when a value is wrong
    applied = load_params(params)
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
