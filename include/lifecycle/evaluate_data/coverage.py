"""Completeness and freshness of a partitioned source: the days of the run's window that hold
data, and how far the newest partition lags behind the window's last day.

Both read the collect summary (``window`` and ``partitions``), so they see the partitions as the
ETL found them: a day is *present* when its partition held at least one curated row. A present
day with far fewer rows than the median day (below ``LOW_DAY_SHARE`` of it) is reported, not
failed: a quiet Sunday is data too. A single file has no days to count: both checks say they do
not apply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np

LOW_DAY_SHARE = 0.25
"""A present day holding fewer rows than this share of the median day is listed as low."""


def _days(start: str, end: str) -> list[str]:
    a, b = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days)]


def coverage(collect: Mapping[str, Any]) -> dict[str, Any]:
    """Days present against days expected in the window, and the newest partition's lag.

    ``collect`` is the collect summary; its ``window`` is ``[start, end)`` (dates; ``end`` is the
    data interval end's day). Returns ``{"applicable": False, "why"}`` for a single file, else
    ``{"applicable": True, "window": [start, end), "expected_days", "present_days", "completeness",
    "missing_days", "low_days": [{"ds", "rows"}], "median_rows", "newest", "last_day",
    "staleness_days", "rows_by_day": {ds: rows}}``. ``staleness_days`` is how many days the newest
    present partition lies before the window's last day (0: the last day is there; None: no day is).
    """
    window = collect.get("window") or {}
    start, end = window.get("start"), window.get("end")
    if not start or not end:
        return {"applicable": False, "why": "a single file has no daily partitions"}
    expected = _days(start, end)
    rows = {d: 0 for d in expected}
    for p in collect.get("partitions") or []:
        if p.get("ds") in rows:
            rows[p["ds"]] += int(p.get("rows_curated") or 0)
    present = [d for d in expected if rows[d] > 0]
    median = float(np.median([rows[d] for d in present])) if present else None
    low = [{"ds": d, "rows": rows[d]} for d in present if median and rows[d] < LOW_DAY_SHARE * median]
    last_day = expected[-1] if expected else None
    newest = present[-1] if present else None
    stale = (dt.date.fromisoformat(last_day) - dt.date.fromisoformat(newest)).days if newest and last_day else None
    return {
        "applicable": True,
        "window": [start, end],
        "expected_days": len(expected),
        "present_days": len(present),
        "completeness": len(present) / len(expected) if expected else None,
        "missing_days": [d for d in expected if rows[d] == 0],
        "low_days": low,
        "median_rows": median,
        "newest": newest,
        "last_day": last_day,
        "staleness_days": stale,
        "rows_by_day": rows,
    }
