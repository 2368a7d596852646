"""Section 1, formulate the problem: check the spec against the data that is actually there and
frame it as a problem card (business goal, ML framing, success criterion, baselines, data checks).

Pure: the inputs are stores (local folders or S3 through the caller's credentials).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from include.lifecycle.spec import Spec
from include.lifecycle.store import Store


class FormulationError(ValueError):
    """The data cannot support the problem as the spec states it (names the check that failed)."""


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "passed": bool(passed), "detail": detail}


def rows_in_partitions(
    src: Store, fmt: str, start: str, end: str, what: str, *, include_end: bool = False
) -> tuple[list[str], int]:
    """The ``ds=`` partitions of ``src`` in ``[start, end)`` (``]`` with ``include_end``) and their
    rows (Parquet: from the footers; CSV: lines after the header), listed as strictly as the ETL:
    a folder that is not a valid partition, or a file of another format, raises naming it."""
    import pyarrow.parquet as pq

    from include.lifecycle.collect import partition_files, scan_partitions

    parts = [ds for ds in scan_partitions(src, what).partitions if start <= ds < end or (include_end and ds == end)]
    rows = 0
    for ds in parts:
        names, _ = partition_files(src, ds, fmt, what)
        for name in names:
            if fmt == "parquet":
                rows += pq.ParquetFile(src.path(f"ds={ds}", name), filesystem=src.fs).metadata.num_rows
            else:
                rows += max(src.read_bytes(f"ds={ds}/{name}").count(b"\n") - 1, 0)
    return parts, rows


def check_partitioned(
    spec: Spec, source: Store, labels: Store | None, *, as_of: dt.datetime, lookback_days: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What a partitioned source holds for the run's window, and the checks on it."""
    from include.lifecycle.collect import window_dates

    start, end = window_dates(as_of, lookback_days)
    parts, rows = rows_in_partitions(source, spec.data.format, start, end, "data.source")
    available: dict[str, Any] = {"window": [start, end], "partitions": len(parts), "rows": rows}
    detail = f"{len(parts)} partitions, {rows} rows in [{start}, {end}) under {source.uri()}"
    checks = [_check("data in window", bool(parts), detail)]
    if labels is not None and spec.data.labels is not None:
        _, n_labels = rows_in_partitions(
            labels, spec.data.labels.format, start, end, "data.labels.source", include_end=True
        )
        rate = n_labels / rows if rows else 0.0
        available.update(label_rows=n_labels, approx_base_rate=rate)
        checks.append(
            _check(
                "target present (label feed)",
                n_labels > 0,
                f"{n_labels} label rows in the window's feed; base rate about {rate:.4%}",
            )
        )
        checks.append(
            _check(
                "enough positives",
                n_labels >= spec.quality.min_positives,
                f"{n_labels} >= {spec.quality.min_positives} (quality.min_positives)",
            )
        )
    return available, checks


def check_single_file(spec: Spec, uri: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What a single-file source holds, and the checks on it; a positive label that matches no value
    of the target raises :class:`FormulationError` with the values that are there."""
    from include.lifecycle.collect import read_single_source
    from include.lifecycle.dataset import describe_values, positive_mask, target_missing

    name, df = read_single_source(uri, spec.data.format)
    target = spec.problem.target
    present = target in df.columns
    available: dict[str, Any] = {"source": name, "rows": len(df)}
    unlabelled = int(target_missing(df[target]).sum()) if present and spec.data.labels is None else 0
    note = f"; {unlabelled} rows without a value (collect quarantines them: target_missing)" if unlabelled else ""
    checks = [
        _check("target present", present, f"column {target!r} {'found' if present else 'missing'} in {name}{note}")
    ]
    if present and spec.is_binary:
        label = spec.problem.positive_label
        y = positive_mask(df[target], label)[~target_missing(df[target])]
        available.update(positives=int(y.sum()), approx_base_rate=float(y.mean()) if len(y) else 0.0)
        if not y.any():  # the label is a typo or of another kind than the data: say what is there
            raise FormulationError(
                f"problem.positive_label {label!r} matches no value of column {target!r} in {name}; "
                f"values seen: {describe_values(df[target])}"
            )
        checks.append(
            _check(
                "enough positives",
                int(y.sum()) >= spec.quality.min_positives,
                f"{int(y.sum())} positives (label {label!r}), base rate {y.mean():.2%}",
            )
        )
    return available, checks


def baselines(spec: Spec) -> list[dict[str, str]]:
    """What a model must beat, named for what they are."""
    out = [
        {
            "name": "flag nothing" if spec.is_binary else "predict the training mean",
            "how": "no model: nothing is flagged" if spec.is_binary else "constant prediction",
        }
    ]
    if spec.is_binary and spec.data.amount_column:
        out.append({"name": "rule of thumb", "how": f"flag the largest {spec.data.amount_column} values"})
    return out


def problem_card(spec: Spec, *, available: dict[str, Any], checks: list[dict[str, Any]], **run: Any) -> dict[str, Any]:
    """The problem card: the business goal framed as an ML problem with its success criterion, the
    data found and the checks; ``run`` adds the run's facts (as_of, run_id, backend, max_rounds)."""
    goal = spec.goal
    return {
        "problem": spec.name,
        "title": spec.title,
        "business_goal": goal.statement,
        "how_used": goal.how_used,
        "assumptions": goal.assumptions,
        "framing": {
            "machine_learning": True,
            "supervised": True,
            "type": spec.problem.type,
            "target": spec.problem.target,
            "positive_label": spec.problem.positive_label if spec.is_binary else None,
        },
        "success_criterion": {
            "metric": goal.metric,
            "target": goal.target,
            "max_alert_rate": goal.max_alert_rate,
            "higher_is_better": goal.higher_is_better,
            "champion_margin": goal.champion_margin,
        },
        "baselines": baselines(spec),
        "data": available,
        "checks": checks,
        "spec_digest": spec.digest(),
        **run,
    }


def failed_checks(checks: list[dict[str, Any]]) -> str | None:
    """None when every check passed, else why the data cannot support the problem."""
    failed = [c for c in checks if not c["passed"]]
    if not failed:
        return None
    return "the data cannot support this problem: " + "; ".join(f"{c['check']}: {c['detail']}" for c in failed)
