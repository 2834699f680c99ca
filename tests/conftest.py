"""Shared test helpers: where the repository and the real data are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facelab.config import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def shared_data() -> Path:
    data = (REPO / SHARED_DATA).resolve()
    if not data.exists():
        pytest.skip(f"real data not found at {data}")
    return data
