"""Sections 1-4: formulate the problem, evaluate the data, engineer the round's features."""

from __future__ import annotations

import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")


# --- section 1 -----------------------------------------------------------------------------
def run_trigger(problem: str, context: Any) -> dict[str, Any]:
    """What started this run: its run type and, when the monitor's ``<problem>.retrain_requested``
    asset triggered it, that event's evidence (reasons, window, report, monitor run)."""
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    out: dict[str, Any] = {"run_type": str(getattr(run_type, "value", run_type)) if run_type else None}
    events = context.get("triggering_asset_events") or {}
    try:
        found = [ev for evs in events.values() for ev in evs]
    except Exception:  # an accessor that cannot be listed outside a real run
        found = []
    wanted = f"{problem}.retrain_requested"
    for ev in found:
        asset = getattr(ev, "asset", None)
        if getattr(asset, "name", None) == wanted:
            out["retrain_requested"] = {
                **dict(getattr(ev, "extra", None) or {}),
                "at": str(getattr(ev, "timestamp", "")),
            }
    return out


def formulate_problem(problem: str, **context: Any) -> dict[str, Any]:
    """Check the spec against the data that is actually there; write the problem card and round 1's plan."""
    from include.lifecycle import formulate
    from include.lifecycle.decide import initial_plan
    from include.lifecycle.spec import resolve_source

    rc = RunContext.from_airflow(problem, context)
    spec, layout = rc.spec, rc.layout
    try:
        if spec.data.layout == "partitioned":
            labels = rc.input_store(resolve_source(spec.data.labels.source)) if spec.data.labels else None
            source = rc.input_store(resolve_source(spec.data.source))
            available, checks = formulate.check_partitioned(
                spec, source, labels, as_of=rc.as_of, lookback_days=rc.lookback_days
            )
        else:
            available, checks = formulate.check_single_file(spec, resolve_source(spec.data.source))
    except formulate.FormulationError as exc:
        raise AirflowFailException(str(exc)) from exc
    card = formulate.problem_card(
        spec,
        available=available,
        checks=checks,
        as_of=rc.as_of.isoformat(),
        run_id=rc.run_id,
        backend=rc.backend.name,
        max_rounds=rc.max_rounds,
    )
    card["trigger"] = run_trigger(problem, context)
    if card["trigger"].get("retrain_requested"):
        log.info("formulate_problem: triggered by the monitor: %s", card["trigger"]["retrain_requested"].get("reasons"))
    rc.store.write_json(layout.problem_card, card)
    for c in checks:
        log.info("formulate_problem: %s %s: %s", "ok  " if c["passed"] else "FAIL", c["check"], c["detail"])
    why = formulate.failed_checks(checks)
    if why:
        raise AirflowFailException(why)
    plan = initial_plan(spec, dataset_rel=layout.dataset, lookback_days=rc.lookback_days)
    rc.store.write_json(layout.round(1).plan, plan)
    return {
        "problem_card_uri": rc.store.uri(layout.problem_card),
        "checks_passed": len(checks),
        **{k: v for k, v in available.items() if k in ("rows", "partitions", "approx_base_rate")},
    }


# --- section 3 -----------------------------------------------------------------------------
def evaluate_data(problem: str, **context: Any) -> dict[str, Any]:
    """Dtypes, statistics, plots; drift of the newest days against the champion's training rows;
    completeness and freshness of the window; the label delay of a label feed; the quality gate."""
    from include.lifecycle import evaluate_data as eda
    from include.lifecycle.spec import resolve_source

    rc = RunContext.from_airflow(problem, context)
    spec, layout, quality = rc.spec, rc.layout, rc.spec.quality
    collect = rc.store.read_json(layout.collect_summary)
    df = rc.store.read_parquet(collect["dataset_rel"])
    numeric, categorical = spec.profile_roles(df)
    time_column = spec.data.time_column
    log.info("evaluate_data: %d rows, %d numeric and %d categorical columns", len(df), len(numeric), len(categorical))
    roles = {"time_column": time_column, "numeric": numeric, "categorical": categorical}
    target = {"target": spec.problem.target, "positive_label": spec.problem.positive_label}
    prof = eda.profile(df, **roles, **target, target_type=spec.target_type)
    reference, info = eda.champion_training_data(rc.store, columns=[*numeric, *categorical], time_column=time_column)
    drift_result = eda.drift_against(df, reference, info, **roles, recent_days=quality.drift_recent_days)
    del reference
    cov = eda.coverage(collect)
    pngs = eda.plots(df, **roles, **target, target_type=spec.target_type, seed=spec.training.seed)
    pngs |= eda.drift_plots(drift_result, quality.max_drift_psi)
    extra = {"completeness": eda.completeness_plot(cov)}
    if spec.data.labels is not None and time_column and len(df):
        from ml_lifecycle.settings import pii_key

        labels = rc.input_store(resolve_source(spec.data.labels.source))
        key = pii_key() if spec.data.key in spec.pii_columns else None
        start = (collect.get("window") or {}).get("start") or "0000"
        arrived = eda.label_arrivals(spec, labels, df, start=start, as_of=rc.as_of, pii_key=key)
        prof["label_delay"] = eda.label_delay(
            df[time_column], arrived, as_of=rc.as_of, maturity_days=spec.data.labels.maturity_days
        )
        extra["label_delay"] = eda.label_delay_plot(prof["label_delay"])
    pngs |= {k: v for k, v in extra.items() if v is not None}
    rows_in = collect["rows_in"] or 1
    expected = list(dict.fromkeys([*spec.schema_.names, spec.problem.target]))  # the target may be declared too
    if spec.schema_.extra_columns == "keep":  # undeclared columns were kept on purpose: not drift
        expected += [c for c in df.columns if c not in expected]
    verdict = eda.quality_gate(
        prof,
        quality=quality,
        expected_columns=expected,
        drift_result=drift_result,
        quarantine_share=collect["rows_quarantined"] / rows_in,
        max_quarantine_share=spec.schema_.max_quarantine_share,
        ignore_columns=spec.pii_columns,
        coverage=cov,
    )
    etl = {k: collect[k] for k in ("rows_in", "rows_curated", "rows_quarantined", "by_rule", "dataset_rows")}
    rc.store.write_json(layout.eda_profile, prof)
    rc.store.write_json(layout.eda_verdict, {**verdict, "drift": drift_result})
    rc.store.write_text(layout.eda_section, eda.render_eda_section(prof, pngs, verdict, drift_result, etl))
    html = eda.render_eda_html(f"{spec.title}: data evaluation", prof, pngs, verdict, drift_result, etl)
    rc.store.write_text(layout.eda_report, html)
    for c in verdict["checks"]:
        log.info("quality gate: %s %s: %s", "ok  " if c["passed"] else "FAIL", c["name"], c["detail"])
    if not verdict["passed"]:
        try:
            eda.raise_if_unfit(verdict)
        except eda.DataQualityError as exc:
            raise AirflowFailException(f"data quality gate: data unfit for training\n{exc}") from exc
    return {
        "verdict": verdict["verdict"],
        "rows": len(df),
        "eda_report_uri": rc.store.uri(layout.eda_report),
        "max_psi": drift_result.get("max_psi") if drift_result.get("reference") else None,
        "drift_reference": drift_result.get("version"),
    }


# --- section 4 -----------------------------------------------------------------------------
def _write_channel(store: Any, rel: str, X: Any, names: list[str], target: Any, amount: Any) -> None:
    """One split's channel: the float32 feature columns, the target and the amount, as Parquet.

    Built as an Arrow table straight from the matrix: one transposing copy makes every feature
    column contiguous, and Arrow takes the columns without copying them again."""
    import numpy as np
    import pyarrow as pa

    from include.lifecycle.models import AMOUNT_COL, TARGET_COL

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


def _entity_features(store: Any, dataset_rel: str) -> Any:
    """The per-entity features a Spark collection computed for this data set (None when it did not)."""
    from include.lifecycle.features import EntityFeatures
    from include.lifecycle.layout import RunLayout

    rel = RunLayout.entity_features_beside(dataset_rel)
    if not store.exists(rel):
        return None
    return EntityFeatures.from_arrow(store.read_table(rel))


def feature_engineering(problem: str, round_no: int, **context: Any) -> dict[str, Any]:
    """Engineer the round's feature groups, fit the preprocessing on train, write the channels."""
    import joblib
    import numpy as np

    from include.lifecycle.bundle import features_config
    from include.lifecycle.dataset import SPLITS, TRAIN, SplitError, TargetError, make_split, target_vector
    from include.lifecycle.features import FeaturePipeline
    from include.lifecycle.layout import RunLayout
    from include.lifecycle.preprocess import make_preprocessor

    rc = RunContext.from_airflow(problem, context)
    spec = rc.spec
    rnd = rc.layout.round(round_no)
    plan = rc.store.read_json(rnd.plan)
    log.info(
        "round %d plan: %s", round_no, json.dumps({k: plan[k] for k in ("feature_groups", "lookback_days", "resample")})
    )
    dataset_columns = rc.store.parquet_columns(plan["dataset_rel"])
    input_columns = [c for c in dataset_columns if c != spec.problem.target]
    pipeline = FeaturePipeline.from_spec(spec, plan["feature_groups"])
    # the features' inputs and what a split without a time column is drawn from (the key, or every column)
    wanted = {*spec.feature_inputs(pipeline.groups, dataset_columns), *spec.split_columns(dataset_columns)}
    df = rc.store.read_parquet(plan["dataset_rel"], columns=[c for c in dataset_columns if c in wanted])
    try:  # the split (and the labels) are the data's: re-running cannot help, so no retries
        y = target_vector(df[spec.problem.target], spec)
        made = make_split(df, spec, y, as_of=rc.as_of)
    except (SplitError, TargetError) as exc:
        raise AirflowFailException(f"feature_engineering round {round_no}: {exc}") from exc
    splits = made.assignment
    rc.store.write_json(rnd.split, made.windows)
    precomputed = _entity_features(rc.store, plan["dataset_rel"])
    taken, engine = {}, precomputed.engine if precomputed is not None else ""
    if precomputed is not None:
        try:  # features of other rows: the file is wrong, re-running cannot help
            taken = precomputed.taken(df, pipeline.groups, pipeline.time_column, pipeline.entity_column)
        except ValueError as exc:
            where = rc.store.uri(RunLayout.entity_features_beside(plan["dataset_rel"]))
            raise AirflowFailException(f"feature_engineering round {round_no}: {where}: {exc}") from exc
    feats, cols = pipeline.engineer(df, log=log.info, precomputed=precomputed)
    del precomputed
    pre = make_preprocessor(cols, problem_type=spec.problem.type, scale=True, seed=spec.training.seed)
    train_mask = splits == TRAIN
    amount = df[spec.data.amount_column].to_numpy(dtype="float64") if spec.data.amount_column else None
    del df  # the features and the vectors above are all that is used from here on
    rows, positives = {}, {}

    def write(split: str, Xs: Any, mask: np.ndarray) -> None:
        _write_channel(rc.store, rnd.channel_file(split), Xs, names, y[mask], None if amount is None else amount[mask])

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
        rc.store.copy_in(str(Path(tmp, "preprocessor.joblib")), rnd.preprocessor)
    rc.store.write_json(
        rnd.features,
        features_config(
            pipeline=pipeline,
            columns=cols.to_dict(),
            names=names,
            problem_type=spec.problem.type,
            input_columns=input_columns,
        )
        # where the per-entity groups were computed, when not here (scoring computes them with features.py)
        | ({"precomputed": {"engine": engine, "groups": sorted(taken)}} if taken else {}),
    )
    log.info("feature_engineering: %d features; rows %s; positives %s", len(names), rows, positives)
    log.info("feature_engineering: split %s", json.dumps(made.windows))
    return {
        "round": round_no,
        "n_features": len(names),
        "rows": rows,
        "positives": positives,
        "feature_groups": plan["feature_groups"],
        "split": made.windows,
        "precomputed": {"engine": engine, "groups": sorted(taken)} if taken else None,
    }
