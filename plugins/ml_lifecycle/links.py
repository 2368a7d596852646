"""Extra links from every task of a lifecycle run to its results: the MLflow run, the run report
and the registered model version.

Each link points at a page of the plugin's FastAPI app (``ml_lifecycle.results_app``, mounted by
``plugins/ml_lifecycle_plugin.py`` under ``/ml-lifecycle`` on Airflow's API server), which resolves
it when it is clicked: the report is read from the artifact store, the MLflow run is found by its
tags, the model version by its run. So a task that finished before the run was logged to MLflow
still links to it, and the links follow the MLflow UI if its address changes
(``$ML_MLFLOW_UI_URL``). ``get_link`` runs in the API server and only builds a path: no store, no
MLflow, no database.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote, urlparse

from airflow.sdk import BaseOperatorLink

PREFIX = "/ml-lifecycle"
TAG = "ml-lifecycle"  # every lifecycle DAG carries it (dags/lifecycle_dags.py)

# what a link opens: the page name in the results app
MLFLOW_RUN = "mlflow"
REPORT = "report"
MODEL_VERSION = "model"


@functools.cache
def _base_path() -> str:
    """The path Airflow's UI is served under (``[api] base_url``), without a trailing slash."""
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # no Airflow configuration: links relative to the server's root
        base = ""
    return urlparse(base).path.rstrip("/")


def results_path(dag_id: str, run_id: str, page: str = "") -> str:
    """``<base>/ml-lifecycle/runs/<dag_id>/<run_id>[/<page>]`` (the run id URL-encoded)."""
    path = f"{_base_path()}{PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"
    return f"{path}/{page}" if page else path


def is_lifecycle_dag(operator: Any, dag_id: str) -> bool:
    """True when the task belongs to a lifecycle DAG (tagged ``ml-lifecycle``, or a problem spec of
    that name exists): links registered for PythonOperator must not show on other DAGs' tasks."""
    tags = getattr(getattr(operator, "dag", None), "tags", None)
    if tags:
        return TAG in tags
    try:
        from include.lifecycle.spec import spec_path

        return spec_path(dag_id).exists()
    except Exception:
        return False


class _ResultsLink(BaseOperatorLink):
    page = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if not is_lifecycle_dag(operator, ti_key.dag_id):
            return ""
        return results_path(ti_key.dag_id, ti_key.run_id, self.page)


class MlflowRunLink(_ResultsLink):
    """The run in the MLflow UI (its params, per-round metrics, nested trials, artifacts)."""

    name = "MLflow run"
    page = MLFLOW_RUN


class RunReportLink(_ResultsLink):
    """The run's report.html (decision, rounds, EDA), served from the artifact store."""

    name = "Run report"
    page = REPORT


class ModelVersionLink(_ResultsLink):
    """The model version this run registered, in the MLflow Model Registry."""

    name = "Model version"
    page = MODEL_VERSION


def lifecycle_operators() -> list[type]:
    """The operator classes of the lifecycle DAG's tasks (the links attach to them)."""
    from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator

    from ml_lifecycle.approval import DeploymentApprovalOperator
    from ml_lifecycle.operators import CollectAndLabelOperator, TrainingTrialOperator

    return [
        PythonOperator,
        BranchPythonOperator,
        CollectAndLabelOperator,
        TrainingTrialOperator,
        DeploymentApprovalOperator,
    ]


def extra_links() -> list[BaseOperatorLink]:
    """The links, bound to the lifecycle's operator classes."""
    operators = lifecycle_operators()
    links = []
    for cls in (MlflowRunLink, RunReportLink, ModelVersionLink):
        link = cls()
        link.operators = operators  # type: ignore[misc]
        links.append(link)
    return links
