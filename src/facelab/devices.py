"""Devices for training: the tf.distribute strategy, who is the chief, batch and learning rate per replica, precision.

* Strategy (``training_strategy``): ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster,
  ``MirroredStrategy`` over every GPU when there are several, or over ``FACELAB_CPU_DEVICES`` logical CPU
  devices when that variable asks for two or more (how the tests run two replicas on one CPU), else
  TensorFlow's default strategy (one device: the single-device path, unchanged).
* Batch and learning rate: ``batch_size`` in params.yaml is per replica; a step consumes
  ``batch_size x replicas`` faces and the learning rate grows in proportion (linear scaling rule,
  Goyal et al. 2017, "Accurate, Large Minibatch SGD"), the cosine schedule's warm-up included. With one
  replica both are the params' own values.
* Chief: in a multi-worker run only the chief (task ``chief``, or ``worker`` 0 when the cluster has no
  chief) writes anything that outlives the run (models, metrics, plots, MLflow runs and registry versions,
  progress lines); the other workers train in step and keep their resumable state in a temporary folder.
* Precision: ``auto`` is ``mixed_float16`` on a GPU (Keras wraps the optimizer in a ``LossScaleOptimizer``),
  ``mixed_bfloat16`` on a CPU with bf16 instructions, else ``float32``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

CPU_DEVICES_ENV = "FACELAB_CPU_DEVICES"  # e.g. 2: a MirroredStrategy over two logical CPU devices


# --- precision ------------------------------------------------------------------------------


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 matrix instructions (AVX512_BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """'auto' -> mixed_float16 on a GPU, mixed_bfloat16 on a bf16-capable CPU, else float32."""
    if precision != "auto":
        return precision
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def set_precision(precision: str) -> str:
    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


# --- strategy -------------------------------------------------------------------------------


def cluster_config() -> dict | None:
    """TF_CONFIG as a dict when it names a cluster, else None."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    config = json.loads(raw)
    return config if config.get("cluster") else None


def requested_cpu_devices() -> int:
    value = os.environ.get(CPU_DEVICES_ENV, "").strip()
    return int(value) if value else 1


def _split_cpu(count: int) -> list[str]:
    """``count`` logical CPU devices; must run before TensorFlow's runtime starts (before any op)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) != count:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def training_strategy() -> tf.distribute.Strategy:
    """The strategy a training stage runs under (see the module docstring). Call it first, before any
    TensorFlow op: MultiWorkerMirroredStrategy and logical devices must be set up before the runtime starts."""
    if cluster_config():
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = requested_cpu_devices()
    if not gpus and cpus > 1:
        return tf.distribute.MirroredStrategy(devices=_split_cpu(cpus))
    return tf.distribute.get_strategy()


def is_chief_task(task_type: str | None, task_id: int | None, cluster: dict) -> bool:
    """The chief of a cluster: task ``chief``, or ``worker`` 0 when there is no chief (TensorFlow's rule)."""
    if not task_type:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in cluster


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the one process that writes outputs: always outside a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return is_chief_task(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


def describe(strategy: tf.distribute.Strategy) -> dict:
    """What a run logs about its devices: strategy name (as tf.distribute exports it) and replicas."""
    name = type(strategy).__name__
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # its class is named CollectiveAllReduceStrategy
    elif not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        name = "default"
    return {"strategy": name, "replicas": int(strategy.num_replicas_in_sync)}


# --- batch, learning rate, data -------------------------------------------------------------


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """Faces per training step: params' ``batch_size`` on each replica."""
    return per_replica * strategy.num_replicas_in_sync


def evenly_split(faces: int, strategy: tf.distribute.Strategy) -> int:
    """How many of ``faces`` validation faces to keep so that every batch splits evenly across the replicas:
    all of them with one replica, else at most ``replicas - 1`` fewer (the global batch is a multiple of the
    replicas, so then every batch is). Keras 3.15 with TensorFlow 2.21 fails on uneven splits: it reduces the
    first batch across replicas to build the model ("Inputs to operation AddN of type AddN must have the same
    size and shape. Input 0: [7,96,96,1] != input 1: [6,96,96,1]"), and a replica given an empty batch fails
    in BatchNormalization ("Incompatible shapes: [32] vs. [0,48,48,16]")."""
    return faces - faces % strategy.num_replicas_in_sync


def scaled_learning_rate(lr: float, strategy: tf.distribute.Strategy) -> float:
    """The linear scaling rule: ``replicas`` times the batch, ``replicas`` times the learning rate."""
    return lr * strategy.num_replicas_in_sync


def shard_by_data(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """In-memory arrays (``from_tensor_slices``) have no files to shard by: with several replicas each worker
    takes its share of every global batch (``AutoShardPolicy.DATA``), as the TensorFlow guide prescribes.
    One replica: the dataset is returned as it is."""
    if strategy.num_replicas_in_sync == 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# --- where a worker writes ------------------------------------------------------------------


def worker_folder(folder: Path, chief: bool) -> Path:
    """The chief keeps its resumable state in ``folder``; any other worker in a temporary folder of its own,
    starting from a copy of the chief's state when that is readable here (a shared file system), so that
    every worker resumes from the same epoch. Remove it with ``release_worker_folder``."""
    if chief:
        return folder
    private = Path(tempfile.mkdtemp(prefix="facelab-worker-")) / folder.name
    if folder.exists():
        shutil.copytree(folder, private)
    return private


def release_worker_folder(folder: Path, chief: bool) -> None:
    """Remove a non-chief worker's temporary folder (the chief's is left to the caller)."""
    if not chief:
        shutil.rmtree(folder.parent, ignore_errors=True)
