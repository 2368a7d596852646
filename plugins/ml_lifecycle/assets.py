"""The Airflow Assets a lifecycle DAG produces, so other DAGs can be scheduled on them.

- ``<problem>.curated_data``: updated when ``collect_and_label`` succeeds (curated partitions and
  the run's labelled data set are in the artifact store);
- ``<problem>.champion_model``: updated when ``deploy_model`` promotes a new champion (not when
  the goal is missed or a deployment is rejected: those runs skip ``deploy_model``);
- ``<problem>.retrain_requested``: updated by the monitoring DAG's ``request_retraining`` when the
  champion's realised goal metric misses the goal with confidence (or its inputs drift, if the
  spec asks); the evidence is in the event's ``extra``. The lifecycle DAG runs on its cron *or*
  this asset.

The URIs are logical (``ml-lifecycle://<problem>/...``) because the physical location depends on
the ``ml_artifact_root`` variable, which a DAG file must not read at parse time. A consumer:

    from ml_lifecycle.assets import champion_model_asset
    with DAG("card_fraud_batch_scoring", schedule=champion_model_asset("card_fraud"), ...): ...
"""

from __future__ import annotations

from airflow.sdk import Asset

GROUP = "ml-lifecycle"


def curated_data_asset(problem: str) -> Asset:
    return Asset(name=f"{problem}.curated_data", uri=f"ml-lifecycle://{problem}/curated_data", group=GROUP)


def champion_model_asset(problem: str) -> Asset:
    return Asset(name=f"{problem}.champion_model", uri=f"ml-lifecycle://{problem}/champion_model", group=GROUP)


def retrain_requested_asset(problem: str) -> Asset:
    return Asset(name=f"{problem}.retrain_requested", uri=f"ml-lifecycle://{problem}/retrain_requested", group=GROUP)
