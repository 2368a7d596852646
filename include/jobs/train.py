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

from include.lifecycle.evaluate_model import goal_metric
from include.lifecycle.features import apply_resampling
from include.lifecycle.models import (
    AMOUNT_COL,
    TARGET_COL,
    build_model,
    fit_and_predict,
    fit_model,
    predict,
    save_model,
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
    }
    if goal.max_alert_rate is not None:
        args["max_alert_rate"] = goal.max_alert_rate
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


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, log: Any = print) -> dict[str, Any]:
    env = os.environ if env is None else env
    args, params = parse_args(sys.argv[1:] if argv is None else argv)
    binary = args.problem_type == "binary_classification"
    t0 = time.perf_counter()
    train = read_channel(env["SM_CHANNEL_TRAIN"])
    valid = read_channel(env["SM_CHANNEL_VALIDATION"])
    X_tr, y_tr, amt_tr = _xy(train)
    X_va, y_va, amt_va = _xy(valid)
    del train, valid
    t_read = time.perf_counter() - t0
    pos_weight = 1.0
    if binary:
        y_tr = y_tr.astype("int8")
        y_va = y_va.astype("int8")
        X_fit, y_fit = apply_resampling(X_tr, y_tr, method=args.resample, seed=args.seed, ratio=args.resample_ratio)
        n_pos = max(int(y_fit.sum()), 1)
        pos_weight = (len(y_fit) - n_pos) / n_pos
    else:
        X_fit, y_fit = X_tr, y_tr.astype("float64")
    # SageMaker sets SM_NUM_CPUS to the instance's cores; the local backend sets it to this trial's
    # share of the machine, so trials that run side by side never oversubscribe the cores
    threads = max(1, int(env.get("SM_NUM_CPUS") or os.cpu_count() or 1))
    log(
        f"{args.trial_id}: fitting {args.family} {params} on {len(y_fit)} rows x {X_fit.shape[1]} features "
        f"with {threads} thread(s)"
    )
    model = build_model(
        args.family,
        params,
        binary=binary,
        seed=args.seed,
        class_weight=args.class_weight,
        pos_weight=pos_weight,
        n_jobs=threads,
    )
    with threadpool_limits(limits=threads):  # BLAS/OpenMP pools of numpy and scikit-learn too
        t1 = time.perf_counter()
        if X_fit is X_tr:  # the fit's own predictions are the training scores (no second pass over the rows)
            s_tr = fit_and_predict(model, X_fit, y_fit, binary=binary)
            t_fit = time.perf_counter() - t1
        else:  # resampled: score the original training rows
            fit_model(model, X_fit, y_fit)
            t_fit = time.perf_counter() - t1
            s_tr = predict(model, X_tr, binary=binary)
        s_va = predict(model, X_va, binary=binary)

    def score(y: np.ndarray, s: np.ndarray, amount: np.ndarray | None) -> float:
        return float(goal_metric(args.metric, y, s, amount=amount, max_alert_rate=args.max_alert_rate, threshold=0.5))

    result = {
        "trial_id": args.trial_id,
        "family": args.family,
        "params": params,
        "metric": args.metric,
        "train_score": score(y_tr, s_tr, amt_tr),
        "validation_score": score(y_va, s_va, amt_va),
        "n_train": len(y_tr),
        "n_fit": len(y_fit),
        "n_validation": len(y_va),
        "n_features": int(X_tr.shape[1]),
        "resample": args.resample,
        "threads": threads,
        "seconds": {"read": round(t_read, 3), "fit": round(t_fit, 3), "total": round(time.perf_counter() - t0, 3)},
    }
    model_dir = Path(env["SM_MODEL_DIR"])
    result["model_files"] = save_model(model, args.family, model_dir)
    out = Path(env["SM_OUTPUT_DATA_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    log(
        f"{args.trial_id}: train {args.metric}={result['train_score']:.4f}, "
        f"validation {args.metric}={result['validation_score']:.4f} ({result['seconds']['fit']}s fit)"
    )
    return result


if __name__ == "__main__":  # pragma: no cover - the container's entry point
    main()
