"""Benchmark: the deployed model's holdout score against a hand-tuned scikit-learn / xgboost
reference on the very same split (run by hand, never by `make test`).

For each shipped static spec (scikit-learn's bundled data sets: ``breast_cancer``, ``diabetes``;
no other data set ships with an installed package and nothing can be downloaded here) it

1. runs the whole lifecycle once with ``airflow dags test`` on a fresh artifact root (or, with
   ``--artifact-root``, reads a run already there);
2. rebuilds the run's split with the project's own function (``dataset.make_split`` on the run's
   data set, as ``feature_engineering`` and ``evaluate_model`` do) and checks it is the run's:
   the counts of ``split.json`` and the digest of the test rows in ``evaluation.json``; the
   candidate's stored test scores give the run's test score again, and the deployed registry
   bundle scores the raw test rows to the same values;
3. tunes a reference by hand the way an analyst would, on the train + validation rows with every
   raw column: ``GridSearchCV`` (5-fold x 2 repeats, stratified for a binary target, seeded with the
   spec's ``training.seed``) over a grid per family - logistic / ridge regression (imputed,
   scaled), random forest, xgboost - scored by the spec's goal metric; the family with the best
   cross-validated score is refit on all train + validation rows; and the same again on only the
   columns the lifecycle's model was built from (its feature groups), which tells a gap of
   features from a gap of tuning;
4. scores them on the same test rows with the same goal metric (``assessment.goal_value``), with
   the run's own bootstrap resamples (``assessment.resample_sets``): an interval for each and the
   paired interval of the difference lifecycle model - reference. The lifecycle's model is the
   one the gate judged last: the deployed model, or the best candidate when none was deployed.

It prints a table and writes ``bench/results/reference-<date>.json``.

    .venv/bin/python bench/reference_models.py
    .venv/bin/python bench/reference_models.py --problems diabetes --keep
    .venv/bin/python bench/reference_models.py --artifact-root /tmp/…/artifacts   # read existing runs
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

PY = sys.executable
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
PROBLEMS = ("breast_cancer", "diabetes")
MARGIN = 0.02  # the acceptance: the deployed score within 0.02 of the reference
# the goal metric as a scikit-learn scorer (threshold-free metrics only: a reference needs no threshold)
SCORERS = {
    "auprc": "average_precision",
    "roc_auc": "roc_auc",
    "r2": "r2",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
}


# --- 1. the lifecycle run ---------------------------------------------------------------------
def run_lifecycle(work: Path, problem: str, problems: Path | None = None, artifacts: Path | None = None) -> float:
    """One whole-DAG run of ``problem`` for AS_OF under ``work`` (specs from ``problems``, default
    include/problems; artifacts under ``artifacts``, default ``<work>/artifacts``); its wall time in seconds."""
    from lifecycle import airflow_env  # bench/lifecycle.py: the same environment as make bench

    env = airflow_env(work, artifacts or work / "artifacts", problems or ROOT / "include" / "problems")
    if not (work / "airflow" / "airflow.db").exists():
        subprocess.run([PY, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [PY, "-m", "airflow", "dags", "test", problem, AS_OF.date().isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"airflow dags test {problem} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


# --- 2. the run's split, test rows and deployed model -----------------------------------------
def _digest(df: Any) -> str:
    """The digest evaluate_model records of the test rows (``sections.evaluation.test_rows_digest``)."""
    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()


def read_run(artifact_root: Path, problem: str, spec_file: Path | None = None) -> dict[str, Any]:
    """The run of ``problem`` under ``artifact_root`` (the newest, if several): its summary, the
    decisive round's evaluation, the test rows and train + validation rows of its split (checked
    against the run's records), the candidate's scores on the test rows, and the deployed bundle's
    scores on the same rows (None when nothing was deployed)."""
    from include.lifecycle.assessment import goal_value
    from include.lifecycle.bundle import ModelBundle
    from include.lifecycle.dataset import TEST, TRAIN, make_split, target_vector
    from include.lifecycle.layout import RUNS, RunLayout
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.spec import load_spec
    from include.lifecycle.store import Store

    spec = load_spec(spec_file or ROOT / "include" / "problems" / f"{problem}.yaml")
    store = Store.from_uri((artifact_root / problem).resolve().as_uri())
    runs = store.ls(RUNS)
    if not runs:
        raise SystemExit(f"no run of {problem} under {artifact_root / problem}")
    run = max(runs, key=lambda r: store.fs.modified(store.path(RunLayout(r).dir)).timestamp())
    layout = RunLayout(run)
    summary = store.read_json(layout.run_summary)
    decisive = [r for r in summary["rounds"] if r.get("goal_check")][-1]
    ev = store.read_json(layout.round(decisive["round"]).evaluation)
    origin = layout.round(ev.get("origin_round") or decisive["round"])
    plan = store.read_json(origin.plan)
    df = store.read_parquet(plan["dataset_rel"])
    y = target_vector(df[spec.problem.target], spec)
    made = make_split(df, spec, y, as_of=AS_OF)
    recorded = store.read_json(origin.split)
    if made.windows != recorded:
        raise SystemExit(f"{problem}: the split rebuilt here differs from the run's:\n{made.windows}\n{recorded}")
    test = made.assignment == TEST
    if _digest(df[test].drop(columns=[spec.problem.target])) != ev["test_rows_digest"]:
        raise SystemExit(f"{problem}: the test rows rebuilt here are not the rows the run was tested on")
    scores = store.read_parquet(layout.round(decisive["round"]).test_scores)["score"].to_numpy()
    threshold = ev.get("threshold")
    again = goal_value(spec, y[test], scores, amount=None, threshold=threshold)
    if not np.isclose(again, ev["test_score"], rtol=0, atol=1e-9):
        raise SystemExit(f"{problem}: the stored test scores give {again}, the run reported {ev['test_score']}")
    bundle_scores = None
    if summary["decision"] == "deployed":
        reg = ModelRegistry(store, problem)
        version = summary["model_version"]
        with tempfile.TemporaryDirectory() as tmp:
            bundle = ModelBundle.load(reg.materialise(version, tmp))
        bundle_scores = bundle.score(df[test].drop(columns=[spec.problem.target]))
        if not np.allclose(bundle_scores, scores, rtol=1e-4, atol=1e-5):
            raise SystemExit(f"{problem}: the deployed bundle does not score the test rows as the run did")
    return {
        "spec": spec,
        "run": run,
        "summary": summary,
        "evaluation": ev,
        "df": df,
        "y": y,
        "test": test,
        "train": made.assignment == TRAIN,
        "scores": scores,
        "threshold": threshold,
        "bundle_checked": bundle_scores is not None,
    }


# --- 3. the hand-tuned reference --------------------------------------------------------------
def _preprocessing(categorical: list[str] | None, numeric: list[str] | None, *, scale: bool) -> list[Any]:
    """The steps before an estimator: all-numeric input (``categorical`` None) is median-imputed
    (and scaled for linear models); a frame with text columns gets the usual analyst's
    ``ColumnTransformer``: numeric median-imputed (scaled), text imputed as "missing" and one-hot
    encoded (levels seen fewer than 10 times share one column, unseen levels are ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num = [SimpleImputer(strategy="median"), *([StandardScaler()] if scale else [])]
    if categorical is None:
        return num
    text = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10, sparse_output=False),
    )
    return [
        ColumnTransformer(
            [("numeric", make_pipeline(*num), list(numeric or [])), ("text", text, list(categorical))],
            sparse_threshold=0.0,
        )
    ]


def _grids(
    binary: bool, seed: int, categorical: list[str] | None = None, numeric: list[str] | None = None
) -> dict[str, tuple[Any, dict[str, list[Any]]]]:
    """Per family: the estimator (its preprocessing included) and the grid an analyst would search.
    ``categorical`` and ``numeric`` name the columns of a frame with text columns (None: an all-numeric array)."""
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline

    linear = (
        ("logistic", LogisticRegression(max_iter=5000), "C", np.logspace(-3, 2, 11))
        if binary
        else ("ridge", Ridge(), "alpha", np.logspace(-3, 3, 13))
    )
    name, est, key, values = linear
    forest = (RandomForestClassifier if binary else RandomForestRegressor)(
        n_estimators=300, random_state=seed, n_jobs=1
    )
    boost = (xgb.XGBClassifier if binary else xgb.XGBRegressor)(
        n_estimators=400, tree_method="hist", random_state=seed, n_jobs=1
    )
    # xgboost takes missing values as they are; text columns are one-hot encoded for it
    boost_steps = [] if categorical is None else [_preprocessing(categorical, numeric, scale=False)[0]]
    boost_key = "" if categorical is None else f"{type(boost).__name__.lower()}__"
    return {
        name: (
            make_pipeline(*_preprocessing(categorical, numeric, scale=True), est),
            {f"{type(est).__name__.lower()}__{key}": list(values)},
        ),
        "random_forest": (
            make_pipeline(*_preprocessing(categorical, numeric, scale=False), forest),
            {
                f"{type(forest).__name__.lower()}__max_depth": [None, 4, 8],
                f"{type(forest).__name__.lower()}__min_samples_leaf": [1, 3, 10],
                f"{type(forest).__name__.lower()}__max_features": ["sqrt", 0.5, 1.0],
            },
        ),
        "xgboost": (
            make_pipeline(*boost_steps, boost) if boost_steps else boost,
            {
                f"{boost_key}{k}": v
                for k, v in {
                    "max_depth": [1, 2, 3, 4] if not binary else [2, 3, 4],
                    "learning_rate": [0.01, 0.03, 0.1],
                    "subsample": [0.7, 1.0],
                    "colsample_bytree": [0.5, 1.0],
                    "min_child_weight": [1, 5],
                }.items()
            },
        ),
    }


def raw_columns(df: Any, spec: Any) -> list[str]:
    """Every column a user would model from: the data set without the target, the key, the time and
    entity columns and PII (text columns are one-hot encoded by the reference, see ``_preprocessing``)."""
    drop = {spec.problem.target, spec.data.key, spec.data.time_column, spec.data.entity_column}
    drop |= {c.name for c in spec.schema_.columns if getattr(c, "pii", False)}
    return [c for c in df.columns if c not in drop]


def text_columns(df: Any, columns: list[str]) -> list[str]:
    """The columns of ``columns`` that are not numeric (or boolean): the reference one-hot encodes them."""
    import pandas as pd

    return [c for c in columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]


def model_input(df: Any, columns: list[str]) -> tuple[Any, list[str] | None, list[str] | None]:
    """The reference's input: a float array when every column is numeric (then no column lists),
    else the frame with text columns as objects (missing as NaN) and the lists of text and numeric columns."""
    text = text_columns(df, columns)
    if not text:
        return df[columns].to_numpy(dtype="float64"), None, None
    X = df[columns].copy()
    for c in columns:
        X[c] = X[c].astype(object).where(X[c].notna(), np.nan) if c in text else X[c].astype("float64")
    return X, text, [c for c in columns if c not in text]


def model_columns(spec: Any, feature_groups: list[str], available: list[str]) -> list[str]:
    """The declared columns the lifecycle's model was built from (its feature groups' inputs)."""
    used = {c for g in spec.features.groups if g.name in feature_groups for c in g.columns}
    return [c for c in available if c in used]


def tune_reference(
    spec: Any,
    X: Any,
    y: np.ndarray,
    *,
    cores: int,
    categorical: list[str] | None = None,
    numeric: list[str] | None = None,
    repeats: int = 2,
) -> dict[str, Any]:
    """GridSearchCV per family on ``X, y`` (train + validation rows), scored by the goal metric;
    returns each family's best (fitted on all of ``X``) and the family chosen by its CV score."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection import GridSearchCV, RepeatedKFold, RepeatedStratifiedKFold

    seed = spec.training.seed
    binary = spec.is_binary
    if spec.goal.metric not in SCORERS:
        raise SystemExit(f"{spec.name}: goal metric {spec.goal.metric} needs a threshold; not supported here")
    cv = (RepeatedStratifiedKFold if binary else RepeatedKFold)(n_splits=5, n_repeats=repeats, random_state=seed)
    transform = getattr(spec.problem, "target_transform", "none")
    out: dict[str, Any] = {}
    for family, (est, grid) in _grids(binary, seed, categorical, numeric).items():
        if transform != "none":
            fn, inv = (np.log, np.exp) if transform == "log" else (np.log1p, np.expm1)
            est = TransformedTargetRegressor(regressor=est, func=fn, inverse_func=inv)
            grid = {f"regressor__{k}": v for k, v in grid.items()}
        t0 = time.perf_counter()
        search = GridSearchCV(est, grid, scoring=SCORERS[spec.goal.metric], cv=cv, n_jobs=cores, refit=True)
        search.fit(X, y)
        sign = -1.0 if SCORERS[spec.goal.metric].startswith("neg_") else 1.0
        out[family] = {
            "search": search,
            "cv_score": float(sign * search.best_score_),
            "cv_sd": float(search.cv_results_["std_test_score"][search.best_index_]),
            "params": {k.split("__")[-1]: _plain(v) for k, v in search.best_params_.items()},
            "grid_size": len(search.cv_results_["params"]),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    hib = spec.goal.higher_is_better
    chosen = max(out, key=lambda f: out[f]["cv_score"] if hib else -out[f]["cv_score"])
    return {"families": out, "chosen": chosen}


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _predict(model: Any, X: Any, binary: bool) -> np.ndarray:
    return model.predict_proba(X)[:, 1] if binary else np.asarray(model.predict(X), dtype="float64")


# --- 4. the comparison on the same test rows --------------------------------------------------
def reference(r: dict[str, Any], columns: list[str], *, cores: int, repeats: int = 2) -> dict[str, Any]:
    """The hand-tuned reference on ``columns`` of the run ``r``: tuned and refit on the train +
    validation rows, scored on the test rows with the run's resamples, and the paired difference
    lifecycle model - reference (positive: the lifecycle's model is better)."""
    from sklearn.base import clone

    from include.lifecycle.assessment import goal_value

    spec, y, test, train = r["spec"], r["y"], r["test"], r["train"]
    binary = spec.is_binary
    X, categorical, numeric = model_input(r["df"], columns)
    tuned = tune_reference(
        spec, X[~test], y[~test], cores=cores, categorical=categorical, numeric=numeric, repeats=repeats
    )
    y_te = y[test]
    families, scores = {}, {}
    for family, f in tuned["families"].items():
        scores[family] = _predict(f["search"].best_estimator_, X[test], binary)
        # the same tuned model fit on the training rows only: the rows the lifecycle's model was fit on
        on_train = clone(f["search"].best_estimator_).fit(X[train], y[train])
        families[family] = {
            **{k: v for k, v in f.items() if k != "search"},
            "test_score": goal_value(spec, y_te, scores[family], amount=None, threshold=None),
            "test_score_fit_on_train_rows_only": goal_value(
                spec, y_te, _predict(on_train, X[test], binary), amount=None, threshold=None
            ),
        }
    chosen = tuned["chosen"]
    return {
        "columns": columns,
        "family": chosen,
        **against(r, scores[chosen]),
        "families": families,
    }


def against(r: dict[str, Any], ref_scores: np.ndarray) -> dict[str, Any]:
    """The reference's scores ``ref_scores`` of the test rows of the run ``r``: its test score and
    interval with the run's bootstrap resamples, and the paired difference lifecycle model - reference
    (positive: the lifecycle's model is better) on the same resamples."""
    from include.lifecycle.assessment import goal_value, resample_sets
    from include.lifecycle.uncertainty import interval, paired_difference

    spec, y_te = r["spec"], r["y"][r["test"]]
    goal, sets = spec.goal, resample_sets(spec, y_te)

    def metric(scores: np.ndarray, threshold: float | None = None):
        return lambda rows: goal_value(spec, y_te[rows], scores[rows], amount=None, threshold=threshold)

    diff = paired_difference(
        metric(r["scores"], r["threshold"]),
        metric(ref_scores),
        sets,
        higher_is_better=goal.higher_is_better,
        level=goal.confidence,
    )
    return {
        "test_score": goal_value(spec, y_te, ref_scores, amount=None, threshold=None),
        "interval": interval(metric(ref_scores), sets, level=goal.confidence),
        "difference": diff,
        "within_margin": bool(diff["value"] >= -MARGIN),
        "scores": ref_scores,  # the chosen family's test scores (left out of the results file)
    }


def compare(problem: str, artifact_root: Path, *, cores: int) -> dict[str, Any]:
    """The lifecycle's model against the hand-tuned reference on every raw column and, when the
    model used fewer, on the same columns as the model (which separates the features from the tuning)."""
    r = read_run(artifact_root, problem)
    spec, ev, s = r["spec"], r["evaluation"], r["summary"]
    origin = ev.get("origin_round") or ev["round"]
    groups = next(x["plan"]["feature_groups"] for x in s["rounds"] if x["round"] == origin)
    every = raw_columns(r["df"], spec)
    own = model_columns(spec, groups, every)
    out = {
        "problem": problem,
        "run": r["run"],
        "metric": spec.goal.metric,
        "target": spec.goal.target,
        "seed": spec.training.seed,
        "decision": s["decision"],
        "model_version": s["model_version"],
        "bundle_checked": r["bundle_checked"],
        "rows": {
            "test": int(r["test"].sum()),
            "train_validation": int((~r["test"]).sum()),
            "train": int(r["train"].sum()),
        },
        # the model the gate judged last: the deployed one, or the best candidate when none was deployed
        "model": {
            "deployed": s["decision"] == "deployed",
            "round": origin,
            "family": ev["family"],
            "params": ev["params"],
            "feature_groups": groups,
            "columns": own,
            "test_score": ev["test_score"],
            "interval": ev["goal_check"]["interval"],
        },
        "reference": reference(r, every, cores=cores),
    }
    out["reference_on_model_columns"] = reference(r, own, cores=cores) if own != every else out["reference"]
    for ref in (out["reference"], out["reference_on_model_columns"]):
        ref.pop("scores", None)
    return out


def _ci(c: dict[str, Any]) -> str:
    return f"{c['value']:.4f} [{c['low']:.4f}, {c['high']:.4f}]"


def table(rows: list[dict[str, Any]]) -> str:
    cols = (
        ("spec", 15),
        ("metric", 8),
        ("decision", 14),
        ("lifecycle model [95% CI]", 26),
        ("model", 28),
        ("reference [95% CI]", 26),
        ("reference", 16),
        ("model - reference [95% CI]", 29),
        (f"within {MARGIN}", 12),
        ("model - reference on the model's columns", 0),
    )
    head = "".join(f"{name:<{width}}" for name, width in cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        m, ref, same = r["model"], r["reference"], r["reference_on_model_columns"]
        model = f"{m['family']}, {'+'.join(m['feature_groups'])}"
        cells = (
            r["problem"],
            r["metric"],
            r["decision"],
            _ci(m["interval"]),
            model[:27],
            _ci(ref["interval"]),
            ref["family"],
            _ci(ref["difference"]),
            "yes" if ref["within_margin"] else "no",
            f"{_ci(same['difference'])} ({same['family']}, {len(same['columns'])} columns)",
        )
        lines.append("".join(f"{c:<{w}}" for c, (_, w) in zip(cells, cols, strict=True)))
    lines += [
        "",
        "reference per family: CV score +- sd (train+validation) | test (refit on train+validation) | test (fit on train only)",
    ]
    for r in rows:
        for label, ref in (("every column", r["reference"]), ("model's columns", r["reference_on_model_columns"])):
            if label == "model's columns" and ref is r["reference"]:
                continue
            for fam, f in ref["families"].items():
                lines.append(
                    f"  {r['problem']:<14}{label:<17}{fam:<15}{f['cv_score']:.4f} +- {f['cv_sd']:.4f} | "
                    f"{f['test_score']:.4f} | {f['test_score_fit_on_train_rows_only']:.4f}   {json.dumps(f['params'])}"
                )
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    p.add_argument("--artifact-root", type=Path, default=None, help="read the runs there instead of running")
    p.add_argument("--cores", type=int, default=2, help="parallel fits of the grid search")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/reference-<date>.json")
    args = p.parse_args(argv)
    work = None if args.artifact_root else Path(tempfile.mkdtemp(prefix="bench-reference-"))
    results, run_seconds = [], {}
    try:
        for problem in args.problems:
            if work is not None:
                print(f"[{problem}] airflow dags test ...", file=sys.stderr, flush=True)
                run_seconds[problem] = round(run_lifecycle(work, problem), 1)
            print(f"[{problem}] reference grid search ...", file=sys.stderr, flush=True)
            results.append(compare(problem, args.artifact_root or work / "artifacts", cores=args.cores))
    finally:
        if work is not None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif work is not None:
            print(f"kept {work}", file=sys.stderr)
    print(table(results), flush=True)
    out = args.out or ROOT / "bench" / "results" / f"reference-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine(), "as_of": AS_OF.isoformat(), "run_seconds": run_seconds, "results": results}
    out.write_text(json.dumps(record, indent=2, default=str))
    print(f"machine: {machine()}\nwritten: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
