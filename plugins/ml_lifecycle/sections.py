"""The lifecycle's sections as task callables: I/O through the artifact store, logic in include/.

Each callable takes the problem name (and round) plus the Airflow context, reads its inputs
from run-scoped paths, writes its outputs atomically under the run folder and returns small
JSON for XCom. Re-running a task rewrites the same files with the same content.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ml_lifecycle.context import RunContext

ROUND = "round_{k}"


def _fail(msg: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(msg)


def _log(msg: str) -> None:
    import logging

    logging.getLogger("airflow.task").info(msg)


def code_version() -> str:
    """The git commit of the project (``+dirty`` when the work tree differs), or $ML_CODE_VERSION."""
    if os.environ.get("ML_CODE_VERSION"):
        return os.environ["ML_CODE_VERSION"]
    from include.lifecycle.spec import PROJECT_ROOT

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- section 1 -----------------------------------------------------------------------------
def _rows_in_partitions(
    src: Any, fmt: str, start: str, end: str, what: str, *, include_end: bool = False
) -> tuple[list[str], int]:
    """The ``ds=`` partitions of ``src`` in ``[start, end)`` (``]`` with ``include_end``) and their
    rows (Parquet: from the footers; CSV: lines after the header), listed as strictly as the ETL."""
    import pyarrow.parquet as pq

    from include.lifecycle.collect import partition_files, scan_partitions

    parts = [ds for ds in scan_partitions(src, what).partitions if start <= ds < end or (include_end and ds == end)]
    rows = 0
    for ds in parts:
        names, _ = partition_files(src, ds, fmt, what)
        for name in names:
            if fmt == "parquet":
                rows += pq.ParquetFile(src.path(f"ds={ds}", name), filesystem=src.fs).metadata.num_rows
            else:
                rows += max(src.read_bytes(f"ds={ds}/{name}").count(b"\n") - 1, 0)
    return parts, rows


def formulate_problem(problem: str, **context: Any) -> dict[str, Any]:
    """Check the spec against the data that is actually there and write the problem card."""
    from include.lifecycle.collect import window_dates
    from include.lifecycle.decide import initial_plan
    from include.lifecycle.spec import resolve_source

    rc = RunContext.from_airflow(problem, context)
    spec = rc.spec
    checks: list[dict[str, Any]] = []
    available: dict[str, Any] = {}
    if spec.data.layout == "partitioned":
        src = rc.input_store(resolve_source(spec.data.source))
        start, end = window_dates(rc.as_of, rc.lookback_days)
        # the ETL's own strict listing: a folder that is not a valid ds= partition, or a file of
        # another format, fails here in section 1, naming it
        parts, rows = _rows_in_partitions(src, spec.data.format, start, end, "data.source")
        available.update(window=[start, end], partitions=len(parts), rows=rows)
        checks.append(
            {
                "check": "data in window",
                "passed": bool(parts),
                "detail": f"{len(parts)} partitions, {rows} rows in [{start}, {end}) under {src.uri()}",
            }
        )
        if spec.data.labels is not None:
            lab = rc.input_store(resolve_source(spec.data.labels.source))
            _, n_labels = _rows_in_partitions(
                lab, spec.data.labels.format, start, end, "data.labels.source", include_end=True
            )
            rate = n_labels / rows if rows else 0.0
            available.update(label_rows=n_labels, approx_base_rate=rate)
            checks.append(
                {
                    "check": "target present (label feed)",
                    "passed": n_labels > 0,
                    "detail": f"{n_labels} label rows in the window's feed; base rate about {rate:.4%}",
                }
            )
            checks.append(
                {
                    "check": "enough positives",
                    "passed": n_labels >= spec.quality.min_positives,
                    "detail": f"{n_labels} >= {spec.quality.min_positives} (quality.min_positives)",
                }
            )
    else:
        from include.lifecycle.collect import read_single_source
        from include.lifecycle.dataset import describe_values, positive_mask, target_missing

        name, df = read_single_source(resolve_source(spec.data.source), spec.data.format)
        target = spec.problem.target
        present = target in df.columns
        available.update(source=name, rows=len(df))
        unlabelled = int(target_missing(df[target]).sum()) if present and spec.data.labels is None else 0
        unlabelled_note = f"; {unlabelled} rows without a value (collect quarantines them: target_missing)"
        checks.append(
            {
                "check": "target present",
                "passed": present,
                "detail": f"column {target!r} {'found' if present else 'missing'} in {name}"
                + (unlabelled_note if unlabelled else ""),
            }
        )
        if present and spec.is_binary:
            label = spec.problem.positive_label
            y = positive_mask(df[target], label)[~target_missing(df[target])]
            available.update(positives=int(y.sum()), approx_base_rate=float(y.mean()) if len(y) else 0.0)
            if not y.any():  # the label is a typo or of another kind than the data: say what is there
                _fail(
                    f"problem.positive_label {label!r} matches no value of column {target!r} in {name}; "
                    f"values seen: {describe_values(df[target])}"
                )
            checks.append(
                {
                    "check": "enough positives",
                    "passed": int(y.sum()) >= spec.quality.min_positives,
                    "detail": f"{int(y.sum())} positives (label {spec.problem.positive_label!r}), "
                    f"base rate {y.mean():.2%}",
                }
            )
    goal = spec.goal
    baselines = [
        {
            "name": "flag nothing" if spec.is_binary else "predict the training mean",
            "how": "no model: nothing is flagged" if spec.is_binary else "constant prediction",
        }
    ]
    if spec.is_binary and spec.data.amount_column:
        baselines.append({"name": "rule of thumb", "how": f"flag the largest {spec.data.amount_column} values"})
    card = {
        "problem": spec.name,
        "title": spec.title,
        "business_goal": goal.statement,
        "how_used": goal.how_used,
        "assumptions": goal.assumptions,
        "framing": {
            "machine_learning": True,
            "supervised": True,
            "type": spec.problem.type,
            "target": spec.problem.target,
            "positive_label": spec.problem.positive_label if spec.is_binary else None,
        },
        "success_criterion": {
            "metric": goal.metric,
            "target": goal.target,
            "max_alert_rate": goal.max_alert_rate,
            "higher_is_better": goal.higher_is_better,
            "champion_margin": goal.champion_margin,
        },
        "baselines": baselines,
        "data": available,
        "checks": checks,
        "spec_digest": spec.digest(),
        "as_of": rc.as_of.isoformat(),
        "run_id": rc.run_id,
        "backend": rc.params.get("backend") or spec.backend,
        "max_rounds": rc.max_rounds,
    }
    rc.problem.write_json(f"{rc.run_dir}/problem_card.json", card)
    failed = [c for c in checks if not c["passed"]]
    for c in checks:
        _log(f"formulate_problem: {'ok  ' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}")
    if failed:
        _fail("the data cannot support this problem: " + "; ".join(f"{c['check']}: {c['detail']}" for c in failed))
    plan = initial_plan(spec, dataset_rel=f"{rc.run_dir}/dataset.parquet", lookback_days=rc.lookback_days)
    rc.problem.write_json(f"{rc.round_dir(1)}/plan.json", plan)
    return {
        "problem_card_uri": rc.problem.uri(f"{rc.run_dir}/problem_card.json"),
        "checks_passed": len(checks),
        **{k: v for k, v in available.items() if k in ("rows", "partitions", "approx_base_rate")},
    }


# --- section 3 -----------------------------------------------------------------------------
def _column_roles(rc: RunContext, df: Any) -> tuple[list[str], list[str]]:
    import pandas as pd

    spec = rc.spec
    skip = {spec.problem.target, spec.data.key, spec.data.time_column, *spec.pii_columns} - {None}
    numeric, categorical = [], []
    for col in df.columns:
        if col in skip:
            continue
        if pd.api.types.is_bool_dtype(df[col]) or pd.api.types.is_numeric_dtype(df[col]):
            numeric.append(col)
        elif not pd.api.types.is_datetime64_any_dtype(df[col]):
            categorical.append(col)
    return numeric, categorical


def evaluate_data(problem: str, **context: Any) -> dict[str, Any]:
    """Dtypes, descriptive statistics, plots, drift against the previous run, quality gate."""
    from include.lifecycle import evaluate_data as eda

    rc = RunContext.from_airflow(problem, context)
    spec = rc.spec
    collect = rc.problem.read_json(f"{rc.run_dir}/collect_summary.json")
    df = rc.problem.read_parquet(collect["dataset_rel"])
    numeric, categorical = _column_roles(rc, df)
    target_type = "binary" if spec.is_binary else "continuous"
    _log(f"evaluate_data: {len(df)} rows, {len(numeric)} numeric and {len(categorical)} categorical columns")
    previous_ptr = rc.problem.read_json_or("eda/latest.json")
    previous = None
    if previous_ptr and previous_ptr.get("run_id") != rc.run_id and rc.problem.exists(previous_ptr["profile_rel"]):
        previous = rc.problem.read_json(previous_ptr["profile_rel"])
    ref = eda.reference_bins(previous)
    prof = eda.profile(
        df,
        target=spec.problem.target,
        time_column=spec.data.time_column,
        numeric=numeric,
        categorical=categorical,
        positive_label=spec.problem.positive_label,
        target_type=target_type,
        reference_edges=ref.get("edges"),
        reference_categories=ref.get("categories"),
    )
    drift_result = eda.drift(prof, previous)
    if previous is not None:
        drift_result["reference"] = f"run {previous_ptr['run_id']}"
    rows_in = collect["rows_in"] or 1
    expected = [*spec.schema_.names, spec.problem.target]
    if spec.schema_.extra_columns == "keep":  # undeclared columns were kept on purpose: not drift
        expected += [c for c in df.columns if c not in expected]
    verdict = eda.quality_gate(
        prof,
        quality=spec.quality,
        expected_columns=expected,
        drift_result=drift_result,
        quarantine_share=collect["rows_quarantined"] / rows_in,
        max_quarantine_share=spec.schema_.max_quarantine_share,
        ignore_columns=spec.pii_columns,
    )
    pngs = eda.plots(
        df,
        target=spec.problem.target,
        time_column=spec.data.time_column,
        numeric=numeric,
        categorical=categorical,
        positive_label=spec.problem.positive_label,
        target_type=target_type,
        seed=spec.training.seed,
    )
    etl = {k: collect[k] for k in ("rows_in", "rows_curated", "rows_quarantined", "by_rule", "dataset_rows")}
    eda_dir = f"{rc.run_dir}/eda"
    rc.problem.write_json(f"{eda_dir}/profile.json", prof)
    rc.problem.write_json(f"{eda_dir}/verdict.json", {**verdict, "drift": drift_result})
    rc.problem.write_text(f"{eda_dir}/section.html", eda.render_eda_section(prof, pngs, verdict, drift_result, etl))
    html = eda.render_eda_html(f"{spec.title}: data evaluation", prof, pngs, verdict, drift_result, etl)
    rc.problem.write_text(f"{eda_dir}/eda_report.html", html)
    for c in verdict["checks"]:
        _log(f"quality gate: {'ok  ' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}")
    if not verdict["passed"]:
        try:
            eda.raise_if_unfit(verdict)
        except eda.DataQualityError as exc:
            _fail(f"data quality gate: data unfit for training\n{exc}")
    rc.problem.write_json("eda/latest.json", {"run_id": rc.run_id, "profile_rel": f"{eda_dir}/profile.json"})
    return {
        "verdict": verdict["verdict"],
        "rows": len(df),
        "eda_report_uri": rc.problem.uri(f"{eda_dir}/eda_report.html"),
        "max_psi": drift_result.get("max_psi"),
    }


# --- section 4 -----------------------------------------------------------------------------
def _exclude(rc: RunContext) -> list[str]:
    spec = rc.spec
    return sorted(
        {spec.problem.target, spec.data.key, spec.data.time_column, spec.data.entity_column, *spec.pii_columns} - {None}
    )


def _feature_inputs(spec: Any, groups: list[Any], columns: list[str]) -> list[str]:
    """The data set's columns feature engineering reads: all but the key and the PII columns,
    unless they are the time or entity column or a feature group names them (then its check
    reports them). The per-row unique key is the costliest column to read and never a feature."""
    keep = {spec.problem.target, spec.data.time_column, spec.data.entity_column, spec.data.amount_column}
    keep |= {c for g in groups for c in g.columns}
    skip = ({spec.data.key, *spec.pii_columns} - {None}) - keep
    return [c for c in columns if c not in skip]


_IMPORT_SWITCH_INTERVAL = 0.0002
"""Seconds: ``sys.setswitchinterval`` while feature_engineering imports sklearn in the background."""


def _write_channel(store: Any, rel: str, X: Any, names: list[str], target: Any, amount: Any) -> None:
    """One split's channel: the float32 feature columns, the target and the amount, as Parquet.

    Built as an Arrow table straight from the matrix: one transposing copy makes every feature
    column contiguous, and Arrow takes the columns without copying them again."""
    import numpy as np
    import pyarrow as pa

    from include.lifecycle.train import AMOUNT_COL, TARGET_COL

    columns = np.ascontiguousarray(np.asarray(X, dtype=np.float32).T)
    if columns.shape[0] != len(names):
        raise ValueError(f"{columns.shape[0]} feature columns but {len(names)} names")
    arrays = [pa.array(column) for column in columns]
    arrays.append(pa.array(np.asarray(target)))
    names = [*names, TARGET_COL]
    if amount is not None:
        arrays.append(pa.array(np.asarray(amount, dtype=np.float64)))
        names.append(AMOUNT_COL)
    store.write_parquet(rel, pa.Table.from_arrays(arrays, names=names))


def feature_engineering(problem: str, round_no: int, **context: Any) -> dict[str, Any]:
    """Engineer the round's feature groups, fit the preprocessing on train, write the channels."""
    import joblib
    import numpy as np

    from include.lifecycle.bundle import features_config
    from include.lifecycle.dataset import SPLITS, TRAIN, MissingTargetError, SplitError, make_split, target_vector
    from include.lifecycle.features import engineer

    # sklearn (about 0.5-0.9 s to import) loads in the background while the data set is read and the
    # features computed; the import lock makes the main thread wait for it if it is not done. The
    # import holds the GIL: with the default 5 ms switch interval every numpy call of this thread
    # could wait up to 5 ms to get it back, so the interval is short until the import is done.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, _IMPORT_SWITCH_INTERVAL))
    early = ThreadPoolExecutor(1, thread_name_prefix="features-import")
    preprocess = early.submit(importlib.import_module, "include.lifecycle.preprocess")
    preprocess.add_done_callback(lambda _: sys.setswitchinterval(switch))
    early.shutdown(wait=False)  # the thread finishes the import and ends
    rc = RunContext.from_airflow(problem, context)
    spec = rc.spec
    rd = rc.round_dir(round_no)
    plan = rc.problem.read_json(f"{rd}/plan.json")
    _log(f"round {round_no} plan: {json.dumps({k: plan[k] for k in ('feature_groups', 'lookback_days', 'resample')})}")
    dataset_columns = rc.problem.parquet_columns(plan["dataset_rel"])
    input_columns = [c for c in dataset_columns if c != spec.problem.target]
    groups = [spec.group(g) for g in plan["feature_groups"]]
    df = rc.problem.read_parquet(plan["dataset_rel"], columns=_feature_inputs(spec, groups, dataset_columns))
    try:  # the split (and the labels) are the data's: re-running cannot help, so no retries
        y = target_vector(df[spec.problem.target], spec)
        made = make_split(df, spec, y, as_of=rc.as_of)
    except (SplitError, MissingTargetError) as exc:
        _fail(f"feature_engineering round {round_no}: {exc}")
    splits = made.assignment
    rc.problem.write_json(f"{rd}/features/split.json", made.windows)
    feats, cols = engineer(
        df,
        groups,
        time_column=spec.data.time_column,
        entity_column=spec.data.entity_column,
        exclude=_exclude(rc),
        log=_log,
    )
    pre = preprocess.result().make_preprocessor(
        cols, problem_type=spec.problem.type, scale=True, seed=spec.training.seed
    )
    train_mask = splits == TRAIN
    amount = df[spec.data.amount_column].to_numpy(dtype="float64") if spec.data.amount_column else None
    del df  # the features and the vectors above are all that is used from here on
    rows, positives = {}, {}

    def write(split: str, Xs: Any, mask: np.ndarray) -> None:
        rel = f"{rd}/features/{split}/part-0.parquet"
        _write_channel(rc.problem, rel, Xs, names, y[mask], None if amount is None else amount[mask])

    # each split is written in the background while the next one goes through the preprocessor
    # (Parquet encoding releases the GIL)
    with ThreadPoolExecutor(1, thread_name_prefix="features-write") as writer:
        X_train = pre.fit_transform(feats[train_mask], y[train_mask])
        names = [str(n) for n in pre.get_feature_names_out()]
        pending = [writer.submit(write, TRAIN, X_train, train_mask)]
        del X_train
        for split in SPLITS:
            mask = train_mask if split == TRAIN else splits == split
            if split != TRAIN:
                pending.append(writer.submit(write, split, pre.transform(feats[mask]), mask))
            rows[split] = int(mask.sum())
            if spec.is_binary:
                positives[split] = int(y[mask].sum())
        del feats
        for job in pending:
            job.result()
    with tempfile.TemporaryDirectory() as tmp:
        joblib.dump(pre, Path(tmp, "preprocessor.joblib"))
        rc.problem.copy_in(str(Path(tmp, "preprocessor.joblib")), f"{rd}/features/preprocessor.joblib")
    rc.problem.write_json(
        f"{rd}/features/features.json",
        features_config(
            groups=groups,
            columns=cols.to_dict(),
            names=names,
            exclude=_exclude(rc),
            time_column=spec.data.time_column,
            entity_column=spec.data.entity_column,
            problem_type=spec.problem.type,
            input_columns=input_columns,
        ),
    )
    _log(f"feature_engineering: {len(names)} features; rows {rows}; positives {positives}")
    _log(f"feature_engineering: split {json.dumps(made.windows)}")
    return {
        "round": round_no,
        "n_features": len(names),
        "rows": rows,
        "positives": positives,
        "feature_groups": plan["feature_groups"],
        "split": made.windows,
    }


# --- section 5 -----------------------------------------------------------------------------
def plan_trials(problem: str, round_no: int, **context: Any) -> list[dict[str, Any]]:
    from include.lifecycle.train import plan_trials as plan

    rc = RunContext.from_airflow(problem, context)
    p = rc.problem.read_json(f"{rc.round_dir(round_no)}/plan.json")
    trials = plan(
        rc.spec,
        families=p["families"],
        trials_per_family=p["trials_per_family"],
        wide=p["wide_search"],
        round_no=round_no,
    )
    if rc.backend == "aws" and rc.spec.aws.hyperparameter_tuning:
        from include.lifecycle.tuning import as_tuning_jobs

        trials = as_tuning_jobs(rc.spec, trials, wide=p["wide_search"], round_no=round_no)
        for t in trials:
            if t.get("tuning"):
                _log(f"round {round_no}: {t['trial_id']}: one SageMaker tuning job of {t['tuning']['max_jobs']} "
                     f"training jobs over {t['tuning']['ranges']}")  # fmt: skip
    _log(f"round {round_no}: {len(trials)} trials: {[t['trial_id'] for t in trials]}")
    return [{**t, "k": i, "of": len(trials)} for i, t in enumerate(trials, start=1)]


def train_model(problem: str, round_no: int, trials: Any, **context: Any) -> dict[str, Any]:
    """Select the best trial on the validation split (never on test)."""
    from include.lifecycle.train import best_trial

    rc = RunContext.from_airflow(problem, context)
    results = [dict(trials[i]) for i in range(len(trials))]  # indexing avoids probing past the end
    best = best_trial(results, higher_is_better=rc.spec.goal.higher_is_better)
    for r in sorted(results, key=lambda r: r["trial_id"]):
        _log(
            f"{r['trial_id']}: train {r['train_score']:.4f} validation {r['validation_score']:.4f}"
            f"{'  <- best' if r is best else ''}"
        )
    selection = {"round": round_no, "best": best, "trials": results}
    rc.problem.write_json(f"{rc.round_dir(round_no)}/selection.json", selection)
    return {
        "round": round_no,
        "trial_id": best["trial_id"],
        "family": best["family"],
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
    }


# --- section 7 -----------------------------------------------------------------------------
def _load_split(rc: RunContext, rd: str, split: str) -> tuple[Any, Any, Any]:
    from include.lifecycle.train import AMOUNT_COL, TARGET_COL

    df = rc.problem.read_parquet(f"{rd}/features/{split}/part-0.parquet")
    amount = df[AMOUNT_COL].to_numpy(dtype="float64") if AMOUNT_COL in df.columns else None
    X = df.drop(columns=[c for c in (TARGET_COL, AMOUNT_COL) if c in df.columns]).to_numpy(dtype="float32")
    return X, df[TARGET_COL].to_numpy(), amount


def _local_copy(rc: RunContext, rel: str, folder: str) -> str:
    for name in rc.problem.ls(rel):
        rc.problem.download(f"{rel}/{name}", str(Path(folder, name)))
    return folder


def champion_score(rc: RunContext, plan: dict[str, Any]) -> tuple[int | None, float | None, str | None]:
    """The champion's goal metric on this round's test rows (its own features and preprocessing)."""
    from include.lifecycle.bundle import ModelBundle
    from include.lifecycle.dataset import TEST, assign_splits, target_vector
    from include.lifecycle.evaluate_model import goal_metric
    from include.lifecycle.registry import ModelRegistry

    reg = ModelRegistry(rc.problem.sub("registry"))
    current = reg.champion()
    if not current:
        return None, None, None
    # a damaged champion (a file no longer matches its checksum) must not block retraining: it is
    # reported, and the candidate is compared with the newest intact champion before it, or none.
    # The version returned stays the current one: the promotion's compare-and-set is against it.
    champ, damaged = reg.last_intact_champion()
    note = None
    if damaged:
        note = f"champion version(s) {damaged} are damaged (checksum mismatch) and were skipped; " + (
            f"compared with version {champ['version']}, the last intact champion"
            if champ
            else "no intact champion to compare with"
        )
        _log(f"WARNING: {note}")
    if not champ:
        return current["version"], None, note
    spec = rc.spec
    with tempfile.TemporaryDirectory() as tmp:
        bundle = ModelBundle.load(reg.materialise(champ["version"], tmp))
    df = rc.problem.read_parquet(plan["dataset_rel"])
    y = target_vector(df[spec.problem.target], spec)
    test = assign_splits(df, spec, y, as_of=rc.as_of) == TEST  # the very rows the candidate is tested on
    missing = [c for c in bundle.input_columns if c not in df.columns]
    if missing:
        return current["version"], None, f"champion needs columns {missing} that this data set lacks"
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
    return current["version"], float(value), note


def evaluate_model(problem: str, round_no: int, **context: Any) -> dict[str, Any]:
    """Metrics on the untouched test split, the value-maximising threshold, champion comparison, plots."""
    import numpy as np

    from include.lifecycle import evaluate_model as em
    from include.lifecycle.decide import goal_decision
    from include.lifecycle.train import load_model, predict

    rc = RunContext.from_airflow(problem, context)
    spec, goal = rc.spec, rc.spec.goal
    rd = rc.round_dir(round_no)
    plan = rc.problem.read_json(f"{rd}/plan.json")
    best = rc.problem.read_json(f"{rd}/selection.json")["best"]
    names = rc.problem.read_json(f"{rd}/features/features.json")["feature_names"]
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(_local_copy(rc, best["model_rel"], tmp))
    X_va, y_va, amt_va = _load_split(rc, rd, "validation")
    X_te, y_te, amt_te = _load_split(rc, rd, "test")
    binary = spec.is_binary
    s_va = predict(model, X_va, binary=binary)
    s_te = predict(model, X_te, binary=binary)
    importance = em.feature_importance(model, names)
    result: dict[str, Any] = {
        "round": round_no,
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
        cols_va = {spec.data.amount_column: amt_va} if amt_va is not None else {}
        cols_te = {spec.data.amount_column: amt_te} if amt_te is not None else {}
        tp, fp, fn = em.outcome_values(goal.value, len(y_va), cols_va)
        choice = em.choose_threshold(
            y_va, s_va, tp_value=tp, fp_value=fp, fn_value=fn, max_alert_rate=goal.max_alert_rate
        )
        threshold = float(choice["threshold"])
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
        y_tr_mean = float(np.mean(_load_split(rc, rd, "train")[1]))
        baselines = {"predict the training mean": em.goal_metric(goal.metric, y_te, np.full(len(y_te), y_tr_mean))}
    test_score = float(
        em.goal_metric(goal.metric, y_te, s_te, amount=amt_te, max_alert_rate=goal.max_alert_rate, threshold=threshold)
    )
    champ_version, champ_value, champ_note = champion_score(rc, plan)
    decision = goal_decision(spec, candidate=test_score, champion=champ_value)
    if champ_note:
        decision["reason"] += f"; {champ_note}"
    if rc.params.get("force_deploy") and not decision["deploy"]:
        decision.update(
            deploy=True, forced=True, reason=decision["reason"] + "; FORCED by the run's force_deploy param"
        )
    result.update(
        test_score=test_score,
        baselines=baselines,
        champion_version=champ_version,
        champion_score=champ_value,
        decision=decision,
        plots=sorted(pngs),
    )
    for name, png in pngs.items():
        rc.problem.write_bytes(f"{rd}/plots/{name}.png", png)
    rc.problem.write_json(f"{rd}/evaluation.json", result)
    _log(
        f"evaluate_model round {round_no}: {goal.metric} test {test_score:.4f} (goal {goal.target}); "
        f"{decision['reason']}"
    )
    return {
        "round": round_no,
        "test_score": test_score,
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
        "deploy": decision["deploy"],
        "reason": decision["reason"],
    }


# --- sections 6 and 8 ------------------------------------------------------------------------
def meets_business_goal(problem: str, round_no: int, **context: Any) -> str:
    """Branch: deploy, or diagnose and go round again, or stop with the goal not met."""
    rc = RunContext.from_airflow(problem, context)
    ev = rc.problem.read_json(f"{rc.round_dir(round_no)}/evaluation.json")
    if ev["decision"]["deploy"] and rc.spec.deploy.enabled:
        _log(f"meets_business_goal: YES - {ev['decision']['reason']}")
        return "approve_deployment" if rc.spec.deploy.require_approval else "deploy_model"
    why = ev["decision"]["reason"] if ev["decision"]["deploy"] is False else "deploy.enabled is false in the spec"
    if round_no >= rc.max_rounds:
        _log(f"meets_business_goal: NO in the last round ({round_no}/{rc.max_rounds}) - {why}")
        return "goal_not_met"
    _log(f"meets_business_goal: NO - {why}; diagnosing")
    return f"round_{round_no}.diagnose"


def diagnose(problem: str, round_no: int, **context: Any) -> str:
    """Branch: pick the remedy from the evidence and write the reason down."""
    from include.lifecycle.decide import diagnose as rule

    rc = RunContext.from_airflow(problem, context)
    rd = rc.round_dir(round_no)
    ev = rc.problem.read_json(f"{rd}/evaluation.json")
    fe_pos = None
    if rc.spec.is_binary:
        sel = rc.problem.read_json(f"{rd}/selection.json")["best"]
        fe_pos = rc.problem.read_parquet(f"{rd}/features/train/part-0.parquet", columns=["__target__"])[
            "__target__"
        ].sum()
        fe_pos = int(fe_pos) if sel else None
    d = rule(
        rc.spec,
        train_score=ev["train_score"],
        validation_score=ev["validation_score"],
        train_positives=fe_pos,
        test_score=ev["test_score"],
    )
    rc.problem.write_json(f"{rd}/diagnosis.json", d)
    _log(f"diagnose round {round_no}: {d['remedy']} - {d['reason']}")
    return f"round_{round_no}.{d['remedy']}"


def remedy(problem: str, round_no: int, remedy_name: str, **context: Any) -> dict[str, Any]:
    """tune_model / augment_features / augment_data: write the next round's plan (and data)."""
    from include.lifecycle.decide import next_plan

    rc = RunContext.from_airflow(problem, context)
    rd = rc.round_dir(round_no)
    plan = rc.problem.read_json(f"{rd}/plan.json")
    d = rc.problem.read_json(f"{rd}/diagnosis.json")
    new = next_plan(rc.spec, plan, remedy_name, d["reason"])
    nd = rc.round_dir(round_no + 1)
    if new.pop("needs_new_data", False):
        from ml_lifecycle.operators import run_collect

        _log(f"{remedy_name}: collecting {new['lookback_days']} days of history")
        summary = run_collect(rc, lookback_days=new["lookback_days"], run_dir=nd, log=_log)
        new["dataset_rel"] = summary["dataset_rel"]
        # the re-collection's own collect_summary.json (one writer, one shape) is the data's record
        new["collect_rel"] = f"{nd}/collect_summary.json"
    rc.problem.write_json(f"{nd}/plan.json", new)
    _log(f"{remedy_name}: round {round_no + 1} plan: {'; '.join(new['changes'])}")
    return {"round": round_no + 1, "remedy": new["applied"], "changes": new["changes"]}


# --- deploy / end states ---------------------------------------------------------------------
def _rounds(rc: RunContext) -> list[dict[str, Any]]:
    out = []
    for k in range(1, rc.spec.max_rounds + 1):
        rd = rc.round_dir(k)
        if not rc.problem.exists(f"{rd}/plan.json"):
            break
        ev = rc.problem.read_json_or(f"{rd}/evaluation.json")
        out.append(
            {
                "round": k,
                "plan": rc.problem.read_json(f"{rd}/plan.json"),
                "evaluation": ev,
                "diagnosis": rc.problem.read_json_or(f"{rd}/diagnosis.json"),
                "splits": rc.problem.read_json_or(f"{rd}/features/split.json"),
            }
        )
    return out


def _promote_or_recheck(
    rc: RunContext, reg: Any, version: int, plan: dict[str, Any], ev: dict[str, Any]
) -> dict[str, Any] | None:
    """Promote ``version``; if another run (a concurrent run or backfill) promoted a champion since
    this run compared against it, compare again with the new champion on this run's test rows and
    promote only if the candidate still passes the gate (None: it does not; recorded in recheck.json)."""
    from include.lifecycle.decide import goal_decision
    from include.lifecycle.registry import ChampionChanged

    forced = bool(ev["decision"].get("forced", False))
    details = {"metric": ev["metric"], "test_score": ev["test_score"], "forced": forced}
    expected = ev["champion_version"]
    for _ in range(10):
        try:
            return reg.promote(version, run_id=rc.run_id, expected_champion=expected, details=details)
        except ChampionChanged as exc:
            expected, champ_value, note = champion_score(rc, plan)
            again = goal_decision(rc.spec, candidate=ev["test_score"], champion=champ_value)
            reason = f"the champion changed during this run ({exc}); against version {expected}: {again['reason']}"
            if note:
                reason += f"; {note}"
            rc.problem.write_json(
                f"{rc.run_dir}/recheck.json", {**again, "champion_version": expected, "reason": reason}
            )
            _log(f"deploy_model: {reason}")
            if not (again["deploy"] or forced):
                return None
    _fail("deploy_model: the champion kept changing under this run; giving up after 10 comparisons")
    return None


def deploy_model(problem: str, **context: Any) -> dict[str, Any]:
    """Register the winning round's bundle as a new version and make it the champion."""
    from include.lifecycle.registry import ModelRegistry

    rc = RunContext.from_airflow(problem, context)
    rounds = [r for r in _rounds(rc) if r["evaluation"] and r["evaluation"]["decision"]["deploy"]]
    if not rounds:
        _fail("deploy_model ran but no round met the goal: refusing to deploy")
    win = rounds[0]
    k, ev = win["round"], win["evaluation"]
    rd = rc.round_dir(k)
    files: dict[str, bytes] = {}
    for name in rc.problem.ls(ev and f"{rd}/trials/{ev['trial_id']}/model"):
        files[name] = rc.problem.read_bytes(f"{rd}/trials/{ev['trial_id']}/model/{name}")
    for name in ("preprocessor.joblib", "features.json"):
        files[name] = rc.problem.read_bytes(f"{rd}/features/{name}")
    files["threshold.json"] = json.dumps({"threshold": ev.get("threshold")}).encode()
    files["evaluation.json"] = rc.problem.read_bytes(f"{rd}/evaluation.json")
    # the data the winning round trained on: this run's collection, or a wider one from augment_data
    # (its plan then names that collection's collect_summary.json, carried into later rounds)
    source = rc.problem.read_json(win["plan"].get("collect_rel") or f"{rc.run_dir}/collect_summary.json")
    if source["dataset_rel"] != win["plan"]["dataset_rel"]:
        _fail(f"deploy_model: round {k} trained on {win['plan']['dataset_rel']} but its collect summary "
              f"describes {source['dataset_rel']}: the lineage would be wrong")  # fmt: skip
    lineage = {
        "run_id": rc.run_id,
        "round": k,
        "dataset_uri": rc.problem.uri(win["plan"]["dataset_rel"]),
        "window": source.get("window"),
        "partitions": [p.get("ds") for p in source.get("partitions") or []],
        "rows": source.get("dataset_rows"),
        "spec_digest": rc.spec.digest(),
        "code_version": code_version(),
        "feature_groups": win["plan"]["feature_groups"],
        "trial": ev["trial_id"],
    }
    files["lineage.json"] = json.dumps(lineage, indent=2, sort_keys=True).encode()
    reg = ModelRegistry(rc.problem.sub("registry"))
    # idempotent on retry: a version this run and round already registered is re-used, not duplicated
    version = next(
        (v for v in reg.versions() if (reg.metadata(v).get("run_id"), reg.metadata(v).get("round")) == (rc.run_id, k)),
        None,
    )
    if version is None:
        version = reg.register(
            files,
            {
                "problem": rc.spec.name,
                "metric": ev["metric"],
                "test_score": ev["test_score"],
                "run_id": rc.run_id,
                "round": k,
            },
            claim={"run_id": rc.run_id, "round": k},  # a retry after a kill reuses the half-written version
        )
    else:
        _log(f"deploy_model: re-using version {version}, registered by an earlier try of this run")
    current = reg.champion()
    if current and current["version"] == version:  # an earlier try already promoted it
        record = current
    else:
        record = _promote_or_recheck(rc, reg, version, win["plan"], ev)
    if record is None:
        out = {
            "decision": "not_promoted",
            "version": None,
            "registered_version": version,
            "round": k,
            "test_score": ev["test_score"],
            "reason": rc.problem.read_json(f"{rc.run_dir}/recheck.json")["reason"],
        }
        rc.problem.write_json(f"{rc.run_dir}/outcome.json", out)
        _log(f"deploy_model: version {version} registered, not promoted - {out['reason']}")
        return out
    out = {
        "decision": "deployed",
        "version": version,
        "round": k,
        "previous_champion": record["previous"],
        "test_score": ev["test_score"],
        "reason": ev["decision"]["reason"],
    }
    if (rc.params.get("backend") or rc.spec.backend) == "local":  # a running local endpoint loads it now
        from ml_lifecycle.scoring import notify_serving

        out["serving"] = notify_serving(rc.spec.name, version)
    elif rc.spec.aws.serving_image:  # aws: a model package version and the SageMaker endpoint on it
        from ml_lifecycle.aws import publish_champion

        out["sagemaker"] = publish_champion(rc.spec, rc.problem, version, run_id=rc.run_id, log=_log)
    rc.problem.write_json(f"{rc.run_dir}/outcome.json", out)
    _log(f"deploy_model: version {version} is the champion (was {record['previous']})")
    return out


def goal_not_met(problem: str, **context: Any) -> dict[str, Any]:
    """The last round missed: deploy nothing, keep the champion, record why."""
    rc = RunContext.from_airflow(problem, context)
    rounds = _rounds(rc)
    last = rounds[-1]["evaluation"]
    out = {
        "decision": "goal_not_met",
        "version": None,
        "round": len(rounds),
        "test_score": last["test_score"],
        "reason": f"after {len(rounds)} round(s) the goal is not met: {last['decision']['reason']}",
    }
    rc.problem.write_json(f"{rc.run_dir}/outcome.json", out)
    _log(f"goal_not_met: {out['reason']}")
    return out


# --- the report ------------------------------------------------------------------------------
def _failed_tasks(rc: RunContext, context: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks of this run that failed, each with its error (recorded by ``FailureRecorder``).

    The task states come from Airflow (the execution API); a failure record whose task is no longer
    failed (cleared and re-run since) does not count. Without the states (no API), the records do."""
    from ml_lifecycle.errors import ti_key

    folder = f"{rc.run_dir}/failures"
    records = (
        [rc.problem.read_json(f"{folder}/{n}") for n in rc.problem.ls(folder)] if rc.problem.exists(folder) else []
    )
    states: dict[str, str] | None = None
    ti = context.get("ti")
    try:
        found = ti.get_task_states(dag_id=rc.spec.name, run_ids=[rc.run_id])  # type: ignore[union-attr]
        states = dict(found.get(rc.run_id, {}))
    except Exception as exc:  # e.g. a task run outside a supervisor
        _log(f"publish_report: task states unavailable ({type(exc).__name__}: {exc}); using the failure records")
    if states is None:
        return records
    # Airflow names a mapped task instance <task_id>_<map_index> in these states
    by_task = {ti_key(r["task_id"], r.get("map_index")): r for r in records}
    failed = []
    for task_id, state in sorted(states.items()):
        if str(getattr(state, "value", state)) == "failed":
            failed.append(by_task.get(task_id) or {"task_id": task_id, "error": "(failed; no error recorded)"})
    return failed


def publish_report(problem: str, **context: Any) -> dict[str, Any]:
    """run_summary.json (machine-readable) and report.html (EDA + rounds + decision), whatever
    happened: a run in which a task failed gets ``decision: failed`` with the failing task and its
    error, and this task then fails too, so the run is marked failed."""
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.report_run import render_run_report, run_summary

    rc = RunContext.from_airflow(problem, context)
    failed = _failed_tasks(rc, context)
    outcome = rc.problem.read_json_or(f"{rc.run_dir}/outcome.json")
    if failed:
        first = failed[0]
        outcome = {
            "decision": "failed",
            "version": None,
            "failed_task": first["task_id"],
            "error": first.get("error"),
            "failures": failed,
            "reason": f"task {first['task_id']} failed: {first.get('error')}",
        }
    elif outcome is None:
        outcome = {
            "decision": "failed",
            "version": None,
            "failed_task": None,
            "error": "neither deploy_model nor goal_not_met recorded an outcome",
            "reason": "the run ended without an outcome (no task recorded a failure)",
        }
    rounds = _rounds(rc)
    reg = ModelRegistry(rc.problem.sub("registry"))
    try:
        champion_after = reg.champion()
    except Exception as exc:  # a damaged registry must not stop the report that explains the run
        _log(f"publish_report: champion unreadable ({type(exc).__name__}: {exc})")
        champion_after = None
    summary = run_summary(
        spec=rc.spec,
        run_id=rc.run_id,
        as_of=rc.as_of.isoformat(),
        outcome=outcome,
        rounds=rounds,
        problem_card=rc.problem.read_json_or(f"{rc.run_dir}/problem_card.json"),
        collect=rc.problem.read_json_or(f"{rc.run_dir}/collect_summary.json"),
        eda=rc.problem.read_json_or(f"{rc.run_dir}/eda/verdict.json"),
        champion_after=champion_after,
        report_uri=rc.problem.uri(f"{rc.run_dir}/report.html"),
    )
    plots = {
        r["round"]: {
            n: rc.problem.read_bytes(f"{rc.round_dir(r['round'])}/plots/{n}.png")
            for n in (r["evaluation"] or {}).get("plots", [])
        }
        for r in rounds
    }
    eda_rel = f"{rc.run_dir}/eda/section.html"
    eda_html = rc.problem.read_text(eda_rel) if rc.problem.exists(eda_rel) else ""
    rc.problem.write_text(f"{rc.run_dir}/report.html", render_run_report(summary, eda_html, plots))
    rc.problem.write_json(f"{rc.run_dir}/run_summary.json", summary)
    _log(f"report: {summary['report_uri']}; decision {summary['decision']}: {summary['reason']}")
    if summary["decision"] == "failed":
        _fail(f"the run failed: {summary['reason']} (report: {summary['report_uri']})")
    return {
        "decision": summary["decision"],
        "summary_uri": rc.problem.uri(f"{rc.run_dir}/run_summary.json"),
        "report_uri": summary["report_uri"],
    }
