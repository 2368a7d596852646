"""Test isolation: every test session gets its own AIRFLOW_HOME, sqlite database, artifact
root and data root under a temporary folder, set *before* anything imports airflow.

Unit tests (tests/unit) never import airflow. DAG tests parse dags/ with a DagBag; integration
tests (marked ``integration``) migrate the session's database once and run whole DAGs with
``dag.test()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION_TMP = Path(tempfile.mkdtemp(prefix="ml-lifecycle-tests-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(SESSION_TMP / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{SESSION_TMP / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "ML_ARTIFACT_ROOT": str(SESSION_TMP / "artifacts"),
        "ML_DATA_ROOT": str(SESSION_TMP / "data"),
        # a throwaway key: the real one lives in an Airflow variable / secrets backend, never in git
        "AIRFLOW_VAR_ML_PII_HASH_KEY": "test-only-pii-key-not-a-secret",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
)
os.environ.pop("ML_PROBLEMS_DIR", None)
(SESSION_TMP / "airflow").mkdir(parents=True, exist_ok=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("ML_KEEP_TEST_TMP"):
        print(f"\nkept test files in {SESSION_TMP}")
        return
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return SESSION_TMP


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """`airflow db migrate` on the session's sqlite database (once per session)."""
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return SESSION_TMP / "airflow" / "airflow.db"
