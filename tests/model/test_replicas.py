"""Sharpness-aware steps (``facelab.nn.sam``) and the weight average (``callbacks.WeightAverage``) on two replicas
(``FACELAB_CPU_DEVICES=2``: a ``MirroredStrategy`` over two logical CPU devices, in a process of its own,
``tests/support/two_replicas.py``): both replicas hold the same weights, and those are one device's on the same
global batches; through Keras's ``fit`` and through the fit loop of several workers (``fit_replicated``)."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelab.sandbox import free_ports

pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[2]
# How far two replicas' weights may be from one device's after the same steps on the same global batches: float
# rounding (the replicas sum two half-batch gradients). Measured: 6e-8 at most after 4 SAM steps and after 6
# steps with the average; replicas that perturb by their own half-batch gradient end 0.012 away.
TOLERANCE = 1e-5
SAME = 1e-6  # how far the two replicas' copies of a weight may be apart (measured: 0, they are bit-equal)
WORKERS_TIMEOUT_S = 600  # two worker processes on 2 shared cores


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicas") / "runs.pickle"
    env = {**os.environ, "FACELAB_CPU_DEVICES": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.two_replicas", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return pickle.loads(out.read_bytes())


def _replica(weights, index: int) -> list:
    """One replica's copy of every weight (``weights``: a list over the weights of lists over the replicas)."""
    return [copies[index] for copies in weights]


def _distance(a: list, b: list) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _replicas_apart(weights) -> float:
    return _distance(_replica(weights, 0), _replica(weights, 1))


def test_sam_steps_keep_both_replicas_equal(runs):
    two = runs["sam"]["two"]
    assert len(two["final"][0]) == 2  # two replicas
    for weights in [*two["validated"], two["final"]]:
        assert _replicas_apart(weights) <= SAME


def test_sam_steps_on_two_replicas_are_one_devices_on_the_global_batch(runs):
    two, one = runs["sam"]["two"], runs["sam"]["one"]
    assert _distance(_replica(two["final"], 0), _replica(one["final"], 0)) <= TOLERANCE
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)  # the loss of the whole batch, not a replica's


def test_replicas_perturbing_by_their_own_gradient_are_not(runs):
    """What the step did before its first gradient was summed: each replica moves to the worst case of its own
    half of the batch. The replicas stay close to each other, but far from the SAM step on the global batch."""
    unsynced, one = runs["sam_unsynced"]["two"], runs["sam"]["one"]
    assert _distance(_replica(unsynced["final"], 0), _replica(one["final"], 0)) > TOLERANCE


def test_the_weight_average_on_two_replicas_is_one_devices(runs):
    two, one = runs["average"]["two"], runs["average"]["one"]
    assert len(two["validated"]) == len(one["validated"]) == 3
    for replicas, device in zip(two["validated"], one["validated"]):  # the average, as each epoch validates it
        assert _replicas_apart(replicas) <= SAME
        assert _distance(_replica(replicas, 0), _replica(device, 0)) <= TOLERANCE
    assert _distance(_replica(two["validated"][-1], 0), _replica(two["final"], 0)) > TOLERANCE  # not the raw weights
    assert _distance(_replica(two["final"], 0), _replica(one["final"], 0)) <= TOLERANCE


def test_the_fit_loop_of_several_workers_takes_sam_steps_from_the_epoch_they_start(runs):
    """``fit_replicated`` with SAM steps in the last of 3 epochs and the weight average, against one device (Keras's
    ``fit``); and against the same loop without SAM steps: a loop that kept its first traced step ends there."""
    two, one, plain = runs["workers_loop"]["two"], runs["workers_loop"]["one"], runs["workers_loop_plain"]["two"]
    for replicas, device in zip([*two["validated"], two["final"]], [*one["validated"], one["final"]]):
        assert _replicas_apart(replicas) <= SAME
        assert _distance(_replica(replicas, 0), _replica(device, 0)) <= TOLERANCE
    assert _distance(_replica(two["final"], 0), _replica(plain["final"], 0)) > TOLERANCE


@pytest.mark.e2e
def test_two_workers_take_one_devices_sam_steps_and_average(runs, tmp_path):
    """Two worker processes on 127.0.0.1 (``MultiWorkerMirroredStrategy``, one replica each: the gradients summed
    across the processes), ``tests/support/two_replicas.py``'s ``WORKER_RUNS``: SAM steps in every epoch; SAM steps
    in the last epoch with the weight average. Each worker holds one device's weights, and the same."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    env = {key: value for key, value in os.environ.items() if key != "FACELAB_CPU_DEVICES"}
    outs = [tmp_path / f"worker{index}.pickle" for index in (0, 1)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.two_replicas", str(out)],
            cwd=REPO,
            env={
                **env,
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                "FACELAB_WORKER_TIMEOUT": "120",
                "TF_CPP_MIN_LOG_LEVEL": "2",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index, out in enumerate(outs)
    ]
    try:
        outputs = [worker.communicate(timeout=WORKERS_TIMEOUT_S)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [w.returncode for w in workers] == [0, 0], "\n---\n".join(o[-3000:] for o in outputs)
    first, second = (pickle.loads(out.read_bytes()) for out in outs)
    for name in ("sam", "workers_loop"):
        one = runs[name]["one"]
        for a, b, device in zip(
            [*first[name]["validated"], first[name]["final"]],
            [*second[name]["validated"], second[name]["final"]],
            [*one["validated"], one["final"]],
        ):
            assert _distance(_replica(a, 0), _replica(b, 0)) <= SAME, name
            assert _distance(_replica(a, 0), _replica(device, 0)) <= TOLERANCE, name
