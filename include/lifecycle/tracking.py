"""Experiment tracking: one lifecycle DAG run as one MLflow run, each training trial a nested run.

Everything is logged from the files the run already wrote (``include/lifecycle/layout.py``):
``run_summary.json`` (decision, rounds, intervals, data counts, splits), each round's trial records
(``round_<k>/trials/<trial>/output/metrics.json``) and ``selection.json``, the reports and the
plots. It runs once, after the run's decision (the ``log_to_mlflow`` task after ``publish_report``),
so training trials never write to the tracking store (no SQLite write contention) and the logging
can be repeated:

- **one run per DAG run**, found by its tags ``airflow.dag_id`` and ``airflow.run_id`` (the
  registry of the deploy step finds or creates the same run through :func:`find_or_create_run`);
- **nested runs** are found by ``airflow.trial_id`` under that parent; params already there are
  not logged again; metric steps already in a metric's history are skipped; artifacts overwrite
  themselves. A retried task therefore adds nothing twice.

Pure Python (no Airflow); mlflow is imported inside the functions, never when a DAG file is parsed.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.lifecycle.layout import RunLayout
from include.lifecycle.store import Store

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from include.lifecycle.spec import Spec

TAG_DAG_ID = "airflow.dag_id"
TAG_RUN_ID = "airflow.run_id"
TAG_TRIAL_ID = "airflow.trial_id"
TAG_DECISION = "decision"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"

# how a run ended (run_summary.json's decision); "failed" ends the MLflow run as FAILED
DECISIONS = ("deployed", "not_promoted", "goal_not_met", "champion_kept", "rejected", "failed")

# MLflow's limits (3.x): a param value up to 6000 characters, a tag value up to 8000
_PARAM_MAX = 6000
_TAG_MAX = 8000

DEFAULT_UI_PORT = 5000


class TrackingError(RuntimeError):
    """The run could not be logged to the tracking server (names the run and what failed)."""


# --- where the UI is -------------------------------------------------------------------------------
def ui_url(env: Mapping[str, str] | None = None) -> str:
    """The MLflow UI that links point at: ``$ML_MLFLOW_UI_URL``, else the tracking server itself
    when ``$MLFLOW_TRACKING_URI`` is http(s), else ``make mlflow``'s ``http://127.0.0.1:$MLFLOW_PORT``
    (default 5000)."""
    env = os.environ if env is None else env
    if env.get("ML_MLFLOW_UI_URL"):
        return env["ML_MLFLOW_UI_URL"].rstrip("/")
    uri = env.get("MLFLOW_TRACKING_URI") or ""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://127.0.0.1:{env.get('MLFLOW_PORT') or DEFAULT_UI_PORT}"


def run_page(ui: str, experiment_id: str, mlflow_run_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{mlflow_run_id}"


def model_version_page(ui: str, model_name: str, version: int | str) -> str:
    return f"{ui.rstrip('/')}/#/models/{model_name}/versions/{version}"


def experiment_page(ui: str, experiment_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}"


# --- finding the runs ------------------------------------------------------------------------------
def _quote(value: str) -> str:
    """A value inside a search filter's single quotes."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def dag_run_filter(dag_id: str, run_id: str) -> str:
    """The search filter that finds the MLflow run of one DAG run (and its nested runs)."""
    return f"tags.`{TAG_DAG_ID}` = {_quote(dag_id)} and tags.`{TAG_RUN_ID}` = {_quote(run_id)}"


def find_run(client: MlflowClient, experiment_id: str, dag_id: str, run_id: str) -> Any | None:
    """The MLflow run of this DAG run (not a nested trial), the oldest if several exist; else None."""
    runs = client.search_runs(
        [experiment_id], filter_string=dag_run_filter(dag_id, run_id), max_results=1000, order_by=["start_time ASC"]
    )
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    return min(parents, key=lambda r: (r.info.start_time or 0, r.info.run_id)) if parents else None


def find_or_create_run(
    client: MlflowClient, experiment_id: str, dag_id: str, run_id: str, tags: Mapping[str, str] | None = None
) -> str:
    """The MLflow run id of one DAG run: found by the tags ``airflow.dag_id`` and ``airflow.run_id``,
    else created (named after the Airflow run id) with them and ``tags``. Whoever comes first
    (the registry in deploy_model, or log_to_mlflow) creates it; the other finds it."""
    found = find_run(client, experiment_id, dag_id, run_id)
    if found is not None:
        return found.info.run_id
    run = client.create_run(
        experiment_id,
        run_name=run_id,
        tags={TAG_DAG_ID: dag_id, TAG_RUN_ID: run_id, **(tags or {})},
    )
    return run.info.run_id


# --- what is logged -------------------------------------------------------------------------------
def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _str(value: Any, limit: int) -> str:
    s = value if isinstance(value, str) else ("" if value is None else str(value))
    return s if len(s) <= limit else s[: limit - 3] + "..."


def run_params(summary: Mapping[str, Any], spec: Spec, run_conf: Mapping[str, Any], backend: str) -> dict[str, str]:
    """The DAG run's params: the spec digest, the data window (as_of, start, end, lookback), the
    rounds, the backend and the seed, the goal, and the run's form values."""
    window = (summary.get("data") or {}).get("window") or {}
    goal = spec.goal
    out: dict[str, Any] = {
        "problem": spec.name,
        "spec_digest": summary.get("spec_digest") or spec.digest(),
        "as_of": summary.get("as_of"),
        "window_start": window.get("start"),
        "window_end": window.get("end"),
        "lookback_days": window.get("lookback_days") or run_conf.get("lookback_days") or spec.data.lookback_days,
        "rounds": len(summary.get("rounds") or []),
        "max_rounds": run_conf.get("max_rounds") or spec.max_rounds,
        "backend": backend,
        "seed": spec.training.seed,
        "goal_metric": goal.metric,
        "goal_target": goal.target,
        "max_alert_rate": goal.max_alert_rate,
        "champion_margin": goal.champion_margin,
        "force_deploy": bool(run_conf.get("force_deploy", False)),
        "skip_approval": bool(run_conf.get("skip_approval", False)),
    }
    return {k: _str(v, _PARAM_MAX) for k, v in out.items() if v is not None}


def run_metrics(summary: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of the DAG run: per round (step k) the goal metric on test with its
    interval (``_low`` / ``_high``), on validation and train, the champion's score, the target,
    whether the goal was met and the split sizes; the data counts at step 0."""
    metric = (summary.get("goal") or {}).get("metric") or "score"
    target = _finite((summary.get("goal") or {}).get("target"))
    out: list[tuple[str, float, int]] = []

    def add(key: str, value: Any, step: int) -> None:
        v = _finite(value)
        if v is not None:
            out.append((key, v, step))

    data = summary.get("data") or {}
    for key, name in (
        ("rows_in", "rows_in"),
        ("rows_curated", "rows_accepted"),
        ("rows_quarantined", "rows_quarantined"),
        ("dataset_rows", "dataset_rows"),
        ("positives", "dataset_positives"),
    ):
        add(f"data_{name}", data.get(key), 0)
    splits = summary.get("splits") or {}
    for r in summary.get("rounds") or []:
        k = int(r["round"])
        ci = (r.get("intervals") or {}).get(metric) or {}
        add(f"test_{metric}", r.get("test_score"), k)
        add(f"test_{metric}_low", ci.get("low"), k)
        add(f"test_{metric}_high", ci.get("high"), k)
        add(f"validation_{metric}", r.get("validation_score"), k)
        add(f"train_{metric}", r.get("train_score"), k)
        add(f"champion_{metric}", r.get("champion_score"), k)
        add("goal_target", target, k)
        if r.get("meets_goal") is not None:
            add("goal_met", 1.0 if r.get("meets_goal") else 0.0, k)
        check = r.get("goal_check") or {}
        add("test_alert_rate", check.get("alert_rate"), k)
        split = splits.get(str(k)) or {}
        for part in ("train", "validation", "test"):
            add(f"split_{part}_rows", (split.get(part) or {}).get("rows"), k)
            add(f"split_{part}_positives", (split.get(part) or {}).get("positives"), k)
    return out


def run_tags(summary: Mapping[str, Any], report_uri: str | None) -> dict[str, str]:
    """The decision and what explains it, as tags; the run's description (``mlflow.note.content``)."""
    decision = summary.get("decision") or "failed"
    tags: dict[str, Any] = {
        TAG_DECISION: decision,
        "reason": summary.get("reason"),
        "model_version": summary.get("model_version"),
        "champion_before": summary.get("champion_before"),
        "champion_after": summary.get("champion_after"),
        "data_quality": summary.get("data_quality"),
        "failed_task": summary.get("failed_task"),
        "error": summary.get("error"),
        "report_uri": report_uri,
    }
    tags = {k: _str(v, _TAG_MAX) for k, v in tags.items() if v is not None}
    tags[NOTE_TAG] = _str(describe(summary, report_uri), _TAG_MAX)
    return tags


def describe(summary: Mapping[str, Any], report_uri: str | None) -> str:
    """The run's description in the MLflow UI (markdown): decision, reason, each round against the goal."""
    goal = summary.get("goal") or {}
    op = ">=" if goal.get("higher_is_better", True) else "<="
    lines = [
        f"**{summary.get('decision') or 'failed'}**: {summary.get('reason') or ''}",
        "",
        f"Goal: `{goal.get('metric')} {op} {goal.get('target')}`",
    ]
    metric = goal.get("metric")
    for r in summary.get("rounds") or []:
        ci = (r.get("intervals") or {}).get(metric) or {}
        interval = f" [{ci['low']:.4f}, {ci['high']:.4f}]" if _finite(ci.get("low")) is not None else ""
        test = _finite(r.get("test_score"))
        lines.append(
            f"- round {r['round']} ({(r.get('plan') or {}).get('remedy') or 'initial'}): best {r.get('best_trial')}, "
            + (f"test {test:.4f}{interval}" if test is not None else "not evaluated")
            + (" - meets the goal" if r.get("meets_goal") else "")
        )
    if report_uri:
        lines += ["", f"Report: {report_uri} (also under Artifacts: report.html)"]
    return "\n".join(lines)


def trial_records(store: Store, layout: RunLayout, rounds: int) -> list[dict[str, Any]]:
    """Every trial of the run's rounds that wrote its record (``output/metrics.json``), with its
    round and whether ``select_model`` picked it (best of the run so far / best of its round)."""
    out = []
    for k in range(1, rounds + 1):
        rnd = layout.round(k)
        selection = store.read_json_or(rnd.selection) or {}
        best = (selection.get("best") or {}).get("trial_id")
        round_best = (selection.get("round_best") or {}).get("trial_id")
        for trial_id in store.ls(f"{rnd.dir}/trials"):
            metrics_rel = f"{rnd.trial_output(trial_id)}/metrics.json"
            if not store.exists(metrics_rel):
                continue  # a trial that failed before it wrote its record
            rec = store.read_json(metrics_rel)
            out.append({**rec, "round": k, "selected": trial_id == best, "round_best": trial_id == round_best})
    return out


def trial_params(rec: Mapping[str, Any]) -> dict[str, str]:
    params: dict[str, Any] = {
        "family": rec.get("family"),
        "round": rec.get("round"),
        "resample": rec.get("resample"),
        "selection": rec.get("selection"),
        "n_train": rec.get("n_train"),
        "n_validation": rec.get("n_validation"),
        "n_features": rec.get("n_features"),
        **{str(k): v for k, v in (rec.get("params") or {}).items()},
    }
    return {k: _str(v, _PARAM_MAX) for k, v in params.items() if v is not None}


def trial_metrics(rec: Mapping[str, Any]) -> dict[str, float]:
    """A trial's train and validation scores (the goal metric, and the other metrics the trial
    scored on validation), the sd of its cross-validation folds, and its fit time."""
    metric = rec.get("metric") or "score"
    seconds = rec.get("seconds") or {}
    skip = {"validation_score", "validation_score_sd", "validation_fold_scores", "validation_score_transformed"}
    values: dict[str, Any] = {k: v for k, v in rec.items() if k.startswith("validation_") and k not in skip}
    values.update(
        {
            f"train_{metric}": rec.get("train_score"),
            f"validation_{metric}": rec.get("validation_score"),
            f"validation_{metric}_sd": rec.get("validation_score_sd"),
            f"holdout_validation_{metric}": rec.get("holdout_validation_score"),
            "fit_seconds": seconds.get("fit"),
            "cv_seconds": seconds.get("cv"),
            "total_seconds": seconds.get("total"),
        }
    )
    return {k: v for k, v in ((k, _finite(v)) for k, v in values.items()) if v is not None}


def artifact_files(store: Store, layout: RunLayout, rounds: int) -> dict[str, str]:
    """``{artifact path in MLflow: path in the store}``: the reports, run_summary.json, the EDA
    verdict, and per round its plan, selection, evaluation, diagnosis and plots."""
    files = {
        "report.html": layout.report,
        "run_summary.json": layout.run_summary,
        "eda/eda_report.html": layout.eda_report,
        "eda/verdict.json": layout.eda_verdict,
        "collect_summary.json": layout.collect_summary,
        "problem_card.json": layout.problem_card,
    }
    for k in range(1, rounds + 1):
        rnd = layout.round(k)
        for name, rel in (
            ("plan.json", rnd.plan),
            ("selection.json", rnd.selection),
            ("evaluation.json", rnd.evaluation),
            ("diagnosis.json", rnd.diagnosis),
        ):
            files[f"round_{k}/{name}"] = rel
        for png in store.ls(rnd.plots_dir):
            files[f"round_{k}/plots/{png}"] = f"{rnd.plots_dir}/{png}"
    return {dst: src for dst, src in files.items() if store.exists(src)}


# --- logging, idempotent -------------------------------------------------------------------------
def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> list[str]:
    """Log the params the run does not have yet; returns those it has with another value (MLflow
    params are immutable: they are left as they are and reported)."""
    from mlflow.entities import Param

    have = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in have]
    for i in range(0, len(new), 100):  # log_batch takes up to 100 params
        client.log_batch(run_id, params=new[i : i + 100])
    return sorted(k for k, v in params.items() if k in have and have[k] != v)


def _log_metrics(client: MlflowClient, run_id: str, metrics: list[tuple[str, float, int]]) -> int:
    """Log the ``(key, value, step)`` not in the metric's history yet; returns how many were new."""
    from mlflow.entities import Metric

    latest = client.get_run(run_id).data.metrics
    seen: dict[str, set[int]] = {}
    now = int(time.time() * 1000)
    new = []
    for key, value, step in metrics:
        if key not in seen:
            seen[key] = {m.step for m in client.get_metric_history(run_id, key)} if key in latest else set()
        if step in seen[key]:
            continue
        seen[key].add(step)
        new.append(Metric(key, value, now, step))
    for i in range(0, len(new), 1000):  # log_batch takes up to 1000 metrics
        client.log_batch(run_id, metrics=new[i : i + 1000])
    return len(new)


def _set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, tags=items[i : i + 100])


def log_run(
    client: MlflowClient,
    experiment_id: str,
    store: Store,
    run_id: str,
    *,
    spec: Spec,
    run_conf: Mapping[str, Any] | None = None,
    backend: str = "local",
    dag_id: str | None = None,
) -> dict[str, Any]:
    """Log one DAG run (its folder in ``store``) to MLflow; idempotent. Returns small JSON: the
    experiment, the MLflow run id, the decision, how many trials, metrics and artifacts.

    A run without ``run_summary.json`` (publish_report never wrote it) is logged as failed with
    what exists. Raises :class:`TrackingError` naming the run and the step that failed."""
    from mlflow.entities import RunStatus

    dag_id = dag_id or spec.name
    layout = RunLayout(run_id)
    step = "read the run's files"
    try:
        summary = store.read_json_or(layout.run_summary)
        if summary is None:
            summary = {
                "decision": "failed",
                "reason": f"{store.uri(layout.run_summary)} does not exist: publish_report did not write it",
                "goal": {"metric": spec.goal.metric, "target": spec.goal.target},
                "rounds": [],
            }
        rounds = len(summary.get("rounds") or [])
        report_uri = store.uri(layout.report) if store.exists(layout.report) else None
        trials = trial_records(store, layout, rounds)
        files = artifact_files(store, layout, rounds)

        step = "find or create the run"
        parent = find_or_create_run(client, experiment_id, dag_id, run_id)
        step = "log the run's params"
        conflicts = _log_params(client, parent, run_params(summary, spec, run_conf or {}, backend))
        step = "log the run's metrics"
        n_metrics = _log_metrics(client, parent, run_metrics(summary))
        step = "tag the run"
        _set_tags(client, parent, run_tags(summary, report_uri))

        step = "log the trials"
        children = {
            r.data.tags.get(TAG_TRIAL_ID): r.info.run_id
            for r in client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = {_quote(parent)}",
                max_results=1000,
            )
        }
        for rec in trials:
            trial_id = str(rec["trial_id"])
            child = children.get(trial_id)
            if child is None:
                child = client.create_run(
                    experiment_id,
                    run_name=trial_id,
                    tags={PARENT_TAG: parent, TAG_DAG_ID: dag_id, TAG_RUN_ID: run_id, TAG_TRIAL_ID: trial_id},
                ).info.run_id
                children[trial_id] = child
            _log_params(client, child, trial_params(rec))
            _log_metrics(client, child, [(k, v, 0) for k, v in trial_metrics(rec).items()])
            _set_tags(
                client,
                child,
                {
                    "family": str(rec.get("family")),
                    "round": str(rec["round"]),
                    "selected": str(bool(rec["selected"])).lower(),
                    "round_best": str(bool(rec["round_best"])).lower(),
                },
            )
            client.set_terminated(child, RunStatus.to_string(RunStatus.FINISHED))

        step = "log the artifacts"
        with tempfile.TemporaryDirectory(prefix="mlflow-artifacts-") as tmp:
            for dst, src in files.items():
                path = Path(tmp, dst)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(store.read_bytes(src))
            if files:
                client.log_artifacts(parent, tmp)

        step = "end the run"
        status = RunStatus.FAILED if summary.get("decision") == "failed" else RunStatus.FINISHED
        client.set_terminated(parent, RunStatus.to_string(status))
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking of run {run_id!r} of {dag_id!r} failed at '{step}': {type(exc).__name__}: {exc}"
        ) from exc
    return {
        "experiment_id": experiment_id,
        "mlflow_run_id": parent,
        "decision": summary.get("decision"),
        "trials": len(trials),
        "new_metric_values": n_metrics,
        "artifacts": len(files),
        "param_conflicts": conflicts,
    }
