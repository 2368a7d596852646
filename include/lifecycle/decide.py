"""Sections 6 and 8: "meets the business goal?" and, when not, which remedy to try next.

Every decision carries its reason in words. The remedy is picked from evidence, as the
seed note says: train and validation scores far apart (or too few positives) -> augment
the data; close to the goal -> tune the model; both scores low -> augment the features.
A remedy that has nothing left to give (no feature group left, lookback at its maximum)
falls through to the next one, and the plan says so.
"""

from __future__ import annotations

from typing import Any

from include.lifecycle.spec import Spec

TUNE, AUGMENT_FEATURES, AUGMENT_DATA = "tune_model", "augment_features", "augment_data"
REMEDIES = (TUNE, AUGMENT_FEATURES, AUGMENT_DATA)


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


def goal_decision(spec: Spec, *, candidate: float, champion: float | None) -> dict[str, Any]:
    """Deploy only when the criterion holds on the test split and the champion is not better."""
    goal = spec.goal
    hib = goal.higher_is_better
    meets = goal.met_by(candidate)
    if champion is None:
        no_worse = True
    else:
        no_worse = candidate >= champion - goal.champion_margin if hib else candidate <= champion + goal.champion_margin
    op = ">=" if hib else "<="
    parts = [f"{goal.metric} {_fmt(candidate)} {'meets' if meets else 'misses'} the goal {op} {goal.target}"]
    if champion is None:
        parts.append("no champion yet")
    else:
        parts.append(
            f"champion scores {_fmt(champion)} on the same test data "
            f"({'candidate no worse' if no_worse else 'candidate worse'} within margin {goal.champion_margin})"
        )
    return {
        "meets_goal": bool(meets),
        "no_worse_than_champion": bool(no_worse),
        "deploy": bool(meets and no_worse),
        "candidate": candidate,
        "champion": champion,
        "reason": "; ".join(parts),
    }


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


def next_plan(spec: Spec, plan: dict[str, Any], remedy: str, reason: str) -> dict[str, Any]:
    """The plan of the next round after ``remedy``; an exhausted remedy falls through to another."""
    new = {**plan, "round": plan["round"] + 1, "remedy": remedy, "reason": reason, "needs_new_data": False}
    left = [g for g in spec.features.augment_order if g not in plan["feature_groups"]]
    all_fams = [c.family for c in spec.training.candidates]
    notes = []
    order = {
        AUGMENT_FEATURES: [AUGMENT_FEATURES, TUNE, AUGMENT_DATA],
        TUNE: [TUNE, AUGMENT_FEATURES, AUGMENT_DATA],
        AUGMENT_DATA: [AUGMENT_DATA, AUGMENT_FEATURES, TUNE],
    }[remedy]
    applied = None
    for r in order:
        if r == AUGMENT_FEATURES and left:
            new["feature_groups"] = [*plan["feature_groups"], left[0]]
            notes.append(f"feature groups + {left[0]}")
        elif r == AUGMENT_DATA:
            if plan["lookback_days"] < spec.data.max_lookback_days and spec.data.layout == "partitioned":
                new["lookback_days"] = min(spec.data.max_lookback_days, plan["lookback_days"] * 2)
                new["needs_new_data"] = True
                notes.append(f"lookback {plan['lookback_days']} -> {new['lookback_days']} days")
            if spec.is_binary and plan["resample"] == "none":
                new["resample"] = "oversample"
                notes.append("oversample the minority class")
        elif r == TUNE and not (
            plan.get("wide_search")
            and set(plan.get("families") or []) == set(all_fams)
            and plan["trials_per_family"] >= spec.training.max_trials
        ):
            new["families"] = all_fams
            new["trials_per_family"] = min(plan["trials_per_family"] * 2, spec.training.max_trials)
            new["wide_search"] = True
            notes.append(f"wide search, {new['trials_per_family']} trials per family, families {all_fams}")
        if notes:
            applied = r
            break
    if applied is None:
        notes.append(
            "every remedy is exhausted (all feature groups, all history, widest search): the next round "
            "repeats this plan with newly sampled trials"
        )
    elif applied != remedy:
        notes.insert(0, f"{remedy} has nothing left to give; applied {applied} instead")
    new["applied"] = applied
    new["changes"] = notes
    return new
