"""plugins/airflow_local_settings.py: the process that forks the task processes (the scheduler with
the LocalExecutor, a Celery worker) imports the tasks' libraries when Airflow starts in it; every
other Airflow process imports none of them, and ``ML_PRELOAD_LIBRARIES=false`` turns it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from include.lifecycle.spec import PROJECT_ROOT

PROBE = (
    "import json, os, sys; import airflow.settings; "
    "print(json.dumps({'xgboost': 'xgboost' in sys.modules, 'mlflow': 'mlflow' in sys.modules, "
    "'omp': os.environ.get('OMP_WAIT_POLICY')}))"
)


def _loaded(argv: list[str], **env: str) -> dict:
    """Start Airflow in a fresh interpreter whose command line is ``airflow <argv>``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "ML_PRELOAD"))}
    base["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PROJECT_ROOT / "plugins")
    proc = subprocess.run(
        [sys.executable, "-", *argv],
        input=PROBE,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "env", "preloads"),
    [
        (["scheduler"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}, True),
        (["celery", "worker"], {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}, True),
        (["scheduler"], {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}, False),  # its workers run the tasks
        (["api-server"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}, False),
        (["scheduler"], {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "ML_PRELOAD_LIBRARIES": "false"}, False),
    ],
)
def test_only_the_process_that_forks_tasks_preloads(argv, env, preloads):
    got = _loaded(argv, **env)
    assert got["xgboost"] is preloads and got["mlflow"] is preloads, got
    # the preload sets OpenMP's passive wait before libgomp loads, as a task process does itself
    assert got["omp"] == ("PASSIVE" if preloads else None), got


def test_an_airflow_process_freezes_its_objects_before_the_interpreters_last_collection():
    """At exit every object of an Airflow process is frozen (``gc.freeze``) before Python's final
    garbage collection, which then has nothing to walk: 1.4-1.7 s less per `airflow dags test`.
    The probe's own exit handler is registered before Airflow's, so it runs after it and sees the
    frozen objects; exit handlers registered later (Airflow's, logging's) still run."""
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count(), flush=True))\n"
        "import airflow.settings\n"
        "print('frozen before exit:', gc.get_freeze_count(), flush=True)\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins")}
    proc = subprocess.run(
        [sys.executable, "-", "dags", "list"], input=probe, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = {line.split(":")[0]: int(line.split(":")[1]) for line in proc.stdout.splitlines() if "frozen" in line}
    assert counts["frozen before exit"] == 0, proc.stdout
    assert counts["frozen at exit"] > 100_000, proc.stdout  # Airflow, SQLAlchemy, pydantic... all frozen
