"""`facelab metrics-gate`: compare the workspace's metrics with a baseline revision, for CI.

The data comes from DVC itself, the same as ``dvc metrics diff REV --all --json`` and
``dvc params diff REV --json`` (run in the repository root). The gated metrics in ``RULES`` are
then held to the tolerances in params.yaml's ``gate:`` section, and a Markdown report is printed
(and with ``--out`` written to a file, e.g. for a pull-request comment):

* a "Gate" table: metric | baseline | workspace | change | allowed | verdict;
* the metrics diff (the rows of ``dvc metrics diff --md``: changed metrics only);
* the params diff (the rows of ``dvc params diff --md``).

Metrics made in another precision are not compared: ``evaluate.json`` records the precision each
model computed in (``precision.keypoints`` / ``precision.emotion``; a baseline without it falls
back to ``metrics/train_<task>.json``'s ``precision``), and where the baseline's and the
workspace's differ (bfloat16 on one CPU, float32 on another) the task's gated metrics are reported
as "not comparable" instead of being held to the tolerance.

Exit status: 0 when no gated metric got worse than its tolerance allows, 1 when one did, and
for a baseline revision that does not exist or has no metrics, one line
"no baseline metrics at REV: nothing to compare" and 0 (2 with ``strict``).
A missing or unreadable workspace metrics file is a FacelabError naming it.

What DVC 3.67 prints, which this module relies on:
``dvc metrics diff REV --json --all`` -> ``{"metrics/evaluate.json": {"keypoints.rmse_px":
{"old": 2.0, "new": 2.2, "diff": 0.2}, ...}}``: flattened dotted names, numbers only (lists
such as per_keypoint_rmse_px are skipped), ``"old": null`` (and no "diff") where the baseline
lacks the file or the metric, ``"new": null`` where the workspace does, ``{}`` when there is
nothing at all. An unknown revision exits 255 ("ERROR: unknown Git revision 'REV'"), so the
revision is checked with git first. A workspace file that is missing or is not JSON is only a
warning on stderr (exit 0, ``"new": null``), so that file is checked here before DVC runs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from facelab.atomic import write_text
from facelab.config import PARAMS_FILE, SCHEMA, _validate, repo_root
from facelab.errors import FacelabError

METRICS_FILE = "metrics/evaluate.json"  # relative to the repository root, as dvc.yaml names it
TRAIN_METRICS_FILE = "metrics/train_{task}.json"  # older baselines: the precision a task trained in
GATE_SECTION = "gate"  # params.yaml section with the baseline and tolerances
LOWER, HIGHER = "lower", "higher"  # which way is better
RELATIVE, ABSOLUTE = "relative", "absolute"


class Rule(NamedTuple):
    better: str  # LOWER or HIGHER
    tolerance: str  # key in params.yaml gate:
    kind: str  # RELATIVE: a fraction of the baseline value; ABSOLUTE: in the metric's units


# Gated metrics of METRICS_FILE: one line each.
RULES: dict[str, Rule] = {
    "keypoints.rmse_px": Rule(LOWER, "keypoints_rmse_px_rel", RELATIVE),
    "emotion.f1_weighted": Rule(HIGHER, "emotion_f1_weighted_abs", ABSOLUTE),
    "emotion.accuracy": Rule(HIGHER, "emotion_accuracy_abs", ABSOLUTE),
}

EXIT_PASSED, EXIT_REGRESSED, EXIT_NO_BASELINE_STRICT = 0, 1, 2
PRECISION = 5  # digits after the decimal point, as `dvc metrics diff --md` rounds
EPSILON = 1e-9  # float noise forgiven at exactly the tolerance (0.8 - 0.79 > 0.01 in floats)
DVC_TIMEOUT_S = 600


class Check(NamedTuple):
    metric: str
    rule: Rule
    old: float | None
    new: float
    limit: float | None  # how much worse it may get, in the metric's units
    regressed: bool
    incomparable: str | None = None  # why old and new cannot be compared (e.g. different precisions)


# ---------------------------------------------------------------------------------------------
# Inputs: tolerances, the workspace metrics file, and DVC's diffs.


def load_gate_settings(params_file: str | os.PathLike = PARAMS_FILE) -> dict:
    """The validated ``gate:`` section of ``params_file`` (the rest of the file is not needed here)."""
    path = Path(params_file)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FacelabError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as exc:
        raise FacelabError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(params, dict) or GATE_SECTION not in params:
        raise FacelabError(f"{path}: missing parameter {GATE_SECTION}")
    _validate(params[GATE_SECTION], SCHEMA[GATE_SECTION], GATE_SECTION, path)
    return params[GATE_SECTION]


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def read_workspace_metrics(root: Path) -> dict:
    """The workspace's metrics file, parsed; a FacelabError naming it when it is missing or broken."""
    path = root / METRICS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FacelabError(
            f"{_shown(path)}: workspace metrics file not found (run the pipeline first: dvc repro)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FacelabError(f"{_shown(path)}: workspace metrics file is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FacelabError(f"{_shown(path)}: workspace metrics file must hold a JSON object")
    return data


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def revision_exists(rev: str, root: Path) -> bool:
    """Whether git knows ``rev`` as a commit (DVC would exit 255 on it otherwise)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=root, capture_output=True, text=True
        )
    except FileNotFoundError:
        raise FacelabError("git not found: the metrics gate compares with a git revision") from None
    return done.returncode == 0


def dvc_diff(what: str, rev: str, root: Path) -> dict[str, dict[str, dict]]:
    """``dvc {metrics|params} diff REV --json`` (metrics with --all), parsed: {path: {name: {old, new[, diff]}}}."""
    command = [sys.executable, "-m", "dvc", what, "diff", rev, "--json"] + (["--all"] if what == "metrics" else [])
    try:
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=DVC_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FacelabError(f"dvc {what} diff {rev}: no answer after {DVC_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise FacelabError(
            f"dvc {what} diff {rev} failed (exit {done.returncode}): {lines[-1] if lines else 'no message'}"
        )
    try:
        return json.loads(done.stdout) if done.stdout.strip() else {}
    except json.JSONDecodeError:
        raise FacelabError(
            f"dvc {what} diff {rev} --json printed something other than JSON: {done.stdout.strip()[:200]!r}"
        ) from None


# ---------------------------------------------------------------------------------------------
# The verdicts.


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def precisions(metrics: dict | None, read_train: Any = None) -> dict[str, str | None]:
    """task -> the precision its metrics were made in: ``metrics["precision"]``, else ``read_train(task)``."""
    recorded = (metrics or {}).get("precision")
    recorded = recorded if isinstance(recorded, dict) else {}
    found = {}
    for task in ("keypoints", "emotion"):
        value = recorded.get(task)
        if value is None and read_train is not None:
            value = (read_train(task) or {}).get("precision")
        found[task] = value if isinstance(value, str) else None
    return found


def read_at(rev: str, path: str, root: Path) -> dict | None:
    """A JSON file as committed at ``rev`` (None when it is not there or not JSON)."""
    done = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def check_metrics(
    file_diff: dict[str, dict], tolerances: dict, precision: dict[str, tuple[str | None, str | None]] | None = None
) -> list[Check]:
    """One Check per gated metric, from the METRICS_FILE part of ``dvc metrics diff --all``.

    ``precision``: task -> (baseline's, workspace's) precision; where both are known and differ,
    the task's metrics are not comparable (never a regression).
    """
    checks = []
    for metric, rule in RULES.items():
        entry = file_diff.get(metric, {})
        old, new = entry.get("old"), entry.get("new")
        if not _number(new):
            raise FacelabError(
                f"{METRICS_FILE}: gated metric {metric} is missing or not a number in the workspace (found {new!r})"
            )
        if not _number(old):
            checks.append(Check(metric, rule, None, new, None, False))
            continue
        old_precision, new_precision = (precision or {}).get(metric.split(".")[0], (None, None))
        if old_precision and new_precision and old_precision != new_precision:
            checks.append(Check(metric, rule, old, new, None, False, f"precision {old_precision} vs {new_precision}"))
            continue
        tolerance = tolerances[rule.tolerance]
        limit = tolerance * abs(old) if rule.kind == RELATIVE else tolerance
        worse_by = new - old if rule.better == LOWER else old - new
        checks.append(Check(metric, rule, old, new, limit, worse_by > limit + EPSILON))
    return checks


# ---------------------------------------------------------------------------------------------
# Markdown.


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = round(value, PRECISION)
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _signed(value: float) -> str:
    value = round(value, PRECISION)
    return f"{'+' if value > 0 else ''}{value:g}" if value != 0 else "0"


def _change(old: float | None, new: float) -> str:
    if old is None:
        return "-"
    text = _signed(new - old)
    if old != 0 and new != old:
        text += f" ({(new - old) / abs(old) * 100:+.1f} %)"
    return text


def _allowed(check: Check, tolerances: dict) -> str:
    if check.limit is None:
        return "-"
    sign = "+" if check.rule.better == LOWER else "-"
    text = f"{sign}{round(check.limit, PRECISION):g}"
    if check.rule.kind == RELATIVE:
        text += f" ({tolerances[check.rule.tolerance] * 100:g} % of baseline)"
    return text


def _verdict(check: Check) -> str:
    if check.incomparable:
        return f"➖ not comparable ({check.incomparable})"
    if check.old is None:
        return "➖ new (no baseline)"
    if check.regressed:
        return "❌ regressed"
    if check.new == check.old:
        return "✅ unchanged"
    better = check.new < check.old if check.rule.better == LOWER else check.new > check.old
    return "✅ improved" if better else "✅ within tolerance"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def render(rev: str, checks: list[Check], tolerances: dict, metrics: dict, params: dict) -> str:
    """The whole report: verdict line, Gate table, metrics diff and params diff."""
    failed = [c for c in checks if c.regressed]
    lines = [f"## facelab metrics gate: {'❌ failed' if failed else '✅ passed'} (workspace vs `{rev}`)", ""]
    for c in failed:
        lines.append(
            f"- ❌ **{c.metric}** regressed: {_fmt(c.old)} → {_fmt(c.new)}, a change of "
            f"{_change(c.old, c.new)} where {_allowed(c, tolerances)} is allowed ({c.rule.better} is better)"
        )
    for c in checks:
        if c.incomparable:
            lines.append(
                f"- ➖ **{c.metric}** not compared: the metrics were made in another precision "
                f"({c.incomparable}); rerun one side with the other's `train_*.precision`"
            )
    if not failed:
        lines.append("No gated metric got worse than its tolerance (params.yaml `gate:`) allows.")
    lines += ["", "### Gate", ""]
    lines += _table(
        ["Metric", f"Baseline ({_fmt(rev)})", "Workspace", "Change", "Allowed", "Verdict"],
        [
            [
                f"{c.metric} ({c.rule.better} is better)",
                _fmt(c.old),
                _fmt(c.new),
                _change(c.old, c.new),
                _allowed(c, tolerances),
                _verdict(c),
            ]
            for c in checks
        ],
    )

    lines += ["", f"### Metrics (`dvc metrics diff {rev}`)", ""]
    rows = [
        [_fmt(path), _fmt(name), _fmt(e.get("old")), _fmt(e.get("new")), _fmt(e.get("diff"))]
        for path, entries in sorted(metrics.items())
        for name, e in sorted(entries.items())
        if e.get("old") != e.get("new")
    ]
    lines += _table(["Path", "Metric", _fmt(rev), "workspace", "Change"], rows) if rows else ["No metric changed."]

    lines += ["", f"### Params (`dvc params diff {rev}`)", ""]
    rows = [
        [_fmt(path), _fmt(name), _fmt(e.get("old")), _fmt(e.get("new"))]
        for path, entries in sorted(params.items())
        for name, e in sorted(entries.items())
    ]
    lines += _table(["Path", "Param", _fmt(rev), "workspace"], rows) if rows else ["No parameter changed."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def run(
    baseline: str | None = None,
    params_file: str | os.PathLike = PARAMS_FILE,
    out: str | os.PathLike | None = None,
    strict: bool = False,
    root: Path | None = None,
) -> int:
    """Print (and with ``out`` write) the report; return the exit status (see the module docstring)."""
    tolerances = load_gate_settings(params_file)
    rev = baseline or tolerances["baseline"]
    root = Path(root) if root is not None else repo_root()
    workspace = read_workspace_metrics(root)  # DVC only warns about a missing or broken one

    reason = None
    if not revision_exists(rev, root):
        reason = "unknown git revision; in CI, check out the history with fetch-depth: 0"
    else:
        metrics = dvc_diff("metrics", rev, root)
        file_diff = metrics.get(METRICS_FILE) or metrics.get(str(Path(METRICS_FILE)))
        if file_diff is None:
            raise FacelabError(f"{METRICS_FILE}: DVC does not report it: is it declared as a metric in dvc.yaml?")
        old_precision = precisions(
            read_at(rev, METRICS_FILE, root), lambda task: read_at(rev, TRAIN_METRICS_FILE.format(task=task), root)
        )
        new_precision = precisions(workspace, lambda task: _read_json(root / TRAIN_METRICS_FILE.format(task=task)))
        checks = check_metrics(
            file_diff, tolerances, {task: (old_precision[task], new_precision[task]) for task in old_precision}
        )
        if all(c.old is None for c in checks):
            reason = f"{METRICS_FILE} has none of the gated metrics there"

    if reason is not None:
        report = f"no baseline metrics at {rev}: nothing to compare ({reason})\n"
        status = EXIT_NO_BASELINE_STRICT if strict else EXIT_PASSED
    else:
        report = render(rev, checks, tolerances, metrics, dvc_diff("params", rev, root))
        status = EXIT_REGRESSED if any(c.regressed for c in checks) else EXIT_PASSED
    print(report, end="")
    if out is not None:
        write_text(out, report)
    return status
