"""Training entry point in the SageMaker script-mode contract.

Inputs come from channels (``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``: folders of
Parquet files with the feature columns, ``__target__`` and, when the problem has one,
``__amount__``); the model goes to ``SM_MODEL_DIR``; ``metrics.json`` goes to
``SM_OUTPUT_DATA_DIR``. Hyper-parameters arrive as ``--name value`` arguments, exactly as
SageMaker passes them. The local backend calls :func:`main` in-process with the same
variables; on AWS the same file runs in the framework container.

    SM_CHANNEL_TRAIN=... SM_CHANNEL_VALIDATION=... SM_MODEL_DIR=... SM_OUTPUT_DATA_DIR=... \
    python -m include.jobs.train --family xgboost --problem-type binary_classification \
        --metric auprc --max_depth 5 --learning_rate 0.1

How the trial is scored (``--selection``, see ``include/lifecycle/models.py``): ``holdout`` fits
on the train channel and scores the validation channel; ``cv`` (or ``auto`` on static or small
data) scores k folds of train + validation (``validation_score`` = their mean, the fold scores and
their sd recorded) and keeps the model refitted on train + validation (regression) or on the train
channel (binary: its threshold is chosen on validation; ``fitted_on`` says). ``metrics.json`` also holds
the smooth validation metrics that break ties of the goal metric (``validation_auprc`` and
``validation_log_loss``, or ``validation_rmse`` and ``validation_mae``). With
``--target_transform log|log1p`` a regression model is fitted on the transformed target, saved to
predict on the original scale, and scored on both scales (``*_score`` original,
``*_score_transformed`` fitted scale).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from include.lifecycle.dataset import check_target_transform, inverse_target, transform_target
from include.lifecycle.evaluate_model import goal_metric
from include.lifecycle.features import apply_resampling
from include.lifecycle.models import (
    AMOUNT_COL,
    DATA_KINDS,
    SELECTIONS,
    TARGET_COL,
    Selection,
    TargetTransformed,
    build_model,
    choose_selection,
    cv_splits,
    data_kind,
    fit_and_predict,
    fit_model,
    predict,
    predict_both,
    save_model,
    smooth_scores,
)


def hyperparameter_args(spec: Any, plan: Mapping[str, Any], trial: Mapping[str, Any]) -> list[str]:
    """A trial as this script's arguments (``--name value``), as SageMaker passes hyper-parameters:
    the fixed options :func:`parse_args` knows, then the trial's model parameters as JSON."""
    goal = spec.goal
    args = {
        "family": trial["family"],
        "trial_id": trial["trial_id"],
        "problem_type": spec.problem.type,
        "metric": goal.metric,
        "seed": spec.training.seed,
        "class_weight": spec.training.class_weight,
        "resample": plan.get("resample", "none"),
        "selection": spec.training.selection,
        "cv_folds": spec.training.cv_folds,
        "cv_max_rows": spec.training.cv_max_rows,
        "data_kind": data_kind(spec),
    }
    if goal.max_alert_rate is not None:
        args["max_alert_rate"] = goal.max_alert_rate
    if spec.problem.target_transform != "none":
        args["target_transform"] = spec.problem.target_transform
    out: list[str] = []
    for k, v in args.items():
        out += [f"--{k}", str(v)]
    for k, v in trial["params"].items():
        out += [f"--{k}", json.dumps(v)]
    return out


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, Any]]:
    # no abbreviations: a hyper-parameter named like the start of a fixed option (--metr, --max_alert)
    # must stay a hyper-parameter, not silently set that option
    p = argparse.ArgumentParser(description="train one model (SageMaker script mode)", allow_abbrev=False)
    p.add_argument("--family", required=True)
    p.add_argument("--trial-id", "--trial_id", dest="trial_id", default="trial")
    p.add_argument("--problem-type", "--problem_type", dest="problem_type", default="binary_classification")
    p.add_argument("--metric", default="auprc")
    p.add_argument("--max-alert-rate", "--max_alert_rate", dest="max_alert_rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--class-weight", "--class_weight", dest="class_weight", default="balanced")
    p.add_argument("--resample", default="none")
    p.add_argument("--resample-ratio", "--resample_ratio", dest="resample_ratio", type=float, default=0.1)
    # hyperparameter_args passes the spec's training.selection; a bare call scores on the validation channel
    p.add_argument("--selection", choices=SELECTIONS, default="holdout")
    p.add_argument("--cv-folds", "--cv_folds", dest="cv_folds", type=int, default=5)
    p.add_argument("--cv-max-rows", "--cv_max_rows", dest="cv_max_rows", type=int, default=20_000)
    p.add_argument("--data-kind", "--data_kind", dest="data_kind", choices=DATA_KINDS, default="static")
    p.add_argument(
        "--target-transform", "--target_transform", dest="target_transform", choices=("none", "log", "log1p"),
        default="none",
    )  # fmt: skip
    args, rest = p.parse_known_args(argv)
    if len(rest) % 2:
        raise SystemExit(f"hyper-parameters must come as --name value pairs, got {rest}")
    params = {}
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if not name.startswith("--"):
            raise SystemExit(f"expected --name before {value!r}, got {name!r}")
        params[name[2:].replace("-", "_")] = _value(value)
    return args, params


def read_channel(folder: str | os.PathLike) -> pd.DataFrame:
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"channel {folder} holds no .parquet files")
    return (
        pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        if len(files) > 1
        else pd.read_parquet(files[0])
    )


def _xy(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    amount = df[AMOUNT_COL].to_numpy(dtype="float64") if AMOUNT_COL in df.columns else None
    X = df.drop(columns=[c for c in (TARGET_COL, AMOUNT_COL) if c in df.columns]).to_numpy(dtype="float32")
    return X, df[TARGET_COL].to_numpy(), amount


class _Trial:
    """Fits the trial's model on some rows and scores predictions, the same way for every fold and
    for the model that is kept."""

    def __init__(self, args: argparse.Namespace, params: dict[str, Any], *, threads: int) -> None:
        self.args, self.params, self.threads = args, params, threads
        self.binary = args.problem_type == "binary_classification"
        self.transform = "none" if self.binary else args.target_transform

    def fit(self, X: np.ndarray, y: np.ndarray, *, score_fit_rows: bool) -> tuple[Any, np.ndarray | None, int]:
        """``(model, its predictions for X on the fitted scale or None, rows fitted)``: resampled
        (binary) or transformed (regression) as the trial asks; a transformed model predicts on
        the original scale (:class:`TargetTransformed`)."""
        a = self.args
        pos_weight = 1.0
        if self.binary:
            X_fit, y_fit = apply_resampling(X, y, method=a.resample, seed=a.seed, ratio=a.resample_ratio)
            n_pos = max(int(y_fit.sum()), 1)
            pos_weight = (len(y_fit) - n_pos) / n_pos
        else:
            X_fit, y_fit = X, transform_target(y, self.transform)
        model = build_model(
            a.family,
            self.params,
            binary=self.binary,
            seed=a.seed,
            class_weight=a.class_weight,
            pos_weight=pos_weight,
            n_jobs=self.threads,
        )
        z = None
        if score_fit_rows and X_fit is X:  # the fit's own predictions are the training scores (no second pass)
            z = fit_and_predict(model, X_fit, y_fit, binary=self.binary)
        else:
            fit_model(model, X_fit, y_fit)
            if score_fit_rows:  # resampled: score the original rows
                z = predict(model, X, binary=self.binary)
        if self.transform != "none":
            model = TargetTransformed(model, self.transform)
        return model, z, len(y_fit)

    def evaluate(self, y: np.ndarray, s: np.ndarray, z: np.ndarray | None, amount: np.ndarray | None) -> dict:
        """``score`` (the goal metric on the original scale), the smooth metrics and, with a target
        transform, ``score_transformed`` (the goal metric of the fitted-scale predictions ``z``)."""
        a = self.args

        def goal(yy: np.ndarray, ss: np.ndarray) -> float:
            return float(goal_metric(a.metric, yy, ss, amount=amount, max_alert_rate=a.max_alert_rate, threshold=0.5))

        out: dict[str, Any] = {"score": goal(y, s), **smooth_scores(y, s, binary=self.binary)}
        if self.transform != "none":
            out["score_transformed"] = goal(transform_target(y, self.transform), z)
        return out

    def predictions(self, model: Any, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return predict_both(model, X, binary=self.binary)


def _join(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else np.concatenate([a, b])


def _mean(values: list[Any]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if len(kept) == len(values) and kept else None


def _cross_validate(
    trial: _Trial, sel: Selection, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], log: Any
) -> list[dict[str, Any]]:
    """The trial scored on each fold of the train + validation rows (fitted on the other folds)."""
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    amounts = [p[2] for p in parts if p[2] is not None]
    amount = np.concatenate(amounts) if len(amounts) == len(parts) else None
    out = []
    for i, (fit_rows, held) in enumerate(cv_splits(y, sel.folds, seed=trial.args.seed, binary=trial.binary), 1):
        model, _, _ = trial.fit(X[fit_rows], y[fit_rows], score_fit_rows=False)
        s, z = trial.predictions(model, X[held])
        fold = trial.evaluate(y[held], s, z, None if amount is None else amount[held])
        out.append({"rows": len(held), **fold})
        log(f"{trial.args.trial_id}: fold {i}/{sel.folds}: {trial.args.metric} {fold['score']:.4f} on {len(held)} rows")
    return out


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, log: Any = print) -> dict[str, Any]:
    env = os.environ if env is None else env
    args, params = parse_args(sys.argv[1:] if argv is None else argv)
    binary = args.problem_type == "binary_classification"
    if binary and args.target_transform != "none":
        raise SystemExit(f"--target_transform {args.target_transform} applies to regression targets only")
    t0 = time.perf_counter()
    train = read_channel(env["SM_CHANNEL_TRAIN"])
    valid = read_channel(env["SM_CHANNEL_VALIDATION"])
    X_tr, y_tr, amt_tr = _xy(train)
    X_va, y_va, amt_va = _xy(valid)
    del train, valid
    t_read = time.perf_counter() - t0
    if binary:
        y_tr, y_va = y_tr.astype("int8"), y_va.astype("int8")
    else:
        y_tr, y_va = y_tr.astype("float64"), y_va.astype("float64")
        for y in (y_tr, y_va):
            check_target_transform(y, args.target_transform, column=TARGET_COL)
    # SageMaker sets SM_NUM_CPUS to the instance's cores; the local backend sets it to this trial's
    # share of the machine, so trials that run side by side never oversubscribe the cores
    threads = max(1, int(env.get("SM_NUM_CPUS") or os.cpu_count() or 1))
    trial = _Trial(args, params, threads=threads)
    sel = choose_selection(
        args.selection,
        kind=args.data_kind,
        y=np.concatenate([y_tr, y_va]),
        binary=binary,
        folds=args.cv_folds,
        max_rows=args.cv_max_rows,
    )
    log(
        f"{args.trial_id}: fitting {args.family} {params} on {len(y_tr)} rows x {X_tr.shape[1]} features "
        f"with {threads} thread(s); selection {sel.name}: {sel.rule}"
    )
    with threadpool_limits(limits=threads):  # BLAS/OpenMP pools of numpy and scikit-learn too
        t1 = time.perf_counter()
        folds = _cross_validate(trial, sel, [(X_tr, y_tr, amt_tr), (X_va, y_va, amt_va)], log) if sel.folds else []
        t_cv = time.perf_counter() - t1
        # the model kept: a cross-validated regression is refitted on every non-test row (nothing is
        # chosen on the validation rows later); otherwise fitted on the train channel, so the binary
        # threshold and calibrator are chosen on validation rows it did not fit
        refit = bool(folds) and not binary
        X_fit, y_fit, amt_fit = (
            (np.concatenate([X_tr, X_va]), np.concatenate([y_tr, y_va]), _join(amt_tr, amt_va))
            if refit
            else (X_tr, y_tr, amt_tr)
        )
        t1 = time.perf_counter()
        model, z_fit, n_fit = trial.fit(X_fit, y_fit, score_fit_rows=True)
        t_fit = time.perf_counter() - t1
        s_va, z_va = trial.predictions(model, X_va)
    assert z_fit is not None
    s_fit = inverse_target(z_fit, trial.transform) if not binary else z_fit
    on_train = trial.evaluate(y_fit, s_fit, z_fit, amt_fit)
    on_validation = trial.evaluate(y_va, s_va, z_va, amt_va)
    # what the trials are compared by: the fold means under cv, the validation channel under holdout
    chosen = {k: _mean([f[k] for f in folds]) for k in on_validation} if folds else on_validation
    result: dict[str, Any] = {
        "trial_id": args.trial_id,
        "family": args.family,
        "params": params,
        "metric": args.metric,
        "train_score": on_train["score"],
        "validation_score": chosen["score"],
        **{f"validation_{k}": v for k, v in chosen.items() if k not in ("score", "score_transformed")},
        "selection": sel.name,
        "selection_rule": sel.rule,
        "fitted_on": "train+validation" if refit else "train",
        "n_train": len(y_tr),
        "n_fit": n_fit,
        "n_validation": len(y_va),
        "n_features": int(X_tr.shape[1]),
        "resample": args.resample,
        "target_transform": trial.transform,
        "threads": threads,
        "seconds": {
            "read": round(t_read, 3),
            "cv": round(t_cv, 3),
            "fit": round(t_fit, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    }
    if folds:
        scores = [f["score"] for f in folds]
        result.update(
            validation_fold_scores=scores,
            validation_score_sd=float(np.std(scores, ddof=1)),
            n_cv=int(sum(f["rows"] for f in folds)),
        )
        if not refit:  # the kept model on the validation channel (rows it did not fit)
            result["holdout_validation_score"] = on_validation["score"]
    if trial.transform != "none":
        result.update(
            train_score_transformed=on_train["score_transformed"],
            validation_score_transformed=chosen["score_transformed"],
        )
    model_dir = Path(env["SM_MODEL_DIR"])
    result["model_files"] = save_model(model, args.family, model_dir)
    out = Path(env["SM_OUTPUT_DATA_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    spread = f" (sd {result['validation_score_sd']:.4f} over {sel.folds} folds)" if folds else ""
    scale = (
        f"; on the {trial.transform} scale: train {result['train_score_transformed']:.4f}, "
        f"selection {result['validation_score_transformed']:.4f}"
        if trial.transform != "none"
        else ""
    )
    # one "validation <metric>=<score>" line: SageMaker tuning reads its objective from it
    log(
        f"{args.trial_id}: train {args.metric}={result['train_score']:.4f}, "
        f"validation {args.metric}={result['validation_score']:.4f} [{sel.name}]{spread}{scale} "
        f"({result['seconds']['fit']}s fit)"
    )
    return result


if __name__ == "__main__":  # pragma: no cover - the container's entry point
    main()
