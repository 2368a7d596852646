"""The lifecycle's sections as task callables: adapters between Airflow and ``include/``.

Each callable takes the problem name (and round) plus the Airflow context, loads its inputs from
the run layout (``include/lifecycle/layout.py``), calls the section's pure function in
``include/lifecycle``, writes its outputs atomically under the run folder and returns small JSON
for XCom. Re-running a task rewrites the same files with the same content. The long steps
(collect, training trials, batch scoring) are operators (``ml_lifecycle.operators``) that hand
the work to the run's backend.
"""

from __future__ import annotations

import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from ml_lifecycle import task_ids
from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")


def _fail(msg: str) -> None:
    raise AirflowFailException(msg)


# --- section 1 -----------------------------------------------------------------------------
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
        _fail(str(exc))
    card = formulate.problem_card(
        spec,
        available=available,
        checks=checks,
        as_of=rc.as_of.isoformat(),
        run_id=rc.run_id,
        backend=rc.backend.name,
        max_rounds=rc.max_rounds,
    )
    rc.store.write_json(layout.problem_card, card)
    for c in checks:
        log.info("formulate_problem: %s %s: %s", "ok  " if c["passed"] else "FAIL", c["check"], c["detail"])
    why = formulate.failed_checks(checks)
    if why:
        _fail(why)
    plan = initial_plan(spec, dataset_rel=layout.dataset, lookback_days=rc.lookback_days)
    rc.store.write_json(layout.round(1).plan, plan)
    return {
        "problem_card_uri": rc.store.uri(layout.problem_card),
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
    from include.lifecycle.layout import EDA_LATEST

    rc = RunContext.from_airflow(problem, context)
    spec = rc.spec
    layout = rc.layout
    collect = rc.store.read_json(layout.collect_summary)
    df = rc.store.read_parquet(collect["dataset_rel"])
    numeric, categorical = _column_roles(rc, df)
    target_type = "binary" if spec.is_binary else "continuous"
    log.info("evaluate_data: %d rows, %d numeric and %d categorical columns", len(df), len(numeric), len(categorical))
    previous_ptr = rc.store.read_json_or(EDA_LATEST)
    previous = None
    if previous_ptr and previous_ptr.get("run_id") != rc.run_id and rc.store.exists(previous_ptr["profile_rel"]):
        previous = rc.store.read_json(previous_ptr["profile_rel"])
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
            _fail(f"data quality gate: data unfit for training\n{exc}")
    rc.store.write_json(EDA_LATEST, {"run_id": rc.run_id, "profile_rel": layout.eda_profile})
    return {
        "verdict": verdict["verdict"],
        "rows": len(df),
        "eda_report_uri": rc.store.uri(layout.eda_report),
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


def feature_engineering(problem: str, round_no: int, **context: Any) -> dict[str, Any]:
    """Engineer the round's feature groups, fit the preprocessing on train, write the channels."""
    import joblib
    import numpy as np

    from include.lifecycle.bundle import features_config
    from include.lifecycle.dataset import SPLITS, TRAIN, MissingTargetError, SplitError, make_split, target_vector
    from include.lifecycle.features import engineer
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
    groups = [spec.group(g) for g in plan["feature_groups"]]
    df = rc.store.read_parquet(plan["dataset_rel"], columns=_feature_inputs(spec, groups, dataset_columns))
    try:  # the split (and the labels) are the data's: re-running cannot help, so no retries
        y = target_vector(df[spec.problem.target], spec)
        made = make_split(df, spec, y, as_of=rc.as_of)
    except (SplitError, MissingTargetError) as exc:
        _fail(f"feature_engineering round {round_no}: {exc}")
    splits = made.assignment
    rc.store.write_json(rnd.split, made.windows)
    feats, cols = engineer(
        df,
        groups,
        time_column=spec.data.time_column,
        entity_column=spec.data.entity_column,
        exclude=_exclude(rc),
        log=log.info,
    )
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
    log.info("feature_engineering: %d features; rows %s; positives %s", len(names), rows, positives)
    log.info("feature_engineering: split %s", json.dumps(made.windows))
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
    """The round's training trials (mapped into train_model), as the run's backend runs them."""
    from include.lifecycle.models import plan_trials as plan

    rc = RunContext.from_airflow(problem, context)
    p = rc.store.read_json(rc.layout.round(round_no).plan)
    trials = plan(
        rc.spec,
        families=p["families"],
        trials_per_family=p["trials_per_family"],
        wide=p["wide_search"],
        round_no=round_no,
    )
    trials = rc.backend.plan_trials(trials, wide=p["wide_search"], round_no=round_no, log=log.info)
    log.info("round %d: %d trials: %s", round_no, len(trials), [t["trial_id"] for t in trials])
    return [{**t, "k": i, "of": len(trials)} for i, t in enumerate(trials, start=1)]


def select_model(problem: str, round_no: int, trials: Any, **context: Any) -> dict[str, Any]:
    """Select the best trial on the validation split (never on test)."""
    from include.lifecycle.models import best_trial

    rc = RunContext.from_airflow(problem, context)
    results = [dict(trials[i]) for i in range(len(trials))]  # indexing avoids probing past the end
    best = best_trial(results, higher_is_better=rc.spec.goal.higher_is_better)
    for r in sorted(results, key=lambda r: r["trial_id"]):
        mark = "  <- best" if r is best else ""
        log.info("%s: train %.4f validation %.4f%s", r["trial_id"], r["train_score"], r["validation_score"], mark)
    rc.store.write_json(rc.layout.round(round_no).selection, {"round": round_no, "best": best, "trials": results})
    return {
        "round": round_no,
        "trial_id": best["trial_id"],
        "family": best["family"],
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
    }


# --- section 7 -----------------------------------------------------------------------------
def _load_split(rc: RunContext, rel: str) -> Any:
    from include.lifecycle.assessment import Split
    from include.lifecycle.models import AMOUNT_COL, TARGET_COL

    df = rc.store.read_parquet(rel)
    amount = df[AMOUNT_COL].to_numpy(dtype="float64") if AMOUNT_COL in df.columns else None
    X = df.drop(columns=[c for c in (TARGET_COL, AMOUNT_COL) if c in df.columns]).to_numpy(dtype="float32")
    return Split(X, df[TARGET_COL].to_numpy(), amount)


def _local_copy(rc: RunContext, rel: str, folder: str) -> str:
    for name in rc.store.ls(rel):
        rc.store.download(f"{rel}/{name}", str(Path(folder, name)))
    return folder


def champion_score(rc: RunContext, plan: dict[str, Any]) -> tuple[int | None, float | None, str | None]:
    """``(champion version, its goal metric on this round's test rows, note)``.

    A damaged champion (a file no longer matches its checksum) must not block retraining: it is
    reported, and the candidate is compared with the newest intact champion before it, or none.
    The version returned stays the current one: the promotion's compare-and-set is against it."""
    from include.lifecycle.assessment import champion_test_score
    from include.lifecycle.bundle import ModelBundle
    from include.lifecycle.layout import REGISTRY
    from include.lifecycle.registry import ModelRegistry

    reg = ModelRegistry(rc.store.sub(REGISTRY))
    current = reg.champion()
    if not current:
        return None, None, None
    champ, damaged = reg.last_intact_champion()
    note = None
    if damaged:
        note = f"champion version(s) {damaged} are damaged (checksum mismatch) and were skipped; " + (
            f"compared with version {champ['version']}, the last intact champion"
            if champ
            else "no intact champion to compare with"
        )
        log.warning("%s", note)
    if not champ:
        return current["version"], None, note
    with tempfile.TemporaryDirectory() as tmp:
        bundle = ModelBundle.load(reg.materialise(champ["version"], tmp))
    value, why = champion_test_score(rc.spec, bundle, rc.store.read_parquet(plan["dataset_rel"]), as_of=rc.as_of)
    return current["version"], value, why or note


def evaluate_model(problem: str, round_no: int, **context: Any) -> dict[str, Any]:
    """Metrics on the untouched test split, the value-maximising threshold, champion comparison, plots."""
    import numpy as np

    from include.lifecycle.assessment import assess, gate
    from include.lifecycle.models import load_model

    rc = RunContext.from_airflow(problem, context)
    spec, goal = rc.spec, rc.spec.goal
    rnd = rc.layout.round(round_no)
    plan = rc.store.read_json(rnd.plan)
    best = rc.store.read_json(rnd.selection)["best"]
    names = rc.store.read_json(rnd.features)["feature_names"]
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(_local_copy(rc, best["model_rel"], tmp))
    train_mean = None if spec.is_binary else float(np.mean(_load_split(rc, rnd.channel_file("train")).y))
    result, pngs = assess(
        spec,
        model,
        names,
        best,
        validation=_load_split(rc, rnd.channel_file("validation")),
        test=_load_split(rc, rnd.channel_file("test")),
        train_mean=train_mean,
    )
    champ_version, champ_value, champ_note = champion_score(rc, plan)
    decision = gate(
        spec, result["test_score"], champion=champ_value, note=champ_note, force=bool(rc.params.get("force_deploy"))
    )
    result = {"round": round_no, **result}
    result.update(champion_version=champ_version, champion_score=champ_value, decision=decision)
    for name, png in pngs.items():
        rc.store.write_bytes(rnd.plot(name), png)
    rc.store.write_json(rnd.evaluation, result)
    log.info(
        "evaluate_model round %d: %s test %.4f (goal %s); %s",
        round_no,
        goal.metric,
        result["test_score"],
        goal.target,
        decision["reason"],
    )
    return {
        "round": round_no,
        "test_score": result["test_score"],
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
        "deploy": decision["deploy"],
        "reason": decision["reason"],
    }


# --- sections 6 and 8 ------------------------------------------------------------------------
def meets_business_goal(problem: str, round_no: int, **context: Any) -> str:
    """Branch: deploy (after a person's approval if the spec asks), or diagnose and go round
    again, or stop with the goal not met."""
    rc = RunContext.from_airflow(problem, context)
    ev = rc.store.read_json(rc.layout.round(round_no).evaluation)
    if ev["decision"]["deploy"] and rc.spec.deploy.enabled:
        log.info("meets_business_goal: YES - %s", ev["decision"]["reason"])
        return task_ids.APPROVE_DEPLOYMENT if rc.spec.deploy.require_approval else task_ids.DEPLOY_MODEL
    why = ev["decision"]["reason"] if ev["decision"]["deploy"] is False else "deploy.enabled is false in the spec"
    if round_no >= rc.max_rounds:
        log.info("meets_business_goal: NO in the last round (%d/%d) - %s", round_no, rc.max_rounds, why)
        return task_ids.GOAL_NOT_MET
    log.info("meets_business_goal: NO - %s; diagnosing", why)
    return task_ids.in_round(round_no, task_ids.DIAGNOSE)


def diagnose(problem: str, round_no: int, **context: Any) -> str:
    """Branch: pick the remedy from the evidence and write the reason down."""
    from include.lifecycle.decide import diagnose as rule
    from include.lifecycle.models import TARGET_COL

    rc = RunContext.from_airflow(problem, context)
    rnd = rc.layout.round(round_no)
    ev = rc.store.read_json(rnd.evaluation)
    train_positives = None
    if rc.spec.is_binary:
        train_positives = int(rc.store.read_parquet(rnd.channel_file("train"), columns=[TARGET_COL])[TARGET_COL].sum())
    d = rule(
        rc.spec,
        train_score=ev["train_score"],
        validation_score=ev["validation_score"],
        train_positives=train_positives,
        test_score=ev["test_score"],
    )
    rc.store.write_json(rnd.diagnosis, d)
    log.info("diagnose round %d: %s - %s", round_no, d["remedy"], d["reason"])
    return task_ids.in_round(round_no, d["remedy"])


def remedy(problem: str, round_no: int, remedy_name: str, **context: Any) -> dict[str, Any]:
    """tune_model / augment_features / augment_data: write the next round's plan. A plan that needs
    more history names the data set and summary the next ``collect_more_data`` task writes."""
    from include.lifecycle.decide import next_plan

    rc = RunContext.from_airflow(problem, context)
    layout, rnd = rc.layout, rc.layout.round(round_no)
    plan = rc.store.read_json(rnd.plan)
    d = rc.store.read_json(rnd.diagnosis)
    new = next_plan(rc.spec, plan, remedy_name, d["reason"])
    if new.get("needs_new_data"):
        folder = layout.collect_dir(round_no + 1)
        new["dataset_rel"] = layout.dataset_in(folder)
        new["collect_rel"] = layout.collect_summary_in(folder)  # the re-collection's own summary
    rc.store.write_json(layout.round(round_no + 1).plan, new)
    log.info("%s: round %d plan: %s", remedy_name, round_no + 1, "; ".join(new["changes"]))
    return {"round": round_no + 1, "remedy": new["applied"], "changes": new["changes"]}


# --- deploy / end states ---------------------------------------------------------------------
def promote_or_recheck(
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
            rc.store.write_json(rc.layout.recheck, {**again, "champion_version": expected, "reason": reason})
            log.info("deploy_model: %s", reason)
            if not (again["deploy"] or forced):
                return None
    _fail("deploy_model: the champion kept changing under this run; giving up after 10 comparisons")
    return None


def deploy_model(problem: str, **context: Any) -> dict[str, Any]:
    """Register the winning round's bundle as a new version, make it the champion and serve it."""
    from include.lifecycle import deploy
    from include.lifecycle.layout import REGISTRY
    from include.lifecycle.registry import ModelRegistry

    rc = RunContext.from_airflow(problem, context)
    win = deploy.winning_round(rc.rounds())
    if win is None:
        _fail("deploy_model ran but no round met the goal: refusing to deploy")
    k, ev = win["round"], win["evaluation"]
    files = deploy.bundle_files(rc.store, rc.layout.round(k), ev)
    # the data the winning round trained on: this run's collection, or a wider one from augment_data
    source = rc.store.read_json(win["plan"].get("collect_rel") or rc.layout.collect_summary)
    try:
        lineage = deploy.lineage(
            run_id=rc.run_id,
            win=win,
            source=source,
            dataset_uri=rc.store.uri(win["plan"]["dataset_rel"]),
            spec_digest=rc.spec.digest(),
        )
    except ValueError as exc:
        _fail(f"deploy_model: {exc}")
    files["lineage.json"] = json.dumps(lineage, indent=2, sort_keys=True).encode()
    reg = ModelRegistry(rc.store.sub(REGISTRY))
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
        log.info("deploy_model: re-using version %s, registered by an earlier try of this run", version)
    current = reg.champion()
    if current and current["version"] == version:  # an earlier try already promoted it
        record = current
    else:
        record = promote_or_recheck(rc, reg, version, win["plan"], ev)
    if record is None:
        out = {
            "decision": "not_promoted",
            "version": None,
            "registered_version": version,
            "round": k,
            "test_score": ev["test_score"],
            "reason": rc.store.read_json(rc.layout.recheck)["reason"],
        }
        rc.record_outcome(out)
        log.info("deploy_model: version %s registered, not promoted - %s", version, out["reason"])
        return out
    out = {
        "decision": "deployed",
        "version": version,
        "round": k,
        "previous_champion": record["previous"],
        "test_score": ev["test_score"],
        "reason": ev["decision"]["reason"],
        **rc.backend.publish_champion(rc, version, log=log.info),
    }
    rc.record_outcome(out)
    log.info("deploy_model: version %s is the champion (was %s)", version, record["previous"])
    return out


def goal_not_met(problem: str, **context: Any) -> dict[str, Any]:
    """The last round missed: deploy nothing, keep the champion, record why."""
    rc = RunContext.from_airflow(problem, context)
    rounds = rc.rounds()
    last = rounds[-1]["evaluation"]
    out = {
        "decision": "goal_not_met",
        "version": None,
        "round": len(rounds),
        "test_score": last["test_score"],
        "reason": f"after {len(rounds)} round(s) the goal is not met: {last['decision']['reason']}",
    }
    rc.record_outcome(out)
    log.info("goal_not_met: %s", out["reason"])
    return out


# --- the report ------------------------------------------------------------------------------
def _failed_tasks(rc: RunContext, context: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks of this run that failed, each with its error (recorded by ``FailureRecorder``).

    The task states come from Airflow (the execution API); a failure record whose task is no longer
    failed (cleared and re-run since) does not count. Without the states (no API), the records do."""
    from ml_lifecycle.errors import ti_key

    folder = rc.layout.failures_dir
    records = [rc.store.read_json(f"{folder}/{n}") for n in rc.store.ls(folder)] if rc.store.exists(folder) else []
    states: dict[str, str] | None = None
    ti = context.get("ti")
    try:
        found = ti.get_task_states(dag_id=rc.spec.name, run_ids=[rc.run_id])  # type: ignore[union-attr]
        states = dict(found.get(rc.run_id, {}))
    except Exception as exc:  # e.g. a task run outside a supervisor
        log.info("publish_report: task states unavailable (%s: %s); using the failure records", type(exc).__name__, exc)
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
    from include.lifecycle.layout import REGISTRY
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.report_run import render_run_report, run_summary

    rc = RunContext.from_airflow(problem, context)
    layout = rc.layout
    failed = _failed_tasks(rc, context)
    outcome = rc.store.read_json_or(layout.outcome)
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
    rounds = rc.rounds()
    reg = ModelRegistry(rc.store.sub(REGISTRY))
    try:
        champion_after = reg.champion()
    except Exception as exc:  # a damaged registry must not stop the report that explains the run
        log.info("publish_report: champion unreadable (%s: %s)", type(exc).__name__, exc)
        champion_after = None
    summary = run_summary(
        spec=rc.spec,
        run_id=rc.run_id,
        as_of=rc.as_of.isoformat(),
        outcome=outcome,
        rounds=rounds,
        problem_card=rc.store.read_json_or(layout.problem_card),
        collect=rc.store.read_json_or(layout.collect_summary),
        eda=rc.store.read_json_or(layout.eda_verdict),
        champion_after=champion_after,
        report_uri=rc.store.uri(layout.report),
    )
    plots = {
        r["round"]: {
            n: rc.store.read_bytes(layout.round(r["round"]).plot(n)) for n in (r["evaluation"] or {}).get("plots", [])
        }
        for r in rounds
    }
    eda_html = rc.store.read_text(layout.eda_section) if rc.store.exists(layout.eda_section) else ""
    rc.store.write_text(layout.report, render_run_report(summary, eda_html, plots))
    rc.store.write_json(layout.run_summary, summary)
    log.info("report: %s; decision %s: %s", summary["report_uri"], summary["decision"], summary["reason"])
    if summary["decision"] == "failed":
        _fail(f"the run failed: {summary['reason']} (report: {summary['report_uri']})")
    return {
        "decision": summary["decision"],
        "summary_uri": rc.store.uri(layout.run_summary),
        "report_uri": summary["report_uri"],
    }
