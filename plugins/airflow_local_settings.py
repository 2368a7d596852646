"""Airflow's local settings, imported by every Airflow process (the plugins folder is on its path).

The process that runs the tasks imports, when it starts, the libraries the lifecycle's tasks use:
the scheduler with the LocalExecutor (``make up``, ``airflow standalone``), which forks its
workers and they every task process, or a Celery worker (docker-compose.yaml), which forks its
task processes too. Each task then starts with pandas, scikit-learn, xgboost and MLflow already in
memory instead of importing them (bench/scheduler.py measured MLflow 2.7 s, scikit-learn 1.1 s
and xgboost 1.1 s per task process on 2 cores). Only third-party libraries: the project's own
modules are still imported per task, so an edit to them takes effect without a restart.
``ML_PRELOAD_LIBRARIES=false`` turns it off.
Other processes (api-server, dag-processor, a scheduler that does not run tasks, tests) import
nothing.
"""

import atexit
import gc
import os
import sys

__all__: list[str] = []  # airflow.settings copies every public name of this module: none

# At exit, Python's last garbage collection walks every object the process still holds (Airflow,
# SQLAlchemy, pandas, MLflow...): 1.4-1.7 s for an `airflow dags test` of the flagship on 2 cores.
# Freezing them first (registered here, early, so it runs after the handlers registered later)
# leaves that walk out; exit handlers still run (logs flushed, temporary folders removed) and the
# operating system takes back the memory. Task processes are not concerned: Airflow ends them
# with os._exit.
atexit.register(gc.freeze)

_ON = os.environ.get("ML_PRELOAD_LIBRARIES", "true").strip().lower() not in ("0", "false", "no", "off")


def _runs_tasks() -> bool:
    if sys.argv[1:3] == ["celery", "worker"]:
        return True
    if sys.argv[1:2] != ["scheduler"]:
        return False
    from airflow.configuration import conf

    return "LocalExecutor" in conf.get("core", "executor", fallback="LocalExecutor")


if _ON and _runs_tasks():
    # before libgomp loads: an idle OpenMP thread sleeps instead of spinning (ml_lifecycle.settings)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # what a task process imports before the DAG file: the task runner and the DAG bag
    import airflow.dag_processing.dagbag  # noqa: F401
    import airflow.sdk.execution_time.task_runner  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import mlflow  # noqa: F401
    import mlflow.tracking  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import xgboost  # noqa: F401
