"""Section 7, evaluate the model, and section 6, the gate.

The round's best trial is judged on the untouched test split: the goal metric as the business
runs it (for ``*_at_alert_rate`` metrics: at the threshold that will be deployed, chosen on
validation, and only if the realised alert rate stays within ``max_alert_rate``), with a seeded
bootstrap interval for every reported metric. The champion is compared on the same rows, paired,
and only on rows it has never seen (after its own data window, or the same held-out rows of a
static file); when no such rows exist the comparison says so. The decision rule:

    deploy  =  goal met (value meets the target, alert rate within capacity)
               and (no fair comparison with a champion trained on newer data is possible ->
                    keep the champion; a fair one exists -> the lower bound of the paired
                    difference candidate - champion is >= -champion_margin; no champion -> yes)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from include.lifecycle.spec import Spec
from include.lifecycle.uncertainty import Resamples, interval, paired_difference, resamples


@dataclass
class Split:
    """One split's feature matrix, target and (if the problem has one) amount."""

    X: np.ndarray
    y: np.ndarray
    amount: np.ndarray | None


IMPORTANCE_ROWS = 50_000
"""Permutation importance is computed on at most this many test rows (a seeded sample)."""


def assess(
    spec: Spec,
    model: Any,
    features: dict[str, Any],
    best: dict[str, Any],
    *,
    validation: Split,
    test: Split,
    train_mean: float | None,
) -> tuple[dict[str, Any], dict[str, bytes], np.ndarray, Any]:
    """The candidate's evaluation (without the champion comparison), its plots (PNG bytes), its
    scores on the test rows (for the paired comparison with the champion) and its calibrator
    (None unless ``training.calibration`` asks for one; fitted on validation, deployed with the model).

    ``features`` is the round's ``features.json`` (the importance is reported in the columns the
    spec declares, traced through it)."""
    from include.lifecycle import evaluate_model as em
    from include.lifecycle.models import predict

    goal = spec.goal
    binary = spec.is_binary
    calibrator = None
    raw_va = predict(model, validation.X, binary=binary)
    raw_te = predict(model, test.X, binary=binary)
    if binary and spec.training.calibration != "none":
        calibrator = em.fit_calibrator(validation.y, raw_va, spec.training.calibration)
    s_va = raw_va if calibrator is None else calibrator.transform(raw_va)
    s_te = raw_te if calibrator is None else calibrator.transform(raw_te)
    y_te, amt_te = test.y, test.amount
    result: dict[str, Any] = {
        "trial_id": best["trial_id"],
        "family": best["family"],
        "params": best["params"],
        "metric": goal.metric,
        "train_score": best["train_score"],
        "validation_score": best["validation_score"],
        # how much better the model does on rows it was fit on: the overfitting evidence of the diagnosis
        "train_validation_gap": (best["train_score"] - best["validation_score"]) * (1 if goal.higher_is_better else -1),
    }
    threshold: float | None = None
    choice: dict[str, Any] = {}
    if binary:
        cols_va = {spec.data.amount_column: validation.amount} if validation.amount is not None else {}
        cols_te = {spec.data.amount_column: amt_te} if amt_te is not None else {}
        tp, fp, fn = em.outcome_values(goal.value, len(validation.y), cols_va)
        capacity = goal.max_alert_rate * (1 - goal.alert_rate_headroom) if goal.max_alert_rate else None
        choice = em.choose_threshold(validation.y, s_va, tp_value=tp, fp_value=fp, fn_value=fn, max_alert_rate=capacity)
        threshold = float(choice["threshold"])
        tp_te, fp_te, fn_te = em.outcome_values(goal.value, len(y_te), cols_te)
        flagged = s_te >= threshold
        test_value = float(
            tp_te[flagged & (y_te == 1)].sum()
            + fp_te[flagged & (y_te == 0)].sum()
            + fn_te[~flagged & (y_te == 1)].sum()
        )
        result.update(
            threshold=threshold,
            threshold_choice={k: v for k, v in choice.items() if k != "curve"},
            test_metrics=em.binary_metrics(y_te, s_te, threshold=threshold, amount=amt_te),
            test_value_at_threshold=test_value,
            calibration=em.calibration_check(
                y_te, raw_te, calibrated=None if calibrator is None else s_te, method=spec.training.calibration
            ),
        )
    else:
        result.update(test_metrics=em.regression_metrics(y_te, s_te))
    result["importance"] = _importance(spec, model, calibrator, features, test, threshold)
    if binary:
        pngs = em.plots_binary(
            y_te,
            s_te,
            threshold=threshold,
            value_curve=choice,
            importance=result["importance"],
            calibration=result["calibration"],
            max_alert_rate=goal.max_alert_rate,
        )
    else:
        pngs = em.plots_regression(y_te, s_te, importance=result["importance"])
    sets = resample_sets(spec, y_te)
    check = goal_check(spec, y_te, s_te, amount=amt_te, threshold=threshold, sets=sets)
    result["test_score"] = check["value"]
    result["goal_check"] = check
    result["intervals"] = {
        goal.metric: check["interval"],
        **metric_intervals(spec, y_te, s_te, amt_te, threshold, sets),
    }
    result["baselines"] = baselines(spec, test, train_mean)
    result["plots"] = sorted(pngs)
    return result, pngs, s_te, calibrator


def baselines(spec: Spec, test: Split, train_mean: float | None) -> dict[str, float | None]:
    """What the goal metric is without the model, named for what each baseline does: flagging
    nothing, flagging the largest amounts up to the alert capacity, predicting the training mean."""
    from include.lifecycle.evaluate_model import MetricUndefined

    goal = spec.goal
    y, amount = test.y, test.amount

    def value(scores: np.ndarray, threshold: float | None) -> float | None:
        try:
            return goal_value(spec, y, scores, amount=amount, threshold=threshold)
        except MetricUndefined:
            return None

    if not spec.is_binary:
        return {"predict the training mean": value(np.full(len(y), train_mean), None)}
    out = {"flag nothing (no model)": value(np.zeros(len(y)), 0.5)}
    if amount is not None:
        rate = goal.max_alert_rate or 0.01
        out[f"rule of thumb: flag the largest amounts ({rate:.2%} of rows)"] = value(
            amount, float(np.quantile(amount, 1 - rate))
        )
    return out


def _importance(
    spec: Spec, model: Any, calibrator: Any, features: dict[str, Any], test: Split, threshold: float | None
) -> list[dict[str, Any]]:
    """Permutation importance of the declared columns on (a seeded sample of) the test rows: the
    drop of the goal metric, at the deployed threshold, when a column's features are shuffled."""
    from include.lifecycle import evaluate_model as em
    from include.lifecycle.models import predict

    n = len(test.y)
    rows = np.arange(n)
    if n > IMPORTANCE_ROWS:
        rows = np.sort(np.random.default_rng(spec.training.seed).choice(n, size=IMPORTANCE_ROWS, replace=False))
    amount = None if test.amount is None else test.amount[rows]

    def score(X: np.ndarray) -> np.ndarray:
        s = predict(model, X, binary=spec.is_binary)
        return s if calibrator is None else calibrator.transform(s)

    def metric(y: np.ndarray, s: np.ndarray) -> float:
        return goal_value(spec, y, s, amount=amount, threshold=threshold)

    try:
        return em.permutation_importance(
            score,
            test.X[rows],
            test.y[rows],
            groups=em.raw_column_groups(features),
            metric=metric,
            higher_is_better=spec.goal.higher_is_better,
            n_repeats=5,
            seed=spec.training.seed,
        )
    except em.MetricUndefined:  # e.g. no positive among the rows: say nothing rather than noise
        return []


# --- the goal as the business runs it ------------------------------------------------------------
def resample_sets(spec: Spec, y: np.ndarray) -> Resamples:
    """The test rows' bootstrap resamples (seeded by the spec; stratified for a binary target).
    Very large test sets get fewer resamples (at least 200), recorded with each interval."""
    n = len(y)
    count = max(200, min(spec.goal.bootstrap_resamples, int(spec.goal.bootstrap_resamples * 200_000 / max(n, 1))))
    return resamples(y if spec.is_binary else None, n, count=count, seed=spec.training.seed, stratify=spec.is_binary)


def goal_value(
    spec: Spec, y: np.ndarray, scores: np.ndarray, *, amount: np.ndarray | None, threshold: float | None
) -> float:
    """The goal metric as the business runs it: ``*_at_alert_rate`` metrics are the (amount)
    recall of the rows flagged at the deployed ``threshold``, not of an idealised top-k; the
    other metrics are the spec's goal metric (threshold metrics at ``threshold``)."""
    from include.lifecycle.evaluate_model import MetricUndefined, goal_metric

    goal = spec.goal
    if goal.metric.endswith("_at_alert_rate"):
        positive = np.asarray(y).astype(bool)
        weight = np.asarray(amount, dtype=float) if goal.metric.startswith("amount") else np.ones(len(positive))
        total = float(weight[positive].sum())
        if total <= 0:
            raise MetricUndefined(goal.metric, len(positive), int(positive.sum()), "no positive weight to catch")
        flagged = np.asarray(scores) >= threshold
        return float(weight[flagged & positive].sum()) / total
    return float(
        goal_metric(goal.metric, y, scores, amount=amount, max_alert_rate=goal.max_alert_rate, threshold=threshold)
    )


def goal_check(
    spec: Spec,
    y: np.ndarray,
    scores: np.ndarray,
    *,
    amount: np.ndarray | None,
    threshold: float | None,
    sets: Resamples,
) -> dict[str, Any]:
    """Whether the goal is met on the test rows: the metric at the deployed threshold meets the
    target and, for a goal with ``max_alert_rate``, the realised alert rate stays within it;
    both with their intervals."""
    goal = spec.goal
    value = goal_value(spec, y, scores, amount=amount, threshold=threshold)
    ci = interval(
        lambda r: goal_value(spec, y[r], scores[r], amount=None if amount is None else amount[r], threshold=threshold),
        sets,
        value=value,
        level=goal.confidence,
    )
    alert_rate = alert_ci = within = None
    if goal.max_alert_rate is not None and threshold is not None:
        flagged = (np.asarray(scores) >= threshold).astype(float)
        alert_rate = float(flagged.mean())
        alert_ci = interval(lambda r: float(flagged[r].mean()), sets, value=alert_rate, level=goal.confidence)
        within = alert_rate <= goal.max_alert_rate
    meets = goal.met_by(value) and within is not False
    return {
        "metric": goal.metric,
        "value": value,
        "interval": ci,
        "target": goal.target,
        "alert_rate": alert_rate,
        "alert_rate_interval": alert_ci,
        "max_alert_rate": goal.max_alert_rate,
        "within_capacity": within,
        "met": bool(meets),
    }


SECONDARY_RESAMPLES = 200
_BINARY_KEYS = (
    "roc_auc",
    "auprc",
    "precision",
    "recall",
    "f1",
    "alert_rate",
    "amount_caught_share",
    "brier",
    "log_loss",
)
_REGRESSION_KEYS = ("rmse", "mae", "r2")


def metric_intervals(
    spec: Spec, y: np.ndarray, scores: np.ndarray, amount: np.ndarray | None, threshold: float | None, sets: Resamples
) -> dict[str, dict[str, Any]]:
    """An interval for every reported test metric (the first SECONDARY_RESAMPLES resamples)."""
    from include.lifecycle import evaluate_model as em

    sub = sets.head(SECONDARY_RESAMPLES)
    if spec.is_binary:
        full = em.binary_metrics(y, scores, threshold=threshold, amount=amount)
        table = em.ResampledBinaryMetrics(y, scores, threshold=threshold, amount=amount)  # no sort per resample
        keys = _BINARY_KEYS
    else:

        def table(r: np.ndarray) -> dict[str, Any]:
            return em.regression_metrics(y[r], scores[r])

        full = table(np.arange(len(y)))
        keys = _REGRESSION_KEYS
    tables = [table(r) for r in sub]
    out = {}
    for key in keys:
        if full.get(key) is None:
            continue
        values = np.asarray([t[key] for t in tables if t.get(key) is not None], dtype=float)
        if not values.size:
            continue
        alpha = (1 - spec.goal.confidence) / 2
        low, high = np.quantile(values, [alpha, 1 - alpha])
        out[key] = {
            "value": float(full[key]),
            "low": float(low),
            "high": float(high),
            "level": spec.goal.confidence,
            "method": "bootstrap",
            "resamples": int(len(sub)),
        }
    return out


# --- the champion on the same, unseen rows -------------------------------------------------------
@dataclass
class ChampionOnTest:
    """The champion's scores on the candidate's test rows and which of them it never saw."""

    version: int
    scores: np.ndarray
    threshold: float | None
    unseen: np.ndarray  # bool per test row: after the champion's own data (or its own held-out rows)
    basis: str  # why those rows are unseen by it, in words
    newer_data: bool  # the champion was trained on data newer than the candidate's


def unseen_rows(
    n: int, times: np.ndarray | None, *, champion_data_end: str | None, same_held_out_rows: bool
) -> tuple[np.ndarray, str]:
    """Which of the ``n`` test rows a champion never trained or validated on, and why.

    Its own held-out test rows (the same rows: same data, same split, e.g. a static file, or a
    run on the same window as the champion's) are all unseen by it; otherwise, for time-ordered
    data, the rows at or after the end of its data window; otherwise none (it cannot be told)."""
    if same_held_out_rows:
        return np.ones(n, dtype=bool), "the champion's own held-out test rows (same data, same split)"
    if times is not None and champion_data_end:
        end = np.datetime64(champion_data_end[:10], "D")
        day = np.asarray(times).astype("datetime64[D]")
        return day >= end, f"rows from {champion_data_end[:10]} on, after the champion's data window"
    if times is None:
        return np.zeros(n, dtype=bool), "the champion was held out on other rows: its training rows may be among these"
    return np.zeros(n, dtype=bool), "the champion's lineage does not say which data it was trained on"


def compare_with_champion(
    spec: Spec,
    *,
    y: np.ndarray,
    amount: np.ndarray | None,
    candidate_scores: np.ndarray,
    candidate_threshold: float | None,
    champion: ChampionOnTest | None,
    note: str | None = None,
) -> dict[str, Any]:
    """The paired comparison of candidate and champion on the test rows the champion never saw:
    both goal metrics (each at its own threshold) and the interval of their difference (positive =
    the candidate is better). ``fair`` is False when no such rows exist or the metric is undefined
    on them; the decision then cannot rest on a comparison (see :func:`decide.goal_decision`)."""
    from include.lifecycle.evaluate_model import MetricUndefined

    if champion is None:
        return {"champion_version": None, "fair": None, "rows": 0, "note": note or "no champion yet"}
    out: dict[str, Any] = {
        "champion_version": champion.version,
        "compared_version": champion.version,
        "fair": False,
        "rows": int(champion.unseen.sum()),
        "basis": champion.basis,
        "newer_data": champion.newer_data,
        "candidate": None,
        "champion": None,
        "difference": None,
        "note": note or "",
    }
    rows = np.flatnonzero(champion.unseen)
    if rows.size == 0:
        out["note"] = "; ".join(
            filter(None, [out["note"], f"no test row is unseen by the champion ({champion.basis})"])
        )
        return out
    yf, af = y[rows], None if amount is None else amount[rows]
    cand, champ = candidate_scores[rows], champion.scores[rows]

    def on(scores: np.ndarray, threshold: float | None) -> Any:
        return lambda r: goal_value(spec, yf[r], scores[r], amount=None if af is None else af[r], threshold=threshold)

    try:
        every = np.arange(rows.size)
        out["candidate"] = on(cand, candidate_threshold)(every)
        out["champion"] = on(champ, champion.threshold)(every)
    except MetricUndefined as exc:
        out["note"] = "; ".join(filter(None, [out["note"], f"on the {rows.size} rows unseen by the champion: {exc}"]))
        return out
    sets = resample_sets(spec, yf)
    out["difference"] = paired_difference(
        on(cand, candidate_threshold),
        on(champ, champion.threshold),
        sets,
        higher_is_better=spec.goal.higher_is_better,
        level=spec.goal.confidence,
    )
    out["fair"] = True
    return out
