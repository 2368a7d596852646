"""Section 7, evaluate the model: the round's best trial on the untouched test split, the
threshold that maximises business value (chosen on validation), baselines, plots; and the
champion scored on the very same test rows, so the gate compares like with like.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from include.lifecycle.spec import Spec


@dataclass
class Split:
    """One split's feature matrix, target and (if the problem has one) amount."""

    X: np.ndarray
    y: np.ndarray
    amount: np.ndarray | None


def assess(
    spec: Spec,
    model: Any,
    feature_names: list[str],
    best: dict[str, Any],
    *,
    validation: Split,
    test: Split,
    train_mean: float | None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The candidate's evaluation (without the champion comparison) and its plots (PNG bytes)."""
    from include.lifecycle import evaluate_model as em
    from include.lifecycle.models import predict

    goal = spec.goal
    binary = spec.is_binary
    s_va = predict(model, validation.X, binary=binary)
    s_te = predict(model, test.X, binary=binary)
    y_te, amt_te = test.y, test.amount
    importance = em.feature_importance(model, feature_names)
    result: dict[str, Any] = {
        "trial_id": best["trial_id"],
        "family": best["family"],
        "params": best["params"],
        "metric": goal.metric,
        "train_score": best["train_score"],
        "validation_score": best["validation_score"],
        # how much better the model does on rows it was fit on: the overfitting evidence of the diagnosis
        "train_validation_gap": (best["train_score"] - best["validation_score"]) * (1 if goal.higher_is_better else -1),
        "importance": importance,
    }
    if binary:
        cols_va = {spec.data.amount_column: validation.amount} if validation.amount is not None else {}
        cols_te = {spec.data.amount_column: amt_te} if amt_te is not None else {}
        tp, fp, fn = em.outcome_values(goal.value, len(validation.y), cols_va)
        choice = em.choose_threshold(
            validation.y, s_va, tp_value=tp, fp_value=fp, fn_value=fn, max_alert_rate=goal.max_alert_rate
        )
        threshold: float | None = float(choice["threshold"])
        tp_te, fp_te, fn_te = em.outcome_values(goal.value, len(y_te), cols_te)
        flagged = s_te >= threshold
        test_value = float(
            tp_te[flagged & (y_te == 1)].sum()
            + fp_te[flagged & (y_te == 0)].sum()
            + fn_te[~flagged & (y_te == 1)].sum()
        )
        calib = em.calibration_table(y_te, s_te)
        result.update(
            threshold=threshold,
            threshold_choice={k: v for k, v in choice.items() if k != "curve"},
            test_metrics=em.binary_metrics(y_te, s_te, threshold=threshold, amount=amt_te),
            test_value_at_threshold=test_value,
            calibration=calib,
        )
        pngs = em.plots_binary(
            y_te,
            s_te,
            threshold=threshold,
            value_curve=choice,
            importance=importance,
            calibration=calib,
            max_alert_rate=goal.max_alert_rate,
        )
        baselines = {
            "flag nothing": em.goal_metric(
                goal.metric, y_te, np.zeros(len(y_te)), amount=amt_te, max_alert_rate=goal.max_alert_rate, threshold=0.5
            )
        }
        if amt_te is not None:
            baselines["rule of thumb (largest amounts)"] = em.goal_metric(
                goal.metric,
                y_te,
                amt_te,
                amount=amt_te,
                max_alert_rate=goal.max_alert_rate,
                threshold=float(np.quantile(amt_te, 1 - (goal.max_alert_rate or 0.01))),
            )
    else:
        threshold = None
        result.update(test_metrics=em.regression_metrics(y_te, s_te))
        pngs = em.plots_regression(y_te, s_te, importance=importance)
        baselines = {"predict the training mean": em.goal_metric(goal.metric, y_te, np.full(len(y_te), train_mean))}
    result["test_score"] = float(
        em.goal_metric(goal.metric, y_te, s_te, amount=amt_te, max_alert_rate=goal.max_alert_rate, threshold=threshold)
    )
    result["baselines"] = baselines
    result["plots"] = sorted(pngs)
    return result, pngs


def champion_test_score(spec: Spec, bundle: Any, df: Any, *, as_of: dt.datetime) -> tuple[float | None, str | None]:
    """The champion's goal metric on the candidate's test rows of ``df`` (its own features and
    preprocessing), or None with the reason it cannot be scored."""
    from include.lifecycle.dataset import TEST, assign_splits, target_vector
    from include.lifecycle.evaluate_model import goal_metric

    missing = [c for c in bundle.input_columns if c not in df.columns]
    if missing:
        return None, f"champion needs columns {missing} that this data set lacks"
    y = target_vector(df[spec.problem.target], spec)
    test = assign_splits(df, spec, y, as_of=as_of) == TEST  # the very rows the candidate is tested on
    scores = bundle.score(df)[test]
    amount = df[spec.data.amount_column].to_numpy(dtype="float64")[test] if spec.data.amount_column else None
    value = goal_metric(
        spec.goal.metric,
        y[test],
        scores,
        amount=amount,
        max_alert_rate=spec.goal.max_alert_rate,
        threshold=bundle.threshold if bundle.threshold is not None else 0.5,
    )
    return float(value), None


def gate(spec: Spec, test_score: float, *, champion: float | None, note: str | None, force: bool) -> dict[str, Any]:
    """The "meets the business goal?" decision: the goal, and no worse than the champion; a forced
    deployment (the run's force_deploy param) is recorded as such."""
    from include.lifecycle.decide import goal_decision

    decision = goal_decision(spec, candidate=test_score, champion=champion)
    if note:
        decision["reason"] += f"; {note}"
    if force and not decision["deploy"]:
        decision.update(
            deploy=True, forced=True, reason=decision["reason"] + "; FORCED by the run's force_deploy param"
        )
    return decision
