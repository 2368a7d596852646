"""A real MLflow tracking server for tests: ``mlflow server`` on 127.0.0.1, a free port, a SQLite
store and an artifact folder in a temporary folder.

It stops by itself: at the end of the fixture (or the ``with`` block), and also when the test
process dies without cleaning up, because the server runs under a small watchdog that kills the
server's process group as soon as its stdin (a pipe held by the test process) is closed. A server
that does not come up fails the test with the last lines of its log.

    from tests.mlflow_server import mlflow_server  # noqa: F401  (the fixture)

    def test_x(mlflow_server):
        mlflow_server.url            # http://127.0.0.1:<port>
        mlflow_server.artifact_root  # file:///.../artifacts (the default artifact root)

Part of the test tooling, not of the product: ``make mlflow`` serves the project's own store.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The watchdog: starts the server in its own process group, waits until stdin closes (the test
# process ended or closed the pipe) or the server exits, then stops the whole group (uvicorn workers
# included): SIGTERM, then SIGKILL after a grace period. Its exit code is the server's.
_WATCHDOG = r"""
import os, signal, subprocess, sys, threading
server = subprocess.Popen(sys.argv[1:], start_new_session=True)
def _stdin_closed():
    try:
        sys.stdin.buffer.read()
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
threading.Thread(target=_stdin_closed, daemon=True).start()
code = server.wait()
try:
    os.killpg(server.pid, signal.SIGKILL)  # workers a dying server may leave
except ProcessLookupError:
    pass
sys.exit(code)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    """One ``mlflow server`` process over ``<folder>/mlflow.db`` and ``<folder>/artifacts``."""

    folder: Path
    port: int = 0
    startup_timeout: float = 120.0
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.folder / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.folder / "artifacts").as_uri()

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def command(self) -> list[str]:
        mlflow = Path(sys.executable).with_name("mlflow")
        return [
            str(mlflow) if mlflow.exists() else "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--default-artifact-root",
            self.artifact_root,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> MlflowServer:
        (self.folder / "artifacts").mkdir(exist_ok=True)
        log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, *self.command()],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env=env,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self.proc.returncode} before it came up on {self.url}; "
                    f"its log ({self.log_path}):\n{self.log_tail()}"
                )
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not answer {self.url}/health within {self.startup_timeout:.0f} s; "
            f"its log ({self.log_path}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Close the watchdog's stdin (it stops the server's group) and wait; kill it if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def running_mlflow_server(folder: Path) -> Generator[MlflowServer]:
    """A started server that is stopped when the block ends, whatever happened in it."""
    server = MlflowServer(folder)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server for the test module (stopped at its end)."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
