"""Section 5, select and train: model families, tuning trials and safe model files.

A trial is one family with one set of hyper-parameters, fitted on the training matrix and
scored on the validation matrix with the spec's goal metric. Trials are planned here
(deterministically, from the round's plan and the spec's search space) and run by the
script-mode entry point ``include/jobs/train.py`` - in-process locally, in a SageMaker
container on AWS.

How trials are compared (``training.selection``, recorded per trial as ``selection``):

* ``cv-<k>``: stratified k-fold cross-validation on the train + validation rows (the job receives
  both channels); ``validation_score`` is the mean of the k fold scores. The model kept is then
  refitted: a regression model on all train + validation rows (nothing is chosen on validation
  rows after selection, and on small data the extra rows are worth most); a binary model on the
  train channel only, so the decision threshold and the calibrator chosen later on validation are
  still chosen on rows the model did not fit. ``fitted_on`` records which.
* ``holdout``: fitted on the train channel, scored on the validation channel.

``auto`` (the default) keeps the forward split of time-ordered partitioned data (shuffled folds
would train on the future of the rows they score) and cross-validates static data (a single file)
and any other data with fewer than ``training.cv_max_rows`` train + validation rows: there one
validation split is too small to tell trials apart.

Ties on the goal metric (frequent for metrics that count a few caught positives) are broken by a
smooth metric of the same validation rows (binary: AUPRC, then log-loss; regression: RMSE, then
MAE), and only exact ties of those by the simpler family and the trial id: never by trial order.

A regression model may be fitted on a transformed target (``problem.target_transform``); it is
saved with the transform in ``model_meta.json`` and loaded as :class:`TargetTransformed`, whose
``predict`` is on the original scale, so no caller needs to know.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from include.lifecycle.dataset import TARGET_TRANSFORMS, inverse_target
from include.lifecycle.spec import Spec
from include.lifecycle.tuning import search_space

FAMILY_ORDER = ("logistic", "linear", "xgboost", "random_forest")
TARGET_COL, AMOUNT_COL = "__target__", "__amount__"
# the smooth validation metrics a trial reports next to its goal metric, in tie-break order, with
# whether higher is better: (metrics.json key, higher is better)
TIE_BREAKS = (
    ("validation_auprc", True),
    ("validation_log_loss", False),
    ("validation_rmse", False),
    ("validation_mae", False),
)
SELECTIONS = ("auto", "cv", "holdout")
DATA_KINDS = ("static", "time_ordered", "unordered")
_LOG_LOSS_EPS = 1e-15


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
    """Positive-class probability for classification, the prediction for regression (on the
    target's original scale, also for a :class:`TargetTransformed` model)."""
    if binary:
        return model.predict_proba(X)[:, 1].astype("float64")
    return np.asarray(model.predict(X), dtype="float64")


class TargetTransformed:
    """A fitted regressor of ``f(y)`` (``transform``: ``log`` or ``log1p``) that predicts ``y``:
    ``predict`` applies the inverse of ``f`` to the regressor's output.

    ``regressor_`` is the fitted model (what feature importance reads, and what is saved);
    ``predict_transformed`` gives its output on the fitted scale. ``score`` is R2 on the original
    scale, like any scikit-learn regressor."""

    _estimator_type = "regressor"

    def __init__(self, regressor: Any, transform: str) -> None:
        if transform not in TARGET_TRANSFORMS or transform == "none":
            raise ValueError(f"unknown target transform {transform!r}: use log or log1p")
        self.regressor_ = regressor
        self.transform = transform

    @property
    def n_features_in_(self) -> int:
        return int(self.regressor_.n_features_in_)

    def predict_transformed(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.regressor_.predict(X), dtype="float64")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return inverse_target(self.predict_transformed(X), self.transform)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        from sklearn.metrics import r2_score

        return float(r2_score(y, self.predict(X)))

    def __repr__(self) -> str:
        return f"TargetTransformed({self.regressor_!r}, transform={self.transform!r})"


def predict_both(model: Any, X: np.ndarray, *, binary: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(predictions on the original scale, predictions on the fitted scale or None)``: the second
    only for a :class:`TargetTransformed` model, computed once."""
    if isinstance(model, TargetTransformed):
        z = model.predict_transformed(X)
        return inverse_target(z, model.transform), z
    return predict(model, X, binary=binary), None


def save_model(model: Any, family: str, model_dir: str | Path) -> list[str]:
    """Write the model in the safest format the family has: xgboost's own UBJ, joblib otherwise.

    joblib files are only loaded after their sha256 matches the registry manifest. A
    :class:`TargetTransformed` model is saved as its fitted regressor, with ``target_transform``
    in ``model_meta.json`` (:func:`load_model` wraps it again)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    transform = None
    if isinstance(model, TargetTransformed):  # the fitted regressor is saved, the transform is meta
        model, transform = model.regressor_, model.transform
    meta = {"family": family, "class": type(model).__name__}
    if transform is not None:
        meta["target_transform"] = transform
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
    """The model :func:`save_model` wrote; a :class:`TargetTransformed` one when its meta names a
    target transform (its ``predict`` is on the original scale)."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model_meta.json").read_text())
    if meta["family"] == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier() if meta["class"] == "XGBClassifier" else xgb.XGBRegressor()
        model.load_model(model_dir / "model.ubj")
    else:
        import joblib

        model = joblib.load(model_dir / "model.joblib")
    transform = meta.get("target_transform", "none")
    return model if transform == "none" else TargetTransformed(model, transform)


# --- how trials are compared ------------------------------------------------------------------------
def smooth_scores(y: np.ndarray, scores: np.ndarray, *, binary: bool) -> dict[str, float | None]:
    """The smooth metrics of predictions (keys without the ``validation_`` prefix of
    :data:`TIE_BREAKS`): binary AUPRC and log-loss (None when ``y`` holds one class), regression
    RMSE and MAE. They change with every score, where a goal metric that counts caught positives
    often ties."""
    y = np.asarray(y)
    s = np.asarray(scores, dtype="float64")
    if binary:
        from sklearn.metrics import average_precision_score

        yb = y.astype(bool)
        if len(yb) == 0 or yb.all() or not yb.any():
            return {"auprc": None, "log_loss": None}
        p = np.clip(s, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
        return {
            "auprc": float(average_precision_score(yb, s)),
            "log_loss": float(-np.mean(np.where(yb, np.log(p), np.log1p(-p)))),
        }
    if len(y) == 0:
        return {"rmse": None, "mae": None}
    err = s - y.astype("float64")
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def data_kind(spec: Spec) -> str:
    """``static`` (a single file), ``time_ordered`` (partitions with a time column: the split is
    forward in time) or ``unordered`` (partitions without a time column)."""
    if spec.data.layout == "single_file":
        return "static"
    return "time_ordered" if spec.data.time_column else "unordered"


@dataclass(frozen=True)
class Selection:
    """How a trial is compared: ``name`` ``cv-<k>`` or ``holdout``, ``folds`` (0: holdout) and the
    ``rule`` that chose it, in words."""

    name: str
    folds: int
    rule: str


def choose_selection(requested: str, *, kind: str, y: np.ndarray, binary: bool, folds: int, max_rows: int) -> Selection:
    """The selection for this trial's train + validation targets ``y`` (see the module doc).

    ``requested`` is ``training.selection`` (``auto``, ``cv``, ``holdout``), ``kind`` the
    :func:`data_kind`. Cross-validation keeps at most as many folds as the rarer class has rows
    (each fold holds a positive and a negative) and as half the rows (regression); fewer than 2
    possible folds: holdout, and the rule says why."""
    if requested not in SELECTIONS:
        raise ValueError(f"unknown selection {requested!r}: use one of {', '.join(SELECTIONS)}")
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {kind!r}: use one of {', '.join(DATA_KINDS)}")
    n = len(y)
    if requested == "holdout":
        return Selection("holdout", 0, "training.selection is holdout")
    if requested == "cv":
        rule = "training.selection is cv"
    elif kind == "time_ordered":
        why = "shuffled folds would train on the future of the rows they score"
        return Selection("holdout", 0, f"auto: time-ordered partitioned data keeps its forward split ({why})")
    elif kind == "static":
        rule = "auto: static data (a single file) is compared by cross-validation"
    elif n < max_rows:
        rule = f"auto: {n} train + validation rows, fewer than training.cv_max_rows {max_rows}"
    else:
        return Selection("holdout", 0, f"auto: {n} train + validation rows, at least training.cv_max_rows {max_rows}")
    if binary:
        yb = np.asarray(y).astype(bool)
        fewest = int(min(yb.sum(), (~yb).sum()))
        possible, why = fewest, f"the rarer class has {fewest} rows"
    else:
        possible, why = n // 2, f"{n} rows allow {n // 2} folds of 2 rows"
    k = min(folds, possible)
    if k < 2:
        return Selection("holdout", 0, f"{rule}, but {why}: too few for 2 folds, so holdout")
    if k < folds:
        rule += f"; {folds} folds reduced to {k}: {why}"
    return Selection(f"cv-{k}", k, f"{rule} ({k}-fold{' stratified' if binary else ''} on {n} rows)")


def cv_splits(y: np.ndarray, folds: int, *, seed: int, binary: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` seeded, shuffled ``(fit rows, held-out rows)`` index pairs over ``y``: stratified
    by class for a binary target (every fold keeps the base rate), plain k-fold for regression."""
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if binary else KFold)(n_splits=folds, shuffle=True, random_state=seed)
    return [(fit, held) for fit, held in splitter.split(np.zeros((len(y), 1)), y)]


def _rank_value(value: Any, higher_is_better: bool) -> float:
    """A sort key, smaller is better; a missing or NaN value ranks last. Rounded to 12 significant
    digits so one number computed in two summation orders still ties."""
    if value is None or not math.isfinite(float(value)):
        return math.inf
    v = float(f"{float(value):.12g}")
    return -v if higher_is_better else v


def best_trial(results: list[dict[str, Any]], *, higher_is_better: bool) -> dict[str, Any]:
    """The trial with the best validation score (the goal metric); ties are broken by the smooth
    validation metrics of :data:`TIE_BREAKS` (AUPRC, then log-loss; RMSE, then MAE), and only
    exact ties of those go to the simpler family (:data:`FAMILY_ORDER`), then the trial id."""
    ok = [r for r in results if r.get("validation_score") is not None]
    if not ok:
        raise ValueError("no trial produced a validation score")
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}

    def key(r: dict[str, Any]) -> tuple:
        smooth = tuple(_rank_value(r.get(name), hib) for name, hib in TIE_BREAKS)
        return (_rank_value(r["validation_score"], higher_is_better), *smooth, rank.get(r["family"], 99), r["trial_id"])

    return sorted(ok, key=key)[0]
