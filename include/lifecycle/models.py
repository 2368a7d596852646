"""Section 5, select and train: model families, tuning trials and safe model files.

A trial is one family with one set of hyper-parameters, fitted on the training matrix and
scored on the validation matrix with the spec's goal metric. Trials are planned here
(deterministically, from the round's plan and the spec's search space) and run by the
script-mode entry point ``include/jobs/train.py`` - in-process locally, in a SageMaker
container on AWS.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from include.lifecycle.spec import Spec
from include.lifecycle.tuning import search_space

FAMILY_ORDER = ("logistic", "linear", "xgboost", "random_forest")
TARGET_COL, AMOUNT_COL = "__target__", "__amount__"


def plan_trials(
    spec: Spec, *, families: list[str], trials_per_family: int, wide: bool, round_no: int, max_trials: int | None = None
) -> list[dict[str, Any]]:
    """Deterministic list of trials: per family the spec's default params first, then
    samples of its search grid (a wider grid when ``wide``). Small JSON each.

    Families are interleaved (each family's i-th trial before any family's (i+1)-th), so
    when ``max_trials`` cuts the list every family keeps a fair share instead of the
    last families in the spec losing all their trials."""
    per_family: list[list[dict[str, Any]]] = []
    rng = random.Random(spec.training.seed * 1000 + round_no)
    for cand in spec.training.candidates:
        if cand.family not in families:
            continue
        space = search_space(cand, wide=wide)
        seen = [dict(cand.params)]
        if space:
            keys = sorted(space)
            grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(space[k] for k in keys))]
            rng.shuffle(grid)
            for g in grid:
                if len(seen) >= trials_per_family:
                    break
                params = {**cand.params, **g}
                if params not in seen:
                    seen.append(params)
        per_family.append(
            [
                {"trial_id": f"r{round_no}-{cand.family}-{i}", "family": cand.family, "params": params}
                for i, params in enumerate(seen[:trials_per_family])
            ]
        )
    trials = [t for level in itertools.zip_longest(*per_family) for t in level if t is not None]
    limit = max_trials or spec.training.max_trials
    return trials[:limit]


def build_model(
    family: str,
    params: dict[str, Any],
    *,
    binary: bool,
    seed: int,
    class_weight: str,
    pos_weight: float = 1.0,
    n_jobs: int | None = None,
) -> Any:
    """A fresh estimator of the family; imbalance handled by class weights."""
    n_jobs = n_jobs or os.cpu_count() or 1
    balanced = class_weight == "balanced"
    if family == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            max_iter=2000, class_weight="balanced" if balanced else None, random_state=seed, **params
        )
    if family == "linear":
        from sklearn.linear_model import Ridge

        return Ridge(random_state=seed, **params)
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        if binary:
            return RandomForestClassifier(
                random_state=seed, n_jobs=n_jobs, class_weight="balanced_subsample" if balanced else None, **params
            )
        return RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **params)
    if family == "xgboost":
        import xgboost as xgb

        common = {"tree_method": "hist", "random_state": seed, "n_jobs": n_jobs, **params}
        if binary:
            return xgb.XGBClassifier(
                objective="binary:logistic",
                eval_metric="aucpr",
                scale_pos_weight=pos_weight if balanced else 1.0,
                **common,
            )
        return xgb.XGBRegressor(objective="reg:squarederror", **common)
    raise ValueError(f"unknown model family {family!r}")


def fit_model(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    model.fit(X, y)
    return model


def fit_and_predict(model: Any, X: np.ndarray, y: np.ndarray, *, binary: bool) -> np.ndarray:
    """Fit ``model`` on ``X, y`` and return its predictions for ``X``, the same numbers as
    ``predict(model, X, binary=binary)`` after :func:`fit_model`.

    xgboost keeps the prediction of every training row in its prediction cache while it boosts, so
    the training rows' scores are read from there at the end of training instead of a second pass
    of every tree over every training row (about a tenth of the fit time)."""
    if not _is_xgboost(model):
        fit_model(model, X, y)
        return predict(model, X, binary=binary)
    scores = _fit_xgboost_cached_predictions(model, X, y)
    return predict(model, X, binary=binary) if scores is None else np.asarray(scores, dtype="float64")


def _is_xgboost(model: Any) -> bool:
    return type(model).__module__.startswith("xgboost.")


def _fit_xgboost_cached_predictions(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Fit an xgboost estimator; the predictions for its training matrix come from the booster's
    prediction cache (``xgboost.train`` drops the cache when it returns, so a training callback reads
    it at the end of training). The model is fitted either way; None when this xgboost does not
    expose its training matrix, or with early stopping (predict() uses the best iteration, not the
    last): then the caller predicts."""
    import xgboost as xgb

    create = getattr(model, "_create_dmatrix", None)
    if create is None or model.get_params().get("early_stopping_rounds"):
        model.fit(X, y)
        return None
    grab: dict[str, Any] = {}

    class _CachedTrainingPredictions(xgb.callback.TrainingCallback):
        def after_training(self, model: Any) -> Any:
            dtrain = grab.pop("dtrain", None)
            if dtrain is not None:  # probabilities (binary:logistic) or values, as predict() returns
                grab["scores"] = model.predict(dtrain)
            return model

    def capture(ref: Any, **kwargs: Any) -> Any:
        dmatrix = create(ref, **kwargs)
        grab.setdefault("dtrain", dmatrix)  # the first matrix fit builds is the training matrix
        return dmatrix

    callbacks = model.get_params().get("callbacks")
    model._create_dmatrix = capture
    model.set_params(callbacks=[*(callbacks or []), _CachedTrainingPredictions()])
    try:
        model.fit(X, y)
    finally:
        del model._create_dmatrix
        model.set_params(callbacks=callbacks)
    scores = grab.get("scores")
    return scores if scores is not None and len(scores) == len(X) else None


def predict(model: Any, X: np.ndarray, *, binary: bool) -> np.ndarray:
    """Positive-class probability for classification, the prediction for regression."""
    if binary:
        return model.predict_proba(X)[:, 1].astype("float64")
    return np.asarray(model.predict(X), dtype="float64")


def save_model(model: Any, family: str, model_dir: str | Path) -> list[str]:
    """Write the model in the safest format the family has: xgboost's own UBJ, joblib otherwise.

    joblib files are only loaded after their sha256 matches the registry manifest."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    meta = {"family": family, "class": type(model).__name__}
    if family == "xgboost":
        model.save_model(model_dir / "model.ubj")
        files = ["model.ubj"]
    else:
        import joblib

        joblib.dump(model, model_dir / "model.joblib")
        files = ["model.joblib"]
    (model_dir / "model_meta.json").write_text(json.dumps(meta))
    return [*files, "model_meta.json"]


def load_model(model_dir: str | Path) -> Any:
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model_meta.json").read_text())
    if meta["family"] == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier() if meta["class"] == "XGBClassifier" else xgb.XGBRegressor()
        model.load_model(model_dir / "model.ubj")
        return model
    import joblib

    return joblib.load(model_dir / "model.joblib")


def best_trial(results: list[dict[str, Any]], *, higher_is_better: bool) -> dict[str, Any]:
    """The trial with the best validation score; ties go to the simpler family, then the id."""
    ok = [r for r in results if r.get("validation_score") is not None]
    if not ok:
        raise ValueError("no trial produced a validation score")
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}

    def key(r: dict[str, Any]) -> tuple:
        s = r["validation_score"]
        return (-s if higher_is_better else s, rank.get(r["family"], 99), r["trial_id"])

    return sorted(ok, key=key)[0]
