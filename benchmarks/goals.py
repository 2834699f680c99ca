"""The goals of the speed issue, met or missed: a ledger the benchmark scripts add to (imported as `goals`).

Each benchmark script calls ``record(goal, measured, met)`` for every goal it measures. When
``run_all.py`` runs the scripts it sets LEDGER_ENV to a file; ``record`` appends one JSON line to
it, and ``run_all.py`` turns the lines into the goals table at the top of RESULTS.md
(``table``). Run on its own, a script records nothing: its Markdown tables say the same.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

LEDGER_ENV = "FACELAB_BENCH_GOALS"


def record(goal: str, measured: str, met: bool | None, note: str = "") -> None:
    """Add one goal to the ledger (met: True, False, or None when it is not a pass/fail figure)."""
    ledger = os.environ.get(LEDGER_ENV)
    if not ledger:
        return
    with open(ledger, "a") as fh:
        fh.write(json.dumps({"goal": goal, "measured": measured, "met": met, "note": note}) + "\n")


def table(ledger: Path) -> str:
    """The ledger's goals as a Markdown table (empty when nothing was recorded)."""
    if not ledger.exists():
        return ""
    rows = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    if not rows:
        return ""
    verdict = {True: "met", False: "**missed**", None: "-"}
    lines = [
        "## Goals of the speed issue, from this run",
        "",
        "| goal | measured | verdict | note |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {r['goal']} | {r['measured']} | {verdict[r['met']]} | {r['note']} |" for r in rows]
    return "\n".join(lines) + "\n"
