"""The optional dependencies (pyproject.toml's extras) a command needs, checked before it imports them.

``require("onnx", ("tf2onnx",), "facelab export onnx")`` raises ``FacelabError`` when a module of the
extra is not installed, so that the command ends with one line (``facelab.runner``), not a traceback::

    facelab: error: 'facelab export onnx' needs the onnx extra: pip install -e '.[onnx]'

The check is ``importlib.util.find_spec``: it finds a top-level module without importing it, so a
command that has what it needs pays nothing for the check.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from facelab.errors import FacelabError

INSTALL = "pip install -e '.[{extra}]'"
# The modules of each extra that a command imports: `facelab demo` needs gradio, `--runtime onnx` (predict, demo)
# onnxruntime alone, `facelab export onnx` the converter too. No command needs the team extra (PostgreSQL, S3
# and dvc-s3 serve the MLflow server and the DVC remote, not facelab's own code).
DEMO_MODULES = ("gradio",)
ONNX_RUNTIME_MODULES = ("onnxruntime",)
ONNX_EXPORT_MODULES = ("onnx", "tf2onnx", "onnxruntime")


def missing(modules: Iterable[str]) -> list[str]:
    """The top-level modules of ``modules`` that cannot be imported (not installed, or blocked)."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package that fails, a module set to None in sys.modules
            found = False
        if not found:
            absent.append(name)
    return absent


def require(extra: str, modules: Iterable[str], command: str) -> None:
    """Raise ``FacelabError`` naming ``command`` and how to install ``extra`` unless every module is installed."""
    if missing(modules):
        raise FacelabError(f"'{command}' needs the {extra} extra: {INSTALL.format(extra=extra)}")
