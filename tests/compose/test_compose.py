"""docker-compose.yaml and its Dockerfile, checked statically (no Docker engine runs here): the
official Airflow 3 shape, this project's code mounted, the environment every task needs, and
the Airflow/Python versions equal to the pinned requirements."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}


def _pin(package: str) -> str:
    m = re.search(rf"^{re.escape(package)}==([^\s;]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert m, f"{package} is not pinned in requirements.txt"
    return m.group(1)


def _env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service]["environment"].items()}


def test_official_airflow3_shape():
    assert set(AIRFLOW_SERVICES) | {"airflow-init", "postgres", "redis", "minio", "minio-init"} <= set(SERVICES)
    for service, command in AIRFLOW_SERVICES.items():
        assert SERVICES[service]["command"] == command, service
        assert "healthcheck" in SERVICES[service], service
        # every Airflow component waits for a migrated database
        assert SERVICES[service]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert SERVICES[service]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert SERVICES[service]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert SERVICES[service]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert _env("airflow-init")["_AIRFLOW_DB_MIGRATE"] == "true"
    # after the migration, the pool the trials of every DAG share (the DAGs name it: ML_TRIAL_POOL)
    init = SERVICES["airflow-init"]["command"][-1]
    assert init.index("/entrypoint airflow version") < init.index('airflow pools set "$${ML_TRIAL_POOL}" "$$slots"')
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    assert SERVICES["redis"]["image"].startswith("redis:")
    assert "mc mb" in " ".join(SERVICES["minio-init"]["command"])
    assert {"postgres-db-volume", "minio-data", "airflow-logs"} <= set(COMPOSE["volumes"])


def test_ports_bind_loopback_only():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


@pytest.mark.parametrize("service", [*AIRFLOW_SERVICES, "airflow-init"])
def test_project_code_and_data_are_mounted(service):
    mounts = {v.split(":")[0]: v.split(":")[1] for v in SERVICES[service]["volumes"]}
    for folder in ("dags", "plugins", "include", "data"):
        assert mounts[f"./{folder}"] == f"/opt/airflow/{folder}", folder
        assert (ROOT / folder).exists() or folder == "data"


@pytest.mark.parametrize("service", [*AIRFLOW_SERVICES, "airflow-init"])
def test_environment_the_project_needs(service):
    env = _env(service)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:airflow@postgres/")
    assert (
        env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        and "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["PYTHONPATH"] == "/opt/airflow:/opt/airflow/plugins"  # include/ and the ml_lifecycle plugin
    assert env["ML_DATA_ROOT"] == "/opt/airflow"
    assert env["ML_TRIAL_POOL"] == "ml_trials"  # the DAG processor names it, the init creates it
    # secrets are required from .env, never defaulted in the file
    for var, source in {
        "AIRFLOW_VAR_ML_PII_HASH_KEY": "ML_PII_HASH_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
    }.items():
        assert re.fullmatch(rf"\$\{{{source}:\?[^}}]+\}}", env[var]), var
    # the artifact store is the MinIO bucket, reached through an Airflow connection
    root = env["AIRFLOW_VAR_ML_ARTIFACT_ROOT"]
    m = re.fullmatch(r"s3://([a-z0-9_]+)@([a-z0-9-]+)/(\S+)", root)
    assert m, root
    conn = yaml.safe_load(env[f"AIRFLOW_CONN_{m.group(1).upper()}"])
    assert conn["conn_type"] == "aws"
    assert conn["extra"]["endpoint_url"] == "http://minio:9000"
    assert m.group(2) in " ".join(SERVICES["minio-init"]["command"])


def test_plugin_variables_match_the_code():
    """The names in compose are the ones the tasks read."""
    settings = (ROOT / "plugins" / "ml_lifecycle" / "settings.py").read_text()
    assert 'ARTIFACT_ROOT_VARIABLE = "ml_artifact_root"' in settings
    assert 'PII_KEY_VARIABLE = "ml_pii_hash_key"' in settings


def test_image_versions_match_requirements():
    airflow = _pin("apache-airflow")
    common = SERVICES["airflow-scheduler"]
    assert common["build"]["args"]["AIRFLOW_VERSION"] == airflow
    assert common["image"].endswith(f":{airflow}}}") or common["image"].endswith(f":{airflow}")
    assert f"ARG AIRFLOW_VERSION={airflow}" in DOCKERFILE
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in DOCKERFILE
    assert "pip install --no-cache-dir -r /opt/airflow/requirements.txt" in DOCKERFILE
    # the same Python as the lock (make lock resolves for 3.11) and as pyproject
    py = common["build"]["args"]["PYTHON_VERSION"]
    assert f"ARG PYTHON_VERSION={py}" in DOCKERFILE
    assert f"--python-version {py}" in (ROOT / "Makefile").read_text()
    assert f'target-version = "py{py.replace(".", "")}"' in (ROOT / "pyproject.toml").read_text()
    # the metadata database driver is in the pinned requirements, and the providers compose uses
    _pin("psycopg2-binary")
    assert _pin("apache-airflow-task-sdk")


def test_every_airflow_service_shares_one_image():
    images = {SERVICES[s]["image"] for s in [*AIRFLOW_SERVICES, "airflow-init"]}
    assert len(images) == 1


def test_the_secrets_file_is_ignored_by_git():
    assert ".env" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize(
    ("nproc", "env", "slots"), [(2, "", 1), (1, "", 1), (8, "", 4), (8, "3", 3), (2, "64", 2), (4, "0", 1)]
)
def test_the_init_sizes_the_trial_pool_as_the_dags_do(tmp_path, monkeypatch, nproc, env, slots):
    """The init's shell computes the pool's slots as ``settings.trial_slots()`` does (it runs
    before any Python of the project): run its lines with a fake ``nproc`` and ``airflow``."""
    from ml_lifecycle import settings

    script = SERVICES["airflow-init"]["command"][-1]
    lines = script[script.index("cores=") :].replace("$$", "$")
    (tmp_path / "nproc").write_text(f"#!/bin/sh\necho {nproc}\n")
    (tmp_path / "airflow").write_text('#!/bin/sh\necho "$@"\n')
    for f in ("nproc", "airflow"):
        (tmp_path / f).chmod(0o755)
    run_env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "ML_TRIAL_POOL": "ml_trials"} | (
        {"ML_TRIAL_SLOTS": env} if env else {}
    )
    done = subprocess.run(["bash", "-c", lines], env=run_env, capture_output=True, text=True, check=True)
    assert done.stdout.split()[:4] == ["pools", "set", "ml_trials", str(slots)]
    monkeypatch.setattr(settings, "machine_cores", lambda: nproc)
    if env:
        monkeypatch.setenv("ML_TRIAL_SLOTS", env)
    else:
        monkeypatch.delenv("ML_TRIAL_SLOTS", raising=False)
    assert settings.trial_slots() == slots
