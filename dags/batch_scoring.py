"""Batch scoring with the champion: one DAG per problem whose data arrives in daily partitions.

Every day, `score_new_data` scores the new (unlabelled) transactions of the last whole day,
`ds=<day before the data interval end>` of the landing folder (or the `ds` param), with the
problem's champion from the model registry (checksums verified), and writes

    <artifact root>/<problem>/scores/ds=YYYY-MM-DD/part-0.parquet   row key, time, score,
                                                                    decision, model version
    <artifact root>/<problem>/scores/ds=YYYY-MM-DD/_manifest.json   rows in = scored + quarantined

atomically; a re-run for the same day replaces them (idempotent). PII columns are tokenised
for the per-card features and never written. The days before `ds` (the spec's lookback) are
read as history so that per-card features see the same past as in training.
With the `aws` backend the model runs in a SageMaker batch transform job on the champion's
SageMaker model (created by deploy_model on aws): the task curates the day and its history,
writes them as CSV input files, waits for the job in the triggerer and writes the same scores
and manifest from the job's output.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from include.lifecycle.spec import Spec, SpecError, load_spec, spec_files
from ml_lifecycle.operators import BatchScoringOperator
from ml_lifecycle.settings import task_defaults

SCHEDULE = "@daily"


def scores_partitions(spec: Spec) -> bool:
    """Problems with new data in daily partitions get a batch-scoring DAG."""
    return spec.data.layout == "partitioned" and spec.data.time_column is not None and spec.deploy.enabled


def build_dag(spec: Spec) -> DAG:
    with DAG(
        dag_id=f"{spec.name}_batch_scoring",
        description=f"{spec.title}: score each day's new data with the champion",
        doc_md=__doc__,
        schedule=SCHEDULE,
        # far back on purpose: Airflow marks every task of a run dated before start_date as skipped
        # and calls the run a success; a backfill of old dates must run and say what data it found
        start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags={"ml-lifecycle", "batch-scoring", f"backend:{spec.backend}", *spec.tags},
        params={
            "ds": Param(
                None,
                type=["null", "string"],
                pattern=r"^\d{4}-\d{2}-\d{2}$",
                title="Partition",
                description="Day to score (YYYY-MM-DD); empty: the day before the data interval end.",
            ),
            "backend": Param(spec.backend, type="string", enum=["local", "aws"], title="Backend"),
        },
        default_args=task_defaults(spec.owner),
    ) as dag:
        BatchScoringOperator(task_id="score_new_data", problem=spec.name)
    return dag


for _path in spec_files():
    try:
        _spec = load_spec(_path)
    except SpecError:
        continue  # dags/lifecycle_dags.py reports a broken spec with its file, field and rule
    if scores_partitions(_spec):
        globals()[f"dag_{_spec.name}_batch_scoring"] = build_dag(_spec)
