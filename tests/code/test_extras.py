"""A command whose optional dependencies are not installed ends with one line naming the extra to install.

The real ``facelab`` command runs in a subprocess with the extra's modules made unimportable: a
``sitecustomize.py`` on the subprocess's ``PYTHONPATH`` sets them to ``None`` in ``sys.modules``, which is
how Python marks a module that cannot be imported (``import`` raises ``ModuleNotFoundError``,
``importlib.util.find_spec`` answers ``None``). The subprocess runs in an empty folder: no ``params.yaml``
there, so the extra is checked before the command loads anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facelab import cli, extras
from facelab.errors import FacelabError

FACELAB = Path(sys.executable).with_name("facelab")  # the console script pip installed beside this Python
ONNX_HINT = "needs the onnx extra: pip install -e '.[onnx]'"
DEMO_HINT = "needs the demo extra: pip install -e '.[demo]'"


def _facelab(argv: list[str], hidden: list[str], folder: Path) -> subprocess.CompletedProcess:
    """``facelab argv`` run in ``folder`` with the modules ``hidden`` unimportable."""
    site = folder / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in hidden)
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FACELAB_DEBUG", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    command = [str(FACELAB)] if FACELAB.exists() else [sys.executable, "-m", "facelab.cli"]
    return subprocess.run(
        [*command, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("argv", "hidden", "line"),
    [
        (["export", "onnx"], ["tf2onnx"], f"'facelab export onnx' {ONNX_HINT}"),
        (["export", "onnx", "--no-log"], ["onnx"], f"'facelab export onnx' {ONNX_HINT}"),
        (["export", "onnx"], ["onnxruntime"], f"'facelab export onnx' {ONNX_HINT}"),
        (
            ["predict", "photo.jpg", "--runtime", "onnx"],
            ["onnxruntime"],
            f"'facelab predict --runtime onnx' {ONNX_HINT}",
        ),
        (["demo"], ["gradio"], f"'facelab demo' {DEMO_HINT}"),
        (["demo", "--runtime", "onnx"], ["onnxruntime"], f"'facelab demo --runtime onnx' {ONNX_HINT}"),
    ],
)
def test_a_missing_extra_is_one_line_and_exit_1(argv, hidden, line, tmp_path):
    done = _facelab(argv, hidden, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"facelab: error: {line}\n"  # one line, no traceback
    assert done.stdout == ""


def test_with_the_extra_installed_the_command_gets_past_the_check(tmp_path):
    """Control: nothing hidden, the same command gets past the check (to the missing params.yaml)."""
    if extras.missing(extras.ONNX_RUNTIME_MODULES + extras.DEMO_MODULES):
        pytest.skip("the demo and onnx extras are not installed")
    done = _facelab(["demo", "--runtime", "onnx"], [], tmp_path)
    assert done.returncode == 1
    assert done.stderr == "facelab: error: params.yaml: parameter file not found\n"


def test_require_names_the_command_and_the_extra(monkeypatch):
    extras.require("onnx", ["json", "os"], "facelab whatever")  # installed: nothing happens
    monkeypatch.setitem(sys.modules, "json", None)
    assert extras.missing(["json", "os", "facelab_no_such_module"]) == ["json", "facelab_no_such_module"]
    with pytest.raises(FacelabError) as raised:
        extras.require("demo", ["os", "json"], "facelab demo")
    assert str(raised.value) == f"'facelab demo' {DEMO_HINT}"


def test_only_the_commands_that_use_an_extra_need_it(monkeypatch):
    for name in {*extras.DEMO_MODULES, *extras.ONNX_EXPORT_MODULES, *extras.ONNX_RUNTIME_MODULES}:
        monkeypatch.setitem(sys.modules, name, None)
    parser = cli.build_parser()
    for argv in (["predict", "photo.jpg"], ["check-params"], ["results"], ["stage", "prepare"]):
        cli._check_extras(parser.parse_args(argv))  # the Keras runtime needs neither onnx nor gradio
    for argv in (["predict", "photo.jpg", "--runtime", "onnx"], ["demo"], ["export", "onnx"]):
        with pytest.raises(FacelabError, match="needs the (onnx|demo) extra"):
            cli._check_extras(parser.parse_args(argv))
