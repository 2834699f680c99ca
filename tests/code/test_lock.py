"""The locks (requirements/<build>.lock.txt, `make lock`) agree with pyproject.toml: every requirement of its
dependencies and of the locked extras is met by the pinned version, every pin is reached from pyproject.toml,
and the header's sha256 is that of today's dependency tables. No network: the files alone."""

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# scripts/lock.py is a script, not a module of a package: loaded from its file (sys.path stays as it is)
_SPEC = importlib.util.spec_from_file_location("facelab_lock_script", REPO / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(lock)

PYPROJECT = (REPO / "pyproject.toml").read_text()


def _lock_text(build: str) -> str:
    return lock.lock_path(build).read_text()


@pytest.mark.parametrize("build", sorted(lock.LOCKS))
def test_the_lock_agrees_with_pyproject(build):
    assert lock.problems(_lock_text(build), PYPROJECT, build) == []


@pytest.mark.parametrize("build", sorted(lock.LOCKS))
def test_the_lock_pins_its_own_tensorflow_build_alone(build):
    pins, *_ = lock.parse_lock(_lock_text(build))
    builds = {name for name in pins if name in ("tensorflow", "tensorflow-cpu")}
    assert builds == {"tensorflow-cpu" if build == "cpu" else "tensorflow"}


def test_the_makefile_installs_a_lock_holding_its_extras():
    makefile = (REPO / "Makefile").read_text()
    extras = re.search(r"^EXTRAS \?= (\S+)$", makefile, re.MULTILINE)[1].split(",")
    assert "requirements/$(BUILD).lock.txt" in makefile
    assert set(extras) <= set(lock.LOCKS["cpu"])
    assert [e for e in lock.LOCKS["gpu"] if e != "gpu"] == [e for e in lock.LOCKS["cpu"] if e != "cpu"]


def _with_dependency(text: str, requirement: str) -> str:
    return text.replace("dependencies = [\n", f'dependencies = [\n    "{requirement}",\n', 1)


def test_a_requirement_the_lock_does_not_meet_fails():
    found = lock.problems(_lock_text("cpu"), _with_dependency(PYPROJECT, "numpy>=99"), "cpu")
    assert any("numpy>=99" in problem for problem in found), found
    assert any("run `make lock`" in problem for problem in found), found


def test_a_requirement_the_lock_lacks_fails_even_with_a_matching_hash():
    changed = _with_dependency(PYPROJECT, "no-such-package-facelab>=1")
    text = re.sub(r"pyproject-sha256=\w+", f"pyproject-sha256={lock.pyproject_sha256(changed)}", _lock_text("cpu"))
    assert lock.problems(text, changed, "cpu") == [
        "pyproject.toml requires no-such-package-facelab>=1, the lock pins no no-such-package-facelab"
    ]


def test_a_narrowed_extra_fails():
    changed = PYPROJECT.replace('"playwright>=1.50,<2"', '"playwright>=1.50,<1.51"')
    assert changed != PYPROJECT
    found = lock.problems(_lock_text("cpu"), changed, "cpu")
    assert any(problem.startswith("pyproject.toml requires playwright") for problem in found), found


def test_a_comment_in_pyproject_changes_nothing():
    assert lock.problems(_lock_text("cpu"), PYPROJECT.replace("[project]\n", "[project]\n# a comment\n"), "cpu") == []


def test_a_stray_pin_and_a_local_index_fail():
    text = _lock_text("cpu") + "leftpad==1.0\n    # via nothing-here\n--extra-index-url file:///opt/pypi/simple\n"
    found = lock.problems(text, PYPROJECT, "cpu")
    assert "not a pin from PyPI: '--extra-index-url file:///opt/pypi/simple'" in found
    assert "leftpad there via 'nothing-here', which is neither pyproject.toml nor a pin" in found
    assert "leftpad==1.0 is not reached from pyproject.toml" in found


def test_a_lock_without_header_or_of_the_other_build_fails():
    text = _lock_text("cpu")
    assert lock.problems(text.replace(lock.HEADER, "# no header"), PYPROJECT, "cpu")[-1].startswith("no `")
    assert any("build=cpu, this lock is for build=gpu" in problem for problem in lock.problems(text, PYPROJECT, "gpu"))
