"""A real Airflow on this machine, on loopback: a throwaway PostgreSQL cluster, the scheduler
(LocalExecutor), dag-processor and api-server as processes of their own, and a client of the
public REST API. Used by the real-scheduler benchmark (bench/scheduler.py) and the real-Airflow
test (tests/ops/test_real_airflow.py); never imported by a DAG or a task.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the unprivileged 'nobody' then."""
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_cluster(prefix: str = "ml-pg-") -> Generator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 in a temp folder (user ``airflow``, trust auth);
    yields its server URL without a database (``create_database`` adds one); stopped and removed on
    the way out."""
    pg_bin = Path(shutil.which("pg_ctl") or "/usr/local/bin/pg_ctl").parent
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(base, "nobody", "nogroup")
    data, port = base / "data", free_port()
    initdb = [str(pg_bin / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8"]
    subprocess.run(_as_postgres_user(initdb), check=True, capture_output=True, timeout=120)
    ctl = [str(pg_bin / "pg_ctl"), "-D", str(data)]
    opts = f"-k {base} -h 127.0.0.1 -p {port}"
    subprocess.run(
        _as_postgres_user([*ctl, "-o", opts, "-l", str(base / "pg.log"), "-w", "start"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres_user([*ctl, "-m", "immediate", "-w", "stop"]), capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    """``CREATE DATABASE name`` on a ``postgres_cluster`` server; its SQLAlchemy URL."""
    import psycopg2

    host, port = server.rsplit("@", 1)[1].split(":")
    conn = psycopg2.connect(host=host, port=int(port), user="airflow", dbname="postgres")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"{server}/{name}"


class Api:
    """The public REST API with a token from the simple auth manager (user ``admin``)."""

    def __init__(self, base: str, password: str, timeout: float = 60) -> None:
        self.base, self.password, self.timeout = base, password, timeout
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body, or its text when it is not JSON)."""
        req = urllib.request.Request(self.base + path, method=method)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.login()}")
        try:
            with urllib.request.urlopen(req, data=data, timeout=self.timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def login(self) -> str:
        if self.token is None:
            status, body = self.call(
                "POST", "/auth/token", {"username": "admin", "password": self.password}, auth=False
            )
            if status not in (200, 201):
                raise RuntimeError(f"login failed: {status} {body}")
            self.token = body["access_token"]
        return self.token

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.call("POST", path, body)

    def patch(self, path: str, body: Any) -> tuple[int, Any]:
        return self.call("PATCH", path, body)


def wait_for(
    what: str,
    probe: Callable[[], Any],
    procs: dict[str, subprocess.Popen] | None = None,
    *,
    every: float = 1.0,
    timeout: float = 1800,
) -> Any:
    """``probe()``'s first truthy result; fails when one of ``procs`` exits or after ``timeout``
    seconds (a safety bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        for name, proc in (procs or {}).items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


def stack_env(home: Path, db_url: str, port: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the settings of a loopback stack on
    ``port``: LocalExecutor, the metadata database ``db_url``, the simple auth manager's ``admin``
    (its password in ``home/passwords.json``, written by ``airflow_stack``), fresh secrets, the
    log servers on free loopback ports and this virtualenv's ``airflow`` first on PATH."""
    env = dict(os.environ if base is None else base)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db_url,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(32),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def migrate(env: dict[str, str], timeout: float = 600) -> None:
    """``airflow db migrate`` of the stack's database; its output's tail in the error."""
    done = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


@contextmanager
def airflow_stack(env: dict[str, str]) -> Generator[tuple[Api, dict[str, subprocess.Popen]]]:
    """The scheduler, dag-processor and api-server of ``env`` (``stack_env``; the database
    migrated; the trials' pool created when ``env`` names one in ``ML_TRIAL_POOL``), each in a
    session of its own with its log in ``$AIRFLOW_HOME/<name>.log``; yields the REST client
    (logged in as ``admin`` with a fresh password) once the api-server answers, and the processes;
    stops them (SIGTERM to each process group, then SIGKILL) on the way out."""
    home = Path(env["AIRFLOW_HOME"])
    if env.get("ML_TRIAL_POOL"):  # the trials' shared pool, as make up creates it
        done = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "ml_lifecycle.devtools", "trial-pool"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"creating the trial pool failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    password = secrets.token_urlsafe(12)
    Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(json.dumps({"admin": password}))
    port = env["AIRFLOW__API__PORT"]
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        for name, args in {
            # --skip-serve-logs: no log server on all interfaces; the api-server reads the local files
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1"],
        }.items():
            logs[name] = open(home / f"{name}.log", "w")  # noqa: SIM115 - closed in the finally below
            procs[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *args],
                env=env,
                stdout=logs[name],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        api = Api(f"http://127.0.0.1:{port}", password)

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{api.base}/api/v2/monitor/health", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("the api-server", up, procs, every=0.5, timeout=600)
        yield api, procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for f in logs.values():
            f.close()
