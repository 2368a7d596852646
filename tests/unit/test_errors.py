"""plugins/ml_lifecycle/errors.py: which failures a retry may cure (retried with back-off) and
which fail the task at once, saying so."""

from __future__ import annotations

import sqlite3

import pytest
from botocore.exceptions import ClientError

from ml_lifecycle.errors import as_final, is_transient


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "CreateJob")


def _chained(outer: Exception, cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as inner:
            raise outer from inner
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("reset by peer"),
        TimeoutError("read timed out"),
        _client_error("ThrottlingException", 400),
        _client_error("InternalFailure", 500),
        sqlite3.OperationalError("database is locked"),
        # MLflow wraps the SQLite error of a store another run is writing to
        _chained(RuntimeError("(sqlite3.OperationalError) database is locked"), sqlite3.OperationalError("x")),
        _chained(ValueError("while talking to S3"), ConnectionError("reset")),
    ],
)
def test_failures_a_retry_may_cure_pass_through_for_airflow_to_retry(exc):
    assert is_transient(exc)
    assert as_final(exc) is exc


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("column 'amount' breaks rule min:0"),
        KeyError("amount"),
        _client_error("ValidationException", 400),
        sqlite3.OperationalError("no such table: experiments"),
    ],
)
def test_deterministic_failures_fail_at_once_saying_so(exc):
    from airflow.sdk.exceptions import AirflowFailException

    assert not is_transient(exc)
    final = as_final(exc)
    assert isinstance(final, AirflowFailException)
    assert str(final).startswith(type(exc).__name__) and str(final).endswith("(deterministic: not retried)")
