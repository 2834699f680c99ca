"""``TF_CONFIG`` for training on several machines, from the list of their addresses.

Every machine of a multi-worker training (``docs/devices.md``) runs the training stage with the same cluster
in ``TF_CONFIG`` and its own place in it::

    python -m facelab.nn.tf_config --hosts host1:12345,host2:12345 --index 0     # on host1, the chief
    python -m facelab.nn.tf_config --hosts host1:12345,host2:12345 --index 1     # on host2
    eval "$(python -m facelab.nn.tf_config --hosts host1:12345,host2:12345 --index 1 --export)"

The first host is worker 0, the chief (TensorFlow's rule when the cluster names no ``chief`` task): the one that
writes the model, the MLflow run and the registry version (``distributed.is_chief``). No TensorFlow import here.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from facelab.errors import FacelabError

ENV = "TF_CONFIG"


def parse_hosts(hosts: str | Sequence[str]) -> list[str]:
    """``host:port`` addresses (a comma-separated string or a list), checked: a port in 1-65535, none twice."""
    items = [h.strip() for h in (hosts.split(",") if isinstance(hosts, str) else hosts)]
    items = [h for h in items if h]
    if not items:
        raise FacelabError("--hosts: no host given (host1:port,host2:port,...)")
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise FacelabError(f"--hosts: {item!r} is not host:port (a port from 1 to 65535)")
    repeated = sorted({h for h in items if items.count(h) > 1})
    if repeated:
        raise FacelabError(f"--hosts: {', '.join(repeated)} given more than once: each worker needs its own port")
    return items


def tf_config(hosts: str | Sequence[str], index: int) -> dict:
    """The ``TF_CONFIG`` of worker ``index`` (0: the chief) in the cluster of ``hosts``."""
    workers = parse_hosts(hosts)
    if not 0 <= index < len(workers):
        raise FacelabError(f"--index: {index} is not a place in --hosts (0 to {len(workers) - 1})")
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}


def render(hosts: str | Sequence[str], index: int, export: bool = False) -> str:
    """The JSON, or with ``export`` a shell line that sets ``TF_CONFIG`` to it."""
    text = json.dumps(tf_config(hosts, index), separators=(",", ":"))
    return f"export {ENV}={shlex.quote(text)}" if export else text


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--hosts", required=True, help="every worker's host:port, comma-separated; the first is the chief"
    )
    parser.add_argument("--index", type=int, required=True, help="this machine's place in --hosts (0: the chief)")
    parser.add_argument("--export", action="store_true", help="print a shell line `export TF_CONFIG=...`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from facelab.runner import guarded

    parser = add_arguments(
        argparse.ArgumentParser(prog="python -m facelab.nn.tf_config", description=__doc__.splitlines()[0])
    )
    args = parser.parse_args(argv)
    return guarded(lambda: print(render(args.hosts, args.index, args.export)))


if __name__ == "__main__":
    sys.exit(main())
