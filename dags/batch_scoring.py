"""Batch scoring with the champion: one DAG per problem whose data arrives in daily partitions.

Every day, `score_new_data` scores the new (unlabelled) transactions of the last whole day,
`ds=<day before the data interval end>` of the landing folder (or the `ds` param), with the
problem's champion from the model registry (checksums verified), and writes

    <artifact root>/<problem>/scores/ds=YYYY-MM-DD/part-0.parquet   row key, time, score,
                                                                    decision, model version and
                                                                    (spec serving.capture) the
                                                                    model's inputs
    <artifact root>/<problem>/scores/ds=YYYY-MM-DD/_manifest.json   rows in = scored + quarantined

atomically; a re-run for the same day replaces them (idempotent). PII columns are tokenised
(for the per-card features and in the captured inputs) and never written raw. The days before `ds` (the spec's lookback) are
read as history so that per-card features see the same past as in training.
With the `aws` backend the model runs in a SageMaker batch transform job on the champion's
SageMaker model (created by deploy_model on aws): the task curates the day and its history,
writes them as CSV input files, waits for the job in the triggerer and writes the same scores
and manifest from the job's output.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from include.lifecycle.spec import Spec
from ml_lifecycle.daily import build_for_specs, daily_dag
from ml_lifecycle.operators import BatchScoringOperator


def scores_partitions(spec: Spec) -> bool:
    """Problems with new data in daily partitions get a batch-scoring DAG."""
    return spec.data.layout == "partitioned" and spec.data.time_column is not None and spec.deploy.enabled


def build_dag(spec: Spec) -> DAG:
    with daily_dag(
        spec,
        "batch_scoring",
        description="score each day's new data with the champion",
        tag="batch-scoring",
        doc_md=__doc__,
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
    ) as dag:
        BatchScoringOperator(task_id="score_new_data", problem=spec.name)
    return dag


build_for_specs(globals(), "batch_scoring", scores_partitions, build_dag)
