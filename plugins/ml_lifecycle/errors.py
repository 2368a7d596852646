"""Which failures a retry can fix, and the record a failed task leaves for the run's report.

A lifecycle task fails for one of two kinds of reasons. *Transient* ones (a dropped connection,
a timeout, AWS throttling or a 5xx) may pass on a retry, so they keep the task's retries.
*Deterministic* ones (an invalid spec, a split that cannot be made, an unreadable input file, a
bug) fail the same way on every try: retrying them only delays the failure (a missing data file
took 127 s to fail with two retries), so :func:`fail_fast` turns them into
``AirflowFailException``, which Airflow does not retry.

:class:`FailureRecorder` is every task's ``on_failure_callback``: it writes
``runs/<run>/failures/<task_id>.json`` (task, try, error) so that ``publish_report``, which runs
whatever happened, can say which task failed and why.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk import BaseNotifier

F = TypeVar("F", bound=Callable[..., Any])

# botocore error codes that mean "try again later"
_TRANSIENT_AWS_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for failures a later try may not meet: network, timeouts, AWS throttling and 5xx, a
    SQLite database locked by another writer."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if "database is locked" in str(exc):  # SQLite (the local MLflow store) busy with another writer
        return True
    try:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError
    except ImportError:  # pragma: no cover - botocore comes with the amazon provider
        return False
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return err.get("Code") in _TRANSIENT_AWS_CODES or int(status) >= 500
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


def _passes_through(exc: BaseException) -> bool:
    """Airflow's own control flow (defer, skip, fail, reschedule, ...) and transient errors."""
    from airflow.sdk.exceptions import AirflowException

    return not isinstance(exc, Exception) or isinstance(exc, AirflowException) or is_transient(exc)


def as_final(exc: Exception) -> Exception:
    """The exception to raise for ``exc``: itself when a retry may help, else an
    ``AirflowFailException`` carrying its type and message (no retry)."""
    if _passes_through(exc):
        return exc
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"{type(exc).__name__}: {exc} (deterministic: not retried)")


def fail_fast(fn: F) -> F:
    """Wrap a task callable: deterministic errors fail the task at once, transient ones retry."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            final = as_final(exc)
            if final is exc:
                raise
            raise final from exc

    return wrapper  # type: ignore[return-value]


def ti_key(task_id: str, map_index: int | None = None) -> str:
    """A task instance's name as Airflow's task-state API gives it: ``<task_id>_<map_index>`` if mapped."""
    return task_id if map_index is None or map_index < 0 else f"{task_id}_{map_index}"


def error_text(exc: BaseException | None) -> str:
    """``Type: message`` of the original error (not of the ``AirflowFailException`` around it)."""
    if exc is None:
        return "(no exception in the context)"
    from airflow.sdk.exceptions import AirflowFailException

    if isinstance(exc, AirflowFailException) and exc.__cause__ is not None:
        exc = exc.__cause__
    elif isinstance(exc, AirflowFailException):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class FailureRecorder(BaseNotifier):
    """Write which task failed and why to the run folder (read by ``publish_report``).

    :param problem: the problem (DAG id) whose artifact store holds the run folder.
    """

    def __init__(self, *, problem: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problem = problem

    def notify(self, context: Any) -> None:
        from ml_lifecycle.context import RunContext

        ti = context.get("ti") or context.get("task_instance")
        task_id = getattr(ti, "task_id", "") or "unknown"
        map_index = getattr(ti, "map_index", None)
        try:
            rc = RunContext.from_airflow(self.problem, context)
        except Exception:  # an invalid spec: nothing to write to; publish_report reports the spec error
            return
        exc = context.get("exception")
        record = {
            "task_id": task_id,
            "map_index": map_index,
            "try_number": getattr(ti, "try_number", None),
            "error": error_text(exc),
            "at": dt.datetime.now(dt.UTC).isoformat(),
        }
        rc.store.write_json(rc.layout.failure(ti_key(task_id, map_index)), record)
