"""The wrapper every DVC stage script (stages/*.py) and facelab command runs through.

Errors a user can fix (``FacelabError``) print as one line, ``facelab: error: ...``, and exit
with status 1; set ``FACELAB_DEBUG=1`` (or pass ``--debug``) for the traceback. Ctrl-C or
SIGTERM exits with 130. Kept apart from ``facelab.cli`` so that a stage's imports (and so its
``dvc.yaml`` deps) are only what the stage uses.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from facelab.config import load_params
from facelab.errors import FacelabError

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def _debug() -> bool:
    return os.environ.get("FACELAB_DEBUG", "") not in ("", "0", "false")


def guarded(fn: Callable[[], object]) -> int:
    """Run ``fn``; turn FacelabError into one line on stderr and an exit status.

    ``fn`` may return an int: the exit status (e.g. metrics-gate's 1 for a regression); else 0.
    """
    try:
        status = fn()
        return status if type(status) is int else 0
    except FacelabError as exc:
        if _debug():
            raise
        print(f"facelab: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("facelab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def stage(run: Callable[[dict], object], params_file: str = "params.yaml") -> None:
    """Entry point of a DVC stage script: validated params in, one call out, exit status back."""
    sys.exit(guarded(lambda: run(load_params(params_file))))
