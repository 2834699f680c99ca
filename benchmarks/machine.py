"""What machine a benchmark ran on: shared by the benchmark scripts (imported as `machine`)."""

from __future__ import annotations

from facelab.tracking.provenance import cpu_model

__all__ = ["cpu_model"]
