"""facelab.nn.distributed' rules without a cluster: who is chief, batch and learning rate per replica, sharding,
where a non-chief worker writes. (Training on two devices and two workers: tests/e2e/test_devices.py.)"""

import json

import pytest

tf = pytest.importorskip("tensorflow")

from facelab.nn import distributed  # noqa: E402


@pytest.mark.parametrize(
    "task_type, task_id, cluster, chief",
    [
        (None, None, {}, True),  # no cluster: the one process
        ("worker", 0, {"worker": ["a:1", "b:1"]}, True),  # no chief task: worker 0
        ("worker", 1, {"worker": ["a:1", "b:1"]}, False),
        ("chief", 0, {"chief": ["a:1"], "worker": ["b:1"]}, True),
        ("worker", 0, {"chief": ["a:1"], "worker": ["b:1"]}, False),  # a chief task exists: worker 0 is not it
    ],
)
def test_the_chief_is_task_chief_or_worker_0(task_type, task_id, cluster, chief):
    assert distributed.is_chief_task(task_type, task_id, cluster) is chief


def test_tf_config_without_a_cluster_is_no_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distributed.cluster_config() is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}, "task": {}}))
    assert distributed.cluster_config() is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}))
    assert distributed.cluster_config()["cluster"] == {"worker": ["a:1"]}


class Replicas:
    """Stands in for a strategy where only num_replicas_in_sync is read."""

    def __init__(self, n):
        self.num_replicas_in_sync = n


def test_one_replica_keeps_params_batch_lr_and_dataset():
    one = tf.distribute.get_strategy()
    assert distributed.global_batch_size(32, one) == 32
    assert distributed.scaled_learning_rate(0.001, one) == 0.001
    dataset = tf.data.Dataset.range(4)
    assert distributed.shard_by_data(dataset, one) is dataset
    assert distributed.is_chief(one)


def test_several_replicas_scale_batch_and_lr_and_shard_by_data():
    four = Replicas(4)
    assert distributed.global_batch_size(32, four) == 128
    assert distributed.scaled_learning_rate(0.001, four) == pytest.approx(0.004)
    sharded = distributed.shard_by_data(tf.data.Dataset.range(4), four)
    assert sharded.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


def test_a_non_chief_worker_writes_to_a_private_copy_removed_at_the_end(tmp_path):
    shared = tmp_path / "checkpoints" / "train_keypoints-abc"
    (shared / "backup").mkdir(parents=True)
    (shared / "backup" / "state.json").write_text("{}")
    assert distributed.worker_folder(shared, chief=True) == shared
    private = distributed.worker_folder(shared, chief=False)
    assert private != shared and not private.is_relative_to(tmp_path)
    assert (private / "backup" / "state.json").exists()  # resumes from the chief's state when it sees it
    (private / "history.csv").write_text("epoch\n")
    distributed.release_worker_folder(private, chief=False)
    assert not private.parent.exists()
    assert sorted(p.name for p in shared.rglob("*")) == ["backup", "state.json"]  # the chief's folder untouched


def test_validation_faces_split_evenly_across_replicas():
    assert distributed.evenly_split(13, tf.distribute.get_strategy()) == 13  # one device: every face, as before
    assert distributed.evenly_split(13, Replicas(2)) == 12
    assert distributed.evenly_split(1000, Replicas(4)) == 1000
    assert distributed.evenly_split(3, Replicas(4)) == 0
