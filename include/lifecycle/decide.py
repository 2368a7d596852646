"""Sections 6 and 8: "meets the business goal?" and, when not, which remedy to try next.

Every decision carries its reason in words. The remedy is picked from evidence, as the
seed note says: train and validation scores far apart (or too few positives) -> augment
the data; close to the goal -> tune the model; both scores low -> augment the features.
A remedy that cannot change the candidate (no feature group left; no more history: lookback at
its maximum, a single file, no partition outside the window; oversampling that adds no rows; a
search grid whose trials were all trained already) falls through to the next one, and the plan
says so. No round repeats an earlier round's plan; when no remedy can change the candidate, the
loop ends (:data:`NO_REMEDY`).

Every round's selection compares its trials with those of the earlier rounds scored on the same
rows (:func:`select_across_rounds`), so the candidate a round evaluates is the best so far, never
a later round's worse one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from include.lifecycle.spec import Spec

TUNE, AUGMENT_FEATURES, AUGMENT_DATA = "tune_model", "augment_features", "augment_data"
REMEDIES = (TUNE, AUGMENT_FEATURES, AUGMENT_DATA)
# when the diagnosed remedy cannot change the candidate, the next ones are tried in this order
FALL_THROUGH = {
    AUGMENT_FEATURES: (AUGMENT_FEATURES, TUNE, AUGMENT_DATA),
    TUNE: (TUNE, AUGMENT_FEATURES, AUGMENT_DATA),
    AUGMENT_DATA: (AUGMENT_DATA, AUGMENT_FEATURES, TUNE),
}
NO_REMEDY = "no remedy can change the candidate"
# oversampling raises a class below this share of the majority class to it (include/jobs/train.py
# --resample-ratio, features.apply_resampling): a minority already above it gets no extra rows
RESAMPLE_RATIO = 0.1


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def initial_plan(spec: Spec, *, dataset_rel: str, lookback_days: int) -> dict[str, Any]:
    fams = list(spec.training.initial_candidates or [c.family for c in spec.training.candidates])
    return {
        "round": 1,
        "dataset_rel": dataset_rel,
        "lookback_days": lookback_days,
        "feature_groups": list(spec.features.initial),
        "resample": "none",
        "families": fams,
        "trials_per_family": spec.training.trials_per_candidate,
        "wide_search": False,
        "remedy": None,
        "reason": "first round: the spec's initial feature groups and candidates",
    }


def goal_decision(
    spec: Spec, *, check: dict[str, Any], comparison: dict[str, Any] | None, force: bool = False
) -> dict[str, Any]:
    """The gate: deploy when the goal is met and the champion is no better.

    ``check`` is the candidate's goal check on the test rows (``assessment.goal_check``: the value
    at the deployed threshold, its interval, the realised alert rate within ``max_alert_rate``);
    ``comparison`` the paired comparison with the champion on the rows it never saw
    (``assessment.compare_with_champion``). The rule:

    * goal met: the value meets the target and the alert rate stays within capacity;
    * no champion: nothing to compare; a fair comparison: the candidate is no worse when the lower
      bound of the paired difference (candidate - champion, positive = better) is at least
      ``-champion_margin``; no fair comparison: the goal decides alone; in any case a champion
      trained on newer data than the candidate is kept (an older model never silently replaces a
      newer one, e.g. a backfill of an earlier date);
    * ``force`` (the run's force_deploy param) deploys anyway and says so.
    """
    goal = spec.goal
    op = ">=" if goal.higher_is_better else "<="
    ci = check.get("interval") or {}
    parts = [
        f"{goal.metric} {_fmt(check['value'])} [{_fmt(ci.get('low'))}, {_fmt(ci.get('high'))}] "
        f"{'meets' if goal.met_by(check['value']) else 'misses'} the goal {op} {goal.target}"
    ]
    if check.get("within_capacity") is not None:
        parts.append(
            f"alert rate {check['alert_rate']:.3%} {'within' if check['within_capacity'] else 'ABOVE'} "
            f"the capacity {goal.max_alert_rate:.3%}"
        )
    comparison = comparison or {}
    champion = comparison.get("champion_version")
    if champion is None:
        no_worse = True
        parts.append(comparison.get("note") or "no champion yet")
    elif comparison.get("newer_data"):
        no_worse = False
        parts.append(
            f"champion v{champion} was trained on newer data than this candidate: it is kept (an older model "
            f"never replaces a newer one){'; ' + comparison['note'] if comparison.get('note') else ''}"
        )
    elif comparison.get("fair"):
        diff = comparison["difference"]
        no_worse = diff["low"] >= -goal.champion_margin
        parts.append(
            f"against champion v{comparison.get('compared_version', champion)} on {comparison['rows']} rows it never "
            f"saw: {_fmt(comparison['candidate'])} vs {_fmt(comparison['champion'])}, difference "
            f"{_fmt(diff['value'])} [{_fmt(diff['low'])}, {_fmt(diff['high'])}] ({'no worse' if no_worse else 'worse'}: "
            f"lower bound {'>=' if no_worse else '<'} -{goal.champion_margin})"
        )
    else:
        no_worse = True
        parts.append(f"no fair comparison with champion v{champion} ({comparison.get('note')}): the goal decides")
    meets = bool(check["met"])
    decision = {
        "meets_goal": meets,
        "no_worse_than_champion": bool(no_worse),
        "deploy": bool(meets and no_worse),
        "candidate": check["value"],
        "champion": comparison.get("champion"),
        "reason": "; ".join(parts),
    }
    if force and not decision["deploy"]:
        decision.update(
            deploy=True, forced=True, reason=decision["reason"] + "; FORCED by the run's force_deploy param"
        )
    return decision


def diagnose(
    spec: Spec,
    *,
    train_score: float,
    validation_score: float,
    train_positives: int | None,
    test_score: float | None = None,
) -> dict[str, Any]:
    """Pick the remedy from the evidence of the best trial of the round.

    Rules in order: too few positives -> augment_data; train/validation gap above
    ``diagnosis.max_gap`` -> augment_data; validation meets the goal but test does not (the
    selection does not hold on unseen days) -> augment_data; validation within ``goal.near_goal``
    of the target -> tune_model; otherwise both scores are low -> augment_features.
    """
    goal, rule = spec.goal, spec.diagnosis
    hib = goal.higher_is_better
    gap = (train_score - validation_score) if hib else (validation_score - train_score)
    shortfall = (goal.target - validation_score) if hib else (validation_score - goal.target)
    rel_short = shortfall / abs(goal.target) if goal.target else shortfall
    evidence = {
        "train_score": train_score,
        "validation_score": validation_score,
        "gap": gap,
        "relative_shortfall": rel_short,
        "train_positives": train_positives,
        "test_score": test_score,
    }
    if spec.is_binary and train_positives is not None and train_positives < rule.min_train_positives:
        return {
            "remedy": AUGMENT_DATA,
            "evidence": evidence,
            "reason": f"only {train_positives} positives in training (< {rule.min_train_positives}): collect more "
            f"history and resample the minority class",
        }
    if gap > rule.max_gap:
        return {
            "remedy": AUGMENT_DATA,
            "evidence": evidence,
            "reason": f"train {_fmt(train_score)} vs validation {_fmt(validation_score)}: gap {gap:.3f} > "
            f"{rule.max_gap} - the model does not generalise; add history and resample",
        }
    if test_score is not None and shortfall <= 0 and not goal.met_by(test_score):
        return {
            "remedy": AUGMENT_DATA,
            "evidence": evidence,
            "reason": f"validation {_fmt(validation_score)} meets the goal {goal.target} but test {_fmt(test_score)} "
            f"does not: the choice does not hold on unseen data; add history and resample",
        }
    if rel_short <= goal.near_goal:
        return {
            "remedy": TUNE,
            "evidence": evidence,
            "reason": f"validation {_fmt(validation_score)} is within {goal.near_goal:.0%} of the goal "
            f"{goal.target} (short by {rel_short:.1%}): tune - wider search, more trials, all families",
        }
    return {
        "remedy": AUGMENT_FEATURES,
        "evidence": evidence,
        "reason": f"train {_fmt(train_score)} and validation {_fmt(validation_score)} are both low "
        f"(short of {goal.target} by {rel_short:.1%}, gap {gap:.3f}): the features cannot express "
        f"the signal; add the next feature group",
    }


def next_plan(
    spec: Spec,
    plan: dict[str, Any],
    remedy: str,
    reason: str,
    *,
    earlier: Sequence[dict[str, Any]] = (),
    train_counts: tuple[int, int] | None = None,
    more_history: bool = True,
) -> dict[str, Any]:
    """The plan of the next round after ``remedy``, or the end of the loop.

    ``plan`` is this round's plan, ``earlier`` the plans of the rounds before it;
    ``train_counts`` ``(positives, rows)`` of this round's training rows (None: unknown);
    ``more_history`` False when the source holds no partition outside this round's window.

    A remedy is applied only if it changes the candidate (:func:`remedy_changes`) and the plan
    it makes neither repeats an earlier round's plan nor trains only trials already trained on
    the same data and features (:func:`repeats`); otherwise the next remedy of
    :data:`FALL_THROUGH` is tried, and ``skipped`` says why each one was passed over. When none
    can change the candidate, the plan has ``applied: None`` and ``stop: True``: the loop ends
    (goal_not_met) rather than spend a round on the same candidate.
    """
    order = FALL_THROUGH[remedy]
    base = {**plan, "round": plan["round"] + 1, "remedy": remedy, "reason": reason, "needs_new_data": False}
    base.pop("stop", None)
    done = [*earlier, plan]
    skipped: list[str] = []
    for r in order:
        new, notes, why_not = remedy_changes(spec, r, base, train_counts=train_counts, more_history=more_history)
        if notes:
            why_not = repeats(spec, new, done)
        if why_not:
            skipped.append(f"{r}: {why_not}")
            continue
        if r != remedy:
            notes.insert(0, f"{remedy} has nothing left to give; applied {r} instead")
        return {**new, "applied": r, "changes": notes, "skipped": skipped}
    return {
        **base,
        "applied": None,
        "stop": True,
        "changes": [f"{NO_REMEDY}: " + "; ".join(skipped)],
        "skipped": skipped,
    }


def remedy_changes(
    spec: Spec,
    remedy: str,
    base: dict[str, Any],
    *,
    train_counts: tuple[int, int] | None = None,
    more_history: bool = True,
) -> tuple[dict[str, Any], list[str], str | None]:
    """What ``remedy`` would change in ``base`` (the next round's plan before any change):
    ``(the changed plan, the changes in words, why it changes nothing or None)``.

    * augment_features: the next group of ``features.augment_order`` not in use;
    * augment_data: the lookback doubled up to ``data.max_lookback_days`` (partitioned data with
      partitions outside the window only) and, for a classification, oversampling the minority
      class when that adds rows (:func:`oversampling_adds_rows`);
    * tune_model: every family, twice the trials per family (up to ``training.max_trials``), the
      wide grid; nothing when the search is already at its widest.
    """
    new = {**base, "feature_groups": list(base["feature_groups"]), "families": list(base.get("families") or [])}
    if remedy == AUGMENT_FEATURES:
        left = [g for g in spec.features.augment_order if g not in base["feature_groups"]]
        if not left:
            return new, [], "every feature group of features.augment_order is in use"
        new["feature_groups"].append(left[0])
        return new, [f"feature groups + {left[0]}"], None
    if remedy == AUGMENT_DATA:
        notes, nothing = [], []
        lookback, most = base["lookback_days"], spec.data.max_lookback_days
        if spec.data.layout != "partitioned":
            nothing.append("a single file has no more history")
        elif lookback >= most:
            nothing.append(f"the lookback is at data.max_lookback_days ({most})")
        elif not more_history:
            nothing.append("the source holds no partition outside the window: there is no older history")
        else:
            new["lookback_days"] = min(most, lookback * 2)
            new["needs_new_data"] = True
            notes.append(f"lookback {lookback} -> {new['lookback_days']} days")
        if not spec.is_binary:
            nothing.append("resampling is for classes, not a continuous target")
        elif base["resample"] != "none":
            nothing.append("the minority class is oversampled already")
        elif train_counts is not None and not oversampling_adds_rows(*train_counts):
            pos, rows = train_counts
            share = min(pos, rows - pos) / max(pos, rows - pos, 1)
            nothing.append(
                f"the minority class is {share:.1%} of the majority in training (>= the resampling ratio "
                f"{RESAMPLE_RATIO:.0%}): oversampling adds no rows"
            )
        else:
            new["resample"] = "oversample"
            notes.append("oversample the minority class")
        return new, notes, None if notes else "; ".join(nothing)
    if remedy == TUNE:
        all_fams = [c.family for c in spec.training.candidates]
        trials = min(base["trials_per_family"] * 2, spec.training.max_trials)
        widest = base.get("wide_search") and set(base.get("families") or []) == set(all_fams)
        if widest and base["trials_per_family"] >= trials:
            return new, [], "the search is at its widest (every family, the wide grid, training.max_trials trials)"
        new.update(families=all_fams, trials_per_family=trials, wide_search=True)
        return new, [f"wide search, {trials} trials per family, families {all_fams}"], None
    raise KeyError(remedy)


def oversampling_adds_rows(positives: int, rows: int, ratio: float = RESAMPLE_RATIO) -> bool:
    """Whether oversampling changes training rows with ``positives`` of ``rows``: as
    ``features.apply_resampling`` does, a class is raised only when below ``ratio`` x the majority
    class count (one class alone is left as it is)."""
    counts = (positives, rows - positives)
    if min(counts) <= 0:
        return False
    return min(counts) < math.ceil(round(ratio * max(counts), 9))


def plan_key(plan: dict[str, Any]) -> tuple[Any, ...]:
    """The fields of a plan that decide its candidate: the data (lookback), the feature groups, the
    resampling, the families, the trials per family and the width of the search."""
    return (
        *_data_key(plan),
        tuple(sorted(plan.get("families") or [])),
        int(plan["trials_per_family"]),
        bool(plan.get("wide_search")),
    )


def _data_key(plan: dict[str, Any]) -> tuple[Any, ...]:
    return (int(plan["lookback_days"]), tuple(sorted(plan["feature_groups"])), plan.get("resample") or "none")


def planned_trials(spec: Spec, plan: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """The trials a plan trains, as ``(family, parameters)`` without their ids."""
    from include.lifecycle.models import plan_trials

    trials = plan_trials(
        spec,
        families=list(plan.get("families") or []),
        trials_per_family=int(plan["trials_per_family"]),
        wide=bool(plan.get("wide_search")),
        round_no=int(plan["round"]),
    )
    return frozenset((t["family"], json.dumps(t["params"], sort_keys=True, default=str)) for t in trials)


def repeats(spec: Spec, new: dict[str, Any], done: Sequence[dict[str, Any]]) -> str | None:
    """Why the plan ``new`` would not change the candidate after the rounds ``done`` (None: it would):
    it equals an earlier round's plan (:func:`plan_key`), or every trial it plans was trained
    already on the same data, features and resampling (the search grid is exhausted)."""
    key = plan_key(new)
    same = [p["round"] for p in done if plan_key(p) == key]
    if same:
        return f"its plan would repeat round {same[0]}'s"
    alike = [p for p in done if _data_key(p) == _data_key(new)]
    if alike and planned_trials(spec, new) <= frozenset().union(*(planned_trials(spec, p) for p in alike)):
        return (
            f"every trial it plans was trained already in round(s) {[p['round'] for p in alike]} on the same data "
            f"and features (the search grid is exhausted)"
        )
    return None


# --- selection across rounds ------------------------------------------------------------------------
def rows_mismatch(this: dict[str, Any], other: dict[str, Any]) -> str | None:
    """Why the trials of two rounds were not scored on the same rows (None: they were, so their
    validation scores compare). Each round is ``{"round", "plan", "splits", "trials"}`` (``splits``:
    its ``features/split.json``).

    A time split compares its validation and test windows (start, end, rows, positives): a round
    that re-collected more history keeps them. Trials compared by cross-validation
    (``selection: cv-k``) score the training rows too, so the train window must match as well. Any
    other split (random, stratified) is the same only on the same data set with the same record.
    """
    sa, sb = this.get("splits"), other.get("splits")
    if not sa or not sb:
        return "a round has no split record"
    if sa.get("kind") != sb.get("kind"):
        return f"the split kinds differ ({sb.get('kind')} there, {sa.get('kind')} here)"
    how_a = sorted({str(t.get("selection")) for t in this.get("trials") or []})
    how_b = sorted({str(t.get("selection")) for t in other.get("trials") or []})
    if how_a != how_b:
        return f"its trials were compared by {how_b}, these by {how_a}"
    if sa.get("kind") == "time":
        names = ("train", "validation", "test") if any(h.startswith("cv") for h in how_a) else ("validation", "test")
        for name in names:
            wa, wb = sa.get(name) or {}, sb.get(name) or {}
            differ = [k for k in ("start", "end", "rows", "positives") if wa.get(k) != wb.get(k)]
            if differ:
                return f"the {name} windows differ in {', '.join(differ)}"
        return None
    if this["plan"].get("dataset_rel") != other["plan"].get("dataset_rel"):
        return "another data set"
    if sa != sb:
        return "the splits differ"
    return None


def select_across_rounds(
    round_no: int,
    trials: Sequence[dict[str, Any]],
    *,
    this: dict[str, Any],
    earlier: Sequence[dict[str, Any]],
    higher_is_better: bool,
) -> dict[str, Any]:
    """select_model's rule: the best trial of round ``round_no`` and of every earlier round whose
    trials were scored on the same rows (:func:`rows_mismatch`), on the validation score (ties as
    ``models.best_trial`` breaks them; an earlier round's trial wins an exact tie by its id).

    ``this`` and each of ``earlier`` are ``{"round", "plan", "splits", "trials"}``. Returns ``best``
    (with ``round``: the round it was trained in), ``round_best`` (this round's own best),
    ``compared_rounds`` and ``not_comparable`` (round -> why its trials could not be compared)."""
    from include.lifecycle.models import best_trial

    own = [{**t, "round": t.get("round") or round_no} for t in trials]
    round_best = best_trial(own, higher_is_better=higher_is_better)
    pool, compared, not_comparable = list(own), [], {}
    for other in earlier:
        why = rows_mismatch({**this, "trials": own}, other)
        if why:
            not_comparable[str(other["round"])] = why
            continue
        pool += [{**t, "round": t.get("round") or other["round"]} for t in other.get("trials") or []]
        compared.append(other["round"])
    return {
        "best": best_trial(pool, higher_is_better=higher_is_better),
        "round_best": round_best,
        "compared_rounds": [*compared, round_no],
        "not_comparable": not_comparable,
    }
