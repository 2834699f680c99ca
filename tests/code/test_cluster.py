"""TF_CONFIG from a host list (facelab.nn.tf_config) and the line a worker that never joined ends with
(facelab.nn.distributed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from facelab.errors import FacelabError
from facelab.nn import tf_config
from tests.conftest import REPO


def test_tf_config_names_the_cluster_and_this_worker():
    assert tf_config.tf_config("a:12345, b:12345", 1) == {
        "cluster": {"worker": ["a:12345", "b:12345"]},
        "task": {"type": "worker", "index": 1},
    }
    assert tf_config.tf_config(["[::1]:5000"], 0)["cluster"]["worker"] == ["[::1]:5000"]


@pytest.mark.parametrize(
    ("hosts", "index", "error"),
    [
        ("", 0, "no host given"),
        ("a", 0, "'a' is not host:port"),
        ("a:0", 0, "'a:0' is not host:port"),
        ("a:x", 0, "'a:x' is not host:port"),
        (":5", 0, "':5' is not host:port"),
        ("a:1,a:1", 0, "a:1 given more than once"),
        ("a:1,b:1", 2, "--index: 2 is not a place in --hosts (0 to 1)"),
        ("a:1,b:1", -1, "--index: -1"),
    ],
)
def test_bad_hosts_or_index_are_one_line(hosts, index, error):
    with pytest.raises(FacelabError, match=error.replace("(", r"\(").replace(")", r"\)")):
        tf_config.tf_config(hosts, index)


def test_the_chief_is_the_first_host():
    from facelab.nn import distributed

    config = tf_config.tf_config("a:1,b:1,c:1", 0)
    chiefs = [
        distributed.is_chief_task("worker", i, config["cluster"]) for i in range(len(config["cluster"]["worker"]))
    ]
    assert chiefs == [True, False, False]


def test_command_line_prints_json_or_an_export_line():
    cmd = [sys.executable, "-m", "facelab.nn.tf_config", "--hosts", "h1:12345,h2:12345", "--index", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert json.loads(out)["task"] == {"type": "worker", "index": 1}
    line = subprocess.run([*cmd, "--export"], capture_output=True, text=True, check=True, cwd=REPO).stdout
    shown = subprocess.run(["bash", "-c", f'{line}\nprintf %s "$TF_CONFIG"'], capture_output=True, text=True).stdout
    assert json.loads(shown) == json.loads(out)
    bad = subprocess.run([*cmd[:-1], "5"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1 and bad.stderr.strip() == "facelab: error: --index: 5 is not a place in --hosts (0 to 1)"


def test_a_missing_worker_is_named_from_tensorflows_barrier_message():
    from facelab.nn import distributed

    # the chief's DeadlineExceededError when worker 1 never registered (TensorFlow 2.21, measured)
    message = (
        "Barrier timed out. Id: [Init]Wait_for_all_tasks_to_register::0. This usually happens because a task "
        "triggered the barrier too early or too slowly.\n# of tasks that reached the barrier: 1/2.\nThe first "
        "task at the barrier: /job:worker/replica:0/task:0. Some timed out task names:\n"
        "/job:worker/replica:0/task:1\n\n\nRPC: /tensorflow.CoordinationService/RegisterTask"
    )
    workers = {"worker": ["a:1", "b:2", "c:3"]}
    assert distributed._missing_workers(message, workers, ("worker", 0)) == "worker 1 (b:2)"
    assert distributed._missing_workers("Deadline Exceeded", workers, ("worker", 1)) == ""  # the leader never answered
