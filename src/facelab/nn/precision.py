"""The precision policy a training stage trains under (params.yaml's ``precision``, per training stage).

``auto`` is ``mixed_float16`` on a GPU (Keras wraps the optimizer in a ``LossScaleOptimizer``), ``mixed_bfloat16``
on a CPU with bf16 instructions (AVX512_BF16 or AMX), else ``float32``; any of the three can be named explicitly.
See docs/devices.md, "Precision".
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

CPU_FLAGS_FILE = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bfloat16 matrix instructions


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AVX512_BF16 or AMX)."""
    try:
        flags = CPU_FLAGS_FILE.read_text()
    except OSError:
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(precision: str) -> str:
    """'auto' -> mixed_float16 on a GPU, mixed_bfloat16 on a bf16-capable CPU, else float32."""
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def set_precision(precision: str) -> str:
    """Set Keras's global policy to ``resolve_precision(precision)`` and return that policy's name."""
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy
