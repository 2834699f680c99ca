"""A headless Chromium for looking at the ``facelab demo`` page: its browser test and its README screenshot.

The executable: ``FACELAB_CHROMIUM``, else the first of ``CHROMIUM_NAMES`` on the PATH (Debian: ``apt-get install
chromium``), else Playwright's own download (``playwright install chromium``). Launched headless with nothing
but 127.0.0.1 in mind: no GPU, no QUIC, no update, sync or background requests.
"""

from __future__ import annotations

import os
import shutil

CHROMIUM_ENV = "FACELAB_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str | None:
    """``FACELAB_CHROMIUM``, else the first Chromium on the PATH, else None (Playwright's own, if fetched)."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def launch(playwright, executable: str | None = None):
    """A headless Chromium browser of ``playwright`` (sync API): ``executable``, else ``chromium_executable()``."""
    executable = executable or chromium_executable()
    if executable:
        return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    return playwright.chromium.launch(args=CHROMIUM_ARGS)
