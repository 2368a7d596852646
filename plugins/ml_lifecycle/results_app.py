"""The results of a lifecycle run, served by Airflow's API server (a plugin ``fastapi_apps`` entry,
mounted under ``/ml-lifecycle`` by ``plugins/ml_lifecycle_plugin.py``).

    /ml-lifecycle/runs/<dag_id>/<run_id>          the run at a glance: decision, reason, links
    /ml-lifecycle/runs/<dag_id>/<run_id>/report   report.html from the artifact store
    /ml-lifecycle/runs/<dag_id>/<run_id>/eda      the EDA report
    /ml-lifecycle/runs/<dag_id>/<run_id>/mlflow   -> the run in the MLflow UI (found by its tags)
    /ml-lifecycle/runs/<dag_id>/<run_id>/model    -> the model version the run registered

Every page needs the Airflow user's right to read the DAG's runs (the UI's session cookie or a
bearer token, checked by Airflow's own ``requires_access_dag``). A page that has nothing to show
yet (the run has not written its report, was not logged to MLflow, deployed no model) answers
404 with a sentence that says why. Nothing here writes anywhere.
"""

from __future__ import annotations

import html
import re
from typing import Any

_DAG_ID = re.compile(r"^[a-z][a-z0-9_]{1,62}$")  # a problem name (include/lifecycle/spec.py)


def artifact_root() -> str:
    """The artifact root as the tasks see it: Airflow variable ``ml_artifact_root`` (read from the
    metadata database: this runs in the API server, not in a task), else ``$ML_ARTIFACT_ROOT``,
    else ``<project>/artifacts``."""
    from pathlib import Path

    from ml_lifecycle.settings import ARTIFACT_ROOT_VARIABLE, default_artifact_root

    uri = None
    try:
        # the core model, not airflow.sdk.Variable: outside a task the SDK's reads only the
        # environment and secrets backends, never the metadata database the UI's variables live in
        from airflow.models import Variable

        uri = Variable.get(ARTIFACT_ROOT_VARIABLE, default_var=None)  # noqa: AIR311
    except Exception:  # no metadata database reachable: the environment decides
        uri = None
    uri = uri or default_artifact_root()
    return uri if "://" in uri else Path(uri).resolve().as_uri()


def problem_store(dag_id: str) -> Any:
    """The problem's artifact store (``<root>/<dag_id>``), through ObjectStoragePath like the tasks."""
    from airflow.sdk import ObjectStoragePath

    from include.lifecycle.store import Store

    root = ObjectStoragePath(artifact_root()) / dag_id
    return Store(root.fs, root.path)


def _page(title: str, body: str, status: int = 200) -> Any:
    from fastapi.responses import HTMLResponse

    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:60rem}"
        "td,th{padding:.25rem .75rem;text-align:left;vertical-align:top}"
        ".deployed{color:#17803d}.not{color:#b45309}.failed{color:#b91c1c}</style></head>"
        f"<body><h2>{html.escape(title)}</h2>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status)


def _not_found(what: str, why: str) -> Any:
    return _page(what, f"<p>{html.escape(why)}</p>", status=404)


def decision_class(decision: str | None) -> str:
    return {"deployed": "deployed", "failed": "failed"}.get(decision or "", "not")


def create_app() -> Any:
    """The FastAPI app (built when the API server loads the plugin, not when a DAG is parsed)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI
    from fastapi.responses import RedirectResponse

    from include.lifecycle import tracking
    from include.lifecycle.layout import RunLayout
    from ml_lifecycle.links import MLFLOW_RUN, MODEL_VERSION, REPORT, results_path

    app = FastAPI(
        title="ML lifecycle results",
        description="Reports, MLflow runs and model versions of the ML lifecycle DAGs' runs.",
        dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))],
    )

    def _store(dag_id: str) -> Any:
        if not _DAG_ID.match(dag_id):
            return None
        return problem_store(dag_id)

    def _summary(dag_id: str, run_id: str) -> dict[str, Any] | None:
        store = _store(dag_id)
        return None if store is None else store.read_json_or(RunLayout(run_id).run_summary)

    def _html_file(dag_id: str, run_id: str, rel_of: Any, what: str) -> Any:
        from fastapi.responses import HTMLResponse

        store = _store(dag_id)
        rel = rel_of(RunLayout(run_id))
        if store is None or not store.exists(rel):
            where = store.uri(rel) if store is not None else f"(no problem {dag_id!r})"
            return _not_found(
                f"{what}: not written yet", f"{where} does not exist: the run has not written its {what} (yet)."
            )
        return HTMLResponse(store.read_text(rel))

    @app.get("/runs/{dag_id}/{run_id}/report")
    def report(dag_id: str, run_id: str) -> Any:
        return _html_file(dag_id, run_id, lambda lay: lay.report, "run report")

    @app.get("/runs/{dag_id}/{run_id}/eda")
    def eda(dag_id: str, run_id: str) -> Any:
        return _html_file(dag_id, run_id, lambda lay: lay.eda_report, "EDA report")

    @app.get("/runs/{dag_id}/{run_id}/mlflow")
    def mlflow_run(dag_id: str, run_id: str) -> Any:
        found = _find_mlflow_run(dag_id, run_id)
        if isinstance(found, str):
            return _not_found("MLflow run: not found", found)
        experiment_id, mlflow_run_id = found
        return RedirectResponse(tracking.run_page(tracking.ui_url(), experiment_id, mlflow_run_id), status_code=307)

    @app.get("/runs/{dag_id}/{run_id}/model")
    def model_version(dag_id: str, run_id: str) -> Any:
        summary = _summary(dag_id, run_id) or {}
        found = _find_mlflow_run(dag_id, run_id)
        if not isinstance(found, str):
            versions = _registered_versions(found[1])
            if versions:
                name, version = versions[-1]
                return RedirectResponse(tracking.model_version_page(tracking.ui_url(), name, version), status_code=307)
        version = summary.get("model_version")
        if version is not None:  # registered, though not (yet) linked to the run in MLflow
            return RedirectResponse(tracking.model_version_page(tracking.ui_url(), dag_id, version), status_code=307)
        decision = summary.get("decision")
        why = (
            f"this run registered no model version (decision: {decision}: {summary.get('reason')})"
            if decision
            else "this run has not reached its decision yet (no run_summary.json)"
        )
        return _not_found("Model version: none", why)

    @app.get("/runs/{dag_id}/{run_id}")
    def run_page(dag_id: str, run_id: str) -> Any:
        summary = _summary(dag_id, run_id)
        if summary is None:
            return _not_found(
                f"{dag_id} {run_id}", "The run has not written run_summary.json yet (publish_report has not run)."
            )
        decision = summary.get("decision")
        rows = [
            ("decision", f"<b class='{decision_class(decision)}'>{html.escape(str(decision))}</b>"),
            ("reason", html.escape(str(summary.get("reason") or ""))),
            ("model version", html.escape(str(summary.get("model_version")))),
            ("champion", f"{summary.get('champion_before')} -> {summary.get('champion_after')}"),
        ]
        links = [
            (REPORT, "run report"),
            ("eda", "EDA report"),
            (MLFLOW_RUN, "MLflow run (params, metrics per round, trials)"),
            (MODEL_VERSION, "model version in the MLflow registry"),
        ]
        table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        items = "".join(
            f"<li><a href='{html.escape(results_path(dag_id, run_id, page))}' target='_blank'>{label}</a></li>"
            for page, label in links
        )
        return _page(f"{dag_id}: {run_id}", f"<table>{table}</table><ul>{items}</ul>")

    return app


def _find_mlflow_run(dag_id: str, run_id: str) -> tuple[str, str] | str:
    """``(experiment id, MLflow run id)`` of the DAG run, or why there is none."""
    if not _DAG_ID.match(dag_id):
        return f"{dag_id!r} is not a lifecycle problem"
    from include.lifecycle import mlflow_env, tracking

    root = artifact_root()
    try:
        client = mlflow_env.client(artifact_root=root)
        run = tracking.find_run(client, mlflow_env.experiment_id(client, dag_id, artifact_root=root), dag_id, run_id)
    except Exception as exc:  # the tracking server down, a store that cannot be read
        return f"the MLflow tracking store ({mlflow_env.tracking_uri(root)}) could not be read: {type(exc).__name__}: {exc}"
    if run is None:
        return (
            f"run {run_id} of {dag_id} is not in the MLflow tracking store ({mlflow_env.tracking_uri(root)}) yet: "
            "log_to_mlflow logs it after publish_report"
        )
    return run.info.experiment_id, run.info.run_id


def _registered_versions(mlflow_run_id: str) -> list[tuple[str, str]]:
    """``(model name, version)`` registered from this MLflow run, oldest first."""
    from include.lifecycle import mlflow_env

    client = mlflow_env.client(artifact_root=artifact_root())
    found = client.search_model_versions(f"run_id = '{mlflow_run_id}'")
    return [(v.name, v.version) for v in sorted(found, key=lambda v: int(v.version))]
