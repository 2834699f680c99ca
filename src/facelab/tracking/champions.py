"""The champion rules: which registered model version holds the alias ``champion``.

``evaluate`` calls ``promote`` for each model it scored; the MLflow calls go through
``facelab.tracking.registry`` (this module holds the policy only).

The rules (``promote``; the version's tag ``champion_decision`` names the rule that applied):

1. Each version is tagged with its test figure (``test.<metric>``) and what it was measured on:
   ``facelab.test_set`` (a hash of the test arrays), ``facelab.labels`` (the class list or the
   keypoint names), ``facelab.input_size``, and ``facelab.fingerprint``, a hash of the three.
2. "first champion": with no champion yet, the version becomes champion.
3. "same task": same fingerprint as the champion: compared by the number; the version is promoted
   when it is no worse (ties go to the newer version). A worse version stays out.
4. "task changed": a different fingerprint (new data, other classes, another input size) in a
   run of the user's own workspace: figures on different test sets are not compared; the
   champion moves to the best version measured on the new task (normally the version just
   trained), so the model the user just made for the new task is served.
5. "queued experiment": a run from DVC's queue (a temporary copy under ``.dvc/tmp/exps``) may
   promote by number within the champion's task (rule 3) but never change the task: such a
   version is kept out, and the reason says to apply the experiment and rerun in the workspace.

Race safety (a team sharing one MLflow server): the version's metric and fingerprint tags are
written first; the champion is then a pure function of the tags (``choose_champion``: the best
version among those with the champion's fingerprint, ties to the newer), the alias is set only
when it differs, and the tags are read once more after that write to correct the alias. Two
racing promotions on the same task therefore end on the better version, and a worse model never
stays champion. Changing the task is last-writer-wins: a team changes it deliberately.
"""

from __future__ import annotations

import hashlib
import math

from facelab.tracking import registry, store, uris

# Version tags: what a test figure was measured on, and the decision.
TEST_SET_TAG = "facelab.test_set"  # sha256 (prefix) of the test arrays
LABELS_TAG = "facelab.labels"  # the class list, or the keypoint names
INPUT_SIZE_TAG = "facelab.input_size"  # e.g. 96x96
FINGERPRINT_TAG = "facelab.fingerprint"  # hash of the three above
DECISION_TAG = "champion_decision"
# The rules (the decision tag names the one that applied).
RULE_FIRST, RULE_SAME_TASK = "first champion", "same task"
RULE_TASK_CHANGED, RULE_QUEUED = "task changed", "queued experiment"


def task_tags(test_set: str, labels: str, input_size: str) -> dict[str, str]:
    """The tags saying what a test figure was measured on, with their fingerprint (a hash of all three)."""
    tags = {TEST_SET_TAG: test_set, LABELS_TAG: labels, INPUT_SIZE_TAG: input_size}
    tags[FINGERPRINT_TAG] = hashlib.sha256("|".join(tags.values()).encode()).hexdigest()[: store.FINGERPRINT_CHARS]
    return tags


def _metric_value(tags: dict[str, str], metric: str) -> float | None:
    try:
        value = float(tags[f"test.{metric}"])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def choose_champion(
    versions: dict[int, dict[str, str]], fingerprint: str, metric: str, higher_is_better: bool
) -> int | None:
    """The champion as a pure function of the versions' tags: the best ``metric`` among the versions
    measured on ``fingerprint``, ties to the newer version; None when none qualifies."""
    best_key, best = None, None
    for version, tags in versions.items():
        value = _metric_value(tags, metric)
        if tags.get(FINGERPRINT_TAG) != fingerprint or value is None:
            continue
        key = (value if higher_is_better else -value, int(version))
        if best_key is None or key > best_key:
            best_key, best = key, int(version)
    return best


def _version_tags(name: str, fingerprint: str) -> dict[int, dict[str, str]]:
    found = registry.search_versions(f"name = '{name}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'")
    return {int(v.version): dict(v.tags) for v in found}


def _settle_champion(
    name: str, fingerprint: str, metric: str, higher_is_better: bool
) -> tuple[int | None, dict[int, dict[str, str]]]:
    """Point ``champion`` at ``choose_champion`` of the tags as stored now (only when it differs).

    Returns the chosen version and the tags it was chosen from."""
    versions = _version_tags(name, fingerprint)
    best = choose_champion(versions, fingerprint, metric, higher_is_better)
    current = registry.champion_version(name)
    if best is not None and (current is None or int(current.version) != best):
        registry.set_alias(name, uris.CHAMPION, best)
    return best, versions


def _what_changed(new: dict[str, str], old: dict[str, str]) -> str:
    names = {TEST_SET_TAG: "test set", LABELS_TAG: "classes/keypoints", INPUT_SIZE_TAG: "input size"}
    changed = [label for tag, label in names.items() if new.get(tag) != old.get(tag)]
    return ", ".join(changed) if changed else "fingerprint"


def promote(
    name: str,
    version: int,
    metric: str,
    value: float,
    higher_is_better: bool,
    task: dict[str, str],
    queued: bool = False,
) -> dict:
    """Tag ``version`` with its test figure and what it was measured on, then apply the champion rules.

    The rules (see the module docstring): same fingerprint as the champion -> by the number, no worse
    promotes; a different fingerprint -> "task changed": the new task's best version serves, unless
    the run is a queued experiment, which may not change the task. The tags are written first and
    the champion is then a pure function of them, re-read once after the alias is written, so two
    racing promotions end on the better version. Returns the decision (also the version's tag
    ``champion_decision``).
    """
    version = int(version)
    registry.tag_version(name, version, {f"test.{metric}": value, **task})
    current = registry.champion_version(name)
    fingerprint = task[FINGERPRINT_TAG]
    previous = None if current is None else int(current.version)
    current_tags = {} if current is None else dict(current.tags)
    if current is None:
        rule = RULE_FIRST
    elif current_tags.get(FINGERPRINT_TAG) == fingerprint:
        rule = RULE_SAME_TASK
    elif queued:
        rule = RULE_QUEUED
    else:
        rule = RULE_TASK_CHANGED

    if rule == RULE_QUEUED:
        champion = previous
        reason = (
            f"a queued experiment may not change the task ({_what_changed(task, current_tags)} differ "
            f"from champion v{previous}'s): apply it (dvc exp apply <name>) and run dvc repro in "
            "your workspace to make its model champion"
        )
    else:
        _settle_champion(name, fingerprint, metric, higher_is_better)
        # Once more after our own write: a promotion racing ours may have tagged its version meanwhile.
        champion, versions = _settle_champion(name, fingerprint, metric, higher_is_better)
        champion_value = _metric_value(versions.get(champion, {}), metric)
        reason = _reason(rule, version, champion, champion_value, metric, value, current_tags, task, previous)
    promoted = champion == version
    decision = {
        "model": name,
        "version": version,
        "promoted": promoted,
        "rule": rule,
        "reason": reason,
        "metric": metric,
        "value": value,
        "fingerprint": fingerprint,
        "previous_champion": previous,
        "champion": champion,
    }
    verdict = "promoted" if promoted else "kept out"
    registry.tag_version(name, version, {DECISION_TAG: f"{verdict} ({rule}): {reason}"})
    return decision


def _reason(
    rule: str,
    version: int,
    champion: int | None,
    champion_value: float | None,
    metric: str,
    value: float,
    current_tags: dict[str, str],
    task: dict[str, str],
    previous: int | None,
) -> str:
    if champion is None:
        return f"{metric} {value!r} is not a finite number"
    if champion != version:
        shown = f"{champion_value:.6g}" if champion_value is not None else "?"
        return f"{metric} {value:.6g} is worse than champion v{champion}'s {shown} on the same task"
    if rule == RULE_FIRST:
        return "no champion yet"
    if rule == RULE_TASK_CHANGED:
        return (
            f"measured on another task than champion v{previous} ({_what_changed(task, current_tags)} "
            "changed): not compared by number"
        )
    old = _metric_value(current_tags, metric)
    if previous == version:
        return "already champion"
    if old is None:
        return f"champion v{previous} has no recorded {metric}"
    return f"{metric} {value:.6g} is no worse than champion v{previous}'s {old:.6g}"
