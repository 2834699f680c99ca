"""Training on several replicas and workers: the tf.distribute strategy, who is the chief, batch and learning rate
per replica, sharding, and the fit loop of a multi-worker run.

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
  progress lines); the other workers train in step and keep their resumable state in a temporary folder
  (``worker_folder``).
* Several workers: every worker must join within ``FACELAB_WORKER_TIMEOUT`` seconds (``multi_worker_strategy``:
  else one line naming the missing ones), and ``training.fit`` trains with ``fit_replicated``, a loop of its own
  under ``strategy.run``, the model built beforehand (``build_before_fit``): Keras 3.15's ``Model.fit`` fails under
  ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585, tensorflow/tensorflow#72388).

Precision: ``facelab.nn.precision``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from facelab.config import CHECKPOINTS_DIR
from facelab.errors import FacelabError

CPU_DEVICES_ENV = "FACELAB_CPU_DEVICES"  # e.g. 2: a MirroredStrategy over two logical CPU devices
# How long every worker of a TF_CONFIG cluster waits for the others to join (TensorFlow's own default: one hour),
# and, at its end, for the others to finish (the chief saves and registers the model after training)
WORKER_TIMEOUT_ENV, DEFAULT_WORKER_TIMEOUT_S = "FACELAB_WORKER_TIMEOUT", 600
# A worker whose coordination heartbeats stop this long is taken as failed. TensorFlow's default, 10 s, failed one
# of three two-worker runs on a 2-core machine at load average 7 ("heartbeat timeout" on both tasks before the
# first step). A worker that dies is noticed sooner, by its closed connections.
HEARTBEAT_TIMEOUT_S = 60


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
        return multi_worker_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = requested_cpu_devices()
    if not gpus and cpus > 1:
        return tf.distribute.MirroredStrategy(devices=_split_cpu(cpus))
    return tf.distribute.get_strategy()


def worker_timeout() -> int:
    """Seconds every worker waits for the whole cluster to join: ``FACELAB_WORKER_TIMEOUT``, else 600."""
    value = os.environ.get(WORKER_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_WORKER_TIMEOUT_S
    if not value.isdigit() or int(value) < 1:
        raise FacelabError(f"{WORKER_TIMEOUT_ENV}={value!r}: a whole number of seconds (1 or more) expected")
    return int(value)


def _coordination_leader(cluster: dict) -> tuple[str, int]:
    """The task TensorFlow's coordination service runs on (its rule): chief 0, else worker 0."""
    return ("chief", 0) if "chief" in cluster else ("worker", 0)


def _join_within(cluster: dict, seconds: int) -> None:
    """Set up TensorFlow's coordination service as ``MultiWorkerMirroredStrategy`` would, but with every task
    registering through a barrier that times out after ``seconds`` (the leader included: without the barrier
    it waits for a missing worker for TensorFlow's default hour), waiting at its exit (up to ``seconds``) for the
    others to exit too (without it a worker that ends first is reported as failed by the chief, which is still
    saving), and the heartbeat time-out ``HEARTBEAT_TIMEOUT_S``. TensorFlow has no public API for this: these
    are the calls the strategy itself makes (``collective_all_reduce_strategy.py``, TensorFlow 2.21); the
    strategy leaves a service configured beforehand as it is."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    leader_job, leader_task = _coordination_leader(cluster)
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
        for job in ("chief", "worker")
        if job in cluster
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{leader_job}/replica:0/task:{leader_task}",
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=seconds * 1000,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000,
        shutdown_barrier_timeout_in_ms=seconds * 1000,
    )
    context.context()._coordination_service_config.cluster_register_with_barrier = True


def _missing_workers(message: str, cluster: dict, me: tuple[str, int]) -> str:
    """'worker 1 (host:port), ...': the tasks TensorFlow's barrier time-out names ("Some timed out task names:",
    one a line up to a blank line), this one left out; '' when the message names none."""
    _, found, rest = message.partition("timed out task names:")
    named = re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", rest.strip().split("\n\n", 1)[0]) if found else []
    missing = dict.fromkeys((job, int(task)) for job, task in named if job in cluster and (job, int(task)) != me)
    return ", ".join(f"{job} {task} ({cluster[job][task]})" for job, task in missing)


def multi_worker_strategy() -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` over TF_CONFIG's cluster, once every worker has joined; a worker that has
    not joined within ``worker_timeout()`` seconds ends every other one with one line (a FacelabError)."""
    config = cluster_config()
    cluster, task = config["cluster"], config.get("task", {})
    seconds = worker_timeout()
    _join_within(cluster, seconds)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as error:
        me = (task.get("type"), int(task.get("index", 0)))
        leader_job, leader_task = _coordination_leader(cluster)
        missing = _missing_workers(str(error), cluster, me)
        if not missing:  # a task other than the leader: the leader never answered
            missing = f"{leader_job} {leader_task} ({cluster[leader_job][leader_task]})"
        raise FacelabError(
            f"TF_CONFIG: {missing} did not join the cluster within {seconds} s ({WORKER_TIMEOUT_ENV}; this is "
            f"{me[0]} {me[1]}): start the same training stage there with its own TF_CONFIG, and check that the "
            "hosts reach each other on those ports"
        ) from None
    _interrupt_on_sigterm()
    return strategy


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _interrupt_on_sigterm() -> None:
    """SIGTERM as Ctrl-C again (facelab's runner ends with 130, a worker's temporary folder removed):
    TensorFlow's coordination service installs a handler of its own that only logs "SIGTERM caught" (measured:
    a worker kept running), for a preemption handler facelab does not use."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)


def tell_the_cluster(what: str) -> None:
    """Report to every worker that this one stops (``what``), so that they end now rather than when its
    heartbeats time out (``HEARTBEAT_TIMEOUT_S``). Measured: a worker stopped by SIGTERM in epoch 2 ended the chief
    78 s later without this report, 7 s with it (4.5 s when killed outright: its connections close). Best effort:
    TensorFlow's internal call, nothing when there is no cluster."""
    config = cluster_config() or {}
    task = config.get("task", {})
    try:
        from tensorflow.python.eager import context

        context.context().report_error_to_cluster(
            tf.errors.CANCELLED, f"facelab: {task.get('type')} {task.get('index')} {what}"
        )
    except Exception:  # noqa: BLE001 - reporting is a courtesy; the stop itself goes on
        pass


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True under ``MultiWorkerMirroredStrategy`` (TF_CONFIG names a cluster), where Keras's ``Model.fit`` fails
    and ``training.fit`` trains with ``fit_replicated``."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


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


# --- several workers: the fit loop ----------------------------------------------------------


def build_before_fit(model: keras.Model, batch, strategy: tf.distribute.Strategy) -> None:
    """Build ``model``, its compiled loss and metrics and its optimizer in ``strategy``'s scope from ``batch``
    (one plain, not distributed, ``(x, y[, sample_weight])``: arrays, tensors or a dataset's ``element_spec``;
    only shapes and dtypes are read). This is the build Keras's ``fit`` does from its first distributed batch
    (``_symbolic_build``, what ``Model.fit`` calls), without the cross-replica reduction of that batch that
    fails under ``MultiWorkerMirroredStrategy``. Every variable is then created, mirrored, before training."""
    with strategy.scope():
        model._symbolic_build(data_batch=tuple(batch) + (None,) * (3 - len(tuple(batch))))
    parts = {
        "model": model.built,
        "loss": getattr(getattr(model, "_compile_loss", None), "built", True),
        "metrics": getattr(getattr(model, "_compile_metrics", None), "built", True),
        "optimizer": model.optimizer is None or model.optimizer.built,
    }
    unbuilt = [name for name, built in parts.items() if not built]
    if unbuilt:
        raise RuntimeError(f"Keras did not build the {', '.join(unbuilt)} before training")


def every_replica(value: int, strategy: tf.distribute.Strategy) -> list[int]:
    """``value`` as every replica of the cluster has it (this process's replicas give this process's ``value``),
    gathered across the workers: a collective, so every worker must call it at the same point."""

    @tf.function
    def gather():
        return strategy.gather(strategy.run(lambda: tf.constant([value], tf.int64)), axis=0)

    return [int(v) for v in gather().numpy()]


def fit_replicated(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    epochs: int,
    steps_per_epoch: int,
    callbacks: Sequence[keras.callbacks.Callback],
) -> None:
    """What ``model.fit(train_ds.repeat(), steps_per_epoch=..., validation_data=val_ds, epochs=...)`` does, under
    ``MultiWorkerMirroredStrategy``, where Keras 3.15's ``fit`` fails (keras-team/keras#20585,
    tensorflow/tensorflow#72388): it reduces its first distributed batch across the workers to build the model
    ("Attempt to convert a value (PerReplica...) to a Tensor"), and, past that, each step's scalar metrics with
    ``axis=0`` ("Invalid reduction dimension 0 for input with 0 dimensions").

    Here the model, its compiled loss and metrics and its optimizer are built first from the dataset's element
    spec (``build_before_fit``); each step runs Keras's own ``train_step`` (``test_step`` for validation)
    under ``strategy.run``, so losses, gradients (summed across the replicas by the optimizer) and metrics are
    Keras's; an epoch's logs are the metrics read across the workers. The callbacks see what ``fit`` gives
    them: train begin (where a backup restores the epoch to resume from, ``model._initial_epoch``), epoch and
    batch begin/end, test begin/end around validation, ``val_``-prefixed logs, ``model.stop_training``; a step a
    callback puts in place at an epoch's start (``sam.SharpnessAware``) is traced then, as ``make_train_function``
    would.
    """
    strategy = model.distribute_strategy
    build_before_fit(model, train_ds.element_spec, strategy)
    train_batches = iter(strategy.experimental_distribute_dataset(train_ds.repeat()))
    val_batches = strategy.experimental_distribute_dataset(val_ds)

    def traced(step):
        @tf.function
        def train_step(iterator):
            strategy.run(step, args=(next(iterator),))

        return train_step

    @tf.function(reduce_retracing=True)
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    def results() -> dict:
        return {name: float(value) for name, value in model.get_metrics_result().items()}

    listed = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    listed.on_train_begin()
    first = getattr(model, "_initial_epoch", None) or 0
    starts = sorted(set(every_replica(first, strategy)))
    if len(starts) > 1:
        raise FacelabError(
            f"the workers resume from different epochs ({', '.join(map(str, starts))}): every worker must see the "
            f"chief's checkpoint folder ({CHECKPOINTS_DIR}, a shared file system), or set resume: false"
        )
    logs: dict = {}
    stepping = train_step = None
    for epoch in range(first, epochs):
        try:
            model.reset_metrics()
            listed.on_epoch_begin(epoch)
            if model.train_step != stepping:  # the first epoch, or a callback changed the step (SharpnessAware)
                stepping = model.train_step
                train_step = traced(stepping)
            for step in range(steps_per_epoch):
                listed.on_train_batch_begin(step)
                train_step(train_batches)
                listed.on_train_batch_end(step)
                if model.stop_training:
                    break
            logs = results()
            model.reset_metrics()
            listed.on_test_begin()
            for step, batch in enumerate(val_batches):
                listed.on_test_batch_begin(step)
                test_step(batch)
                listed.on_test_batch_end(step)
            val_logs = results()
        except KeyboardInterrupt:
            tell_the_cluster(f"was interrupted in epoch {epoch + 1}")
            raise
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as error:
            reason = re.sub(r"^\{\{.*?\}\}\s*", "", str(error).strip().splitlines()[0]).split("aborted by: ")[-1]
            raise FacelabError(
                f"a worker of the cluster stopped in epoch {epoch + 1} ({reason[:200]}); start every worker again: "
                f"training resumes from the last finished epoch ({epoch}) where resume is on"
            ) from None
        listed.on_test_end(val_logs)
        logs.update({f"val_{name}": value for name, value in val_logs.items()})
        listed.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    if epochs > 0:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    listed.on_train_end(logs)


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
