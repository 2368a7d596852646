"""The ML lifecycle's Airflow plugin: links from a lifecycle run to its results.

- **Extra links** on every task of a lifecycle DAG (*MLflow run*, *Run report*, *Model version*;
  ``ml_lifecycle.links``), shown on the task instance's page;
- **a FastAPI app** under ``/ml-lifecycle`` on the API server (``ml_lifecycle.results_app``) that
  serves the run's report from the artifact store and redirects to the MLflow run and the
  registered model version, behind Airflow's own authentication;
- **external views**: a *Run report* tab on every DAG run's page (the report inside the UI) and
  *MLflow* in the navigation (the MLflow UI, ``$ML_MLFLOW_UI_URL``, default ``make mlflow``'s
  http://127.0.0.1:5000).

It lives at the top of the plugins folder: Airflow imports every ``.py`` file under it as a
top-level module and registers each ``AirflowPlugin`` subclass it finds, so the class is defined
here only. The FastAPI app is built on first use (the API server), not when a worker or the DAG
processor loads plugins.
"""

from __future__ import annotations

import functools
from typing import Any

from airflow.plugins_manager import AirflowPlugin


@functools.cache
def _results_app() -> Any:
    from ml_lifecycle.results_app import create_app

    return create_app()


def _mlflow_ui() -> str:
    from include.lifecycle.tracking import ui_url

    return ui_url()


class MlLifecyclePlugin(AirflowPlugin):
    name = "ml_lifecycle"

    @property
    def operator_extra_links(self) -> list[Any]:  # type: ignore[override]
        from ml_lifecycle.links import extra_links

        return extra_links()

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from ml_lifecycle.links import PREFIX

        return [{"app": _results_app(), "url_prefix": PREFIX, "name": "ML lifecycle results"}]

    @property
    def external_views(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from ml_lifecycle.links import REPORT, results_path

        return [
            {
                "name": "Run report",
                # the UI fills in the (URL-encoded) ids; a path on the API server, shown in a frame
                "href": results_path("{DAG_ID}", "{RUN_ID}", REPORT).replace("%7B", "{").replace("%7D", "}"),
                "url_route": "ml-lifecycle-report",
                "destination": "dag_run",
            },
            {"name": "MLflow", "href": _mlflow_ui(), "destination": "nav"},
        ]
