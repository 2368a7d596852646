"""Production monitoring: one DAG per problem whose daily partitions are batch-scored and labelled.

Every day, `monitor_champion` joins the labels that have matured (``data.labels.maturity_days``)
to the rows batch scoring scored and the endpoint captured (one row per key: the endpoint's
answer wins), computes the champion's realised goal metric per day and over the rolling window
(``monitoring.window_days``) with intervals, measures the drift of the newest scored days' inputs
(as captured with the scores, spec ``serving.capture``; else the landing data) against the
champion's training rows, and writes

    <artifact root>/<problem>/monitoring/ds=YYYY-MM-DD/monitoring.json   figures and verdict
    <artifact root>/<problem>/monitoring/ds=YYYY-MM-DD/report.html       series with the goal line

When the window misses the goal with confidence (or, if the spec asks, the inputs drift),
`request_retraining` updates the asset ``<problem>.retrain_requested`` with the evidence in its
``extra``: the lifecycle DAG is scheduled on its cron *or* that asset, so it retrains on evidence.
"""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from include.lifecycle.spec import Spec
from ml_lifecycle.assets import retrain_requested_asset
from ml_lifecycle.daily import build_for_specs, daily_dag
from ml_lifecycle.errors import fail_fast


def build_dag(spec: Spec) -> DAG:
    from ml_lifecycle.sections import monitoring

    with daily_dag(
        spec,
        "monitoring",
        description="the champion's realised goal metric and drift; retraining on evidence",
        tag="monitoring",
        doc_md=__doc__,
    ) as dag:
        monitor_champion = PythonOperator(
            task_id="monitor_champion",
            python_callable=fail_fast(monitoring.monitor_champion),
            op_kwargs={"problem": spec.name},
        )
        request_retraining = PythonOperator(
            task_id="request_retraining",
            python_callable=fail_fast(monitoring.request_retraining),
            op_kwargs={"problem": spec.name},
            outlets=[retrain_requested_asset(spec.name)],
        )
        monitor_champion >> request_retraining
    return dag


build_for_specs(globals(), "monitoring", lambda spec: spec.monitored, build_dag)
