"""The label-delay view of a label feed: how long labels take to arrive after the event they
label, and how many of the data set's labels had arrived by the run's data interval end.

A run sees only the labels that arrived before its interval end, so a row of age ``a`` days
shows its label only when the delay is at most ``a``: the delays a run observes are right
truncated, and the newest days look cleaner than they are. The arrival distribution ``F`` (the
share of a row's eventual label that arrives within ``t`` days) is estimated with the reverse-time
hazard estimator for right-truncated data (Lagakos, Barraj and De Gruttola, Biometrika 1988), on
whole days (``t``: the delay floored to days): ``F(t - 1) = F(t) * (1 - n_t / R_t)`` from ``F(K) = 1`` at the longest delay seen,
where ``n_t`` labels arrived after ``t`` days and ``R_t`` labels of rows at least ``t`` days old
arrived within ``t`` days. Each label seen on a row of age ``a`` then stands for ``1 / F(a)``
eventual labels, so the share *matured* at the interval end is ``labels seen / sum(1 / F(a))``.
It assumes no label takes longer than the longest delay seen in the window.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.evaluate_data.columns import _clean
from include.lifecycle.spec import Spec
from include.lifecycle.store import Store

_DAY = pd.Timedelta(days=1)


def _utc(ts: pd.Series | pd.Timestamp | dt.datetime) -> Any:
    """Times as UTC (naive ones are taken as UTC), as the collect step does."""
    if isinstance(ts, pd.Series):
        if not pd.api.types.is_datetime64_any_dtype(ts):
            ts = pd.to_datetime(ts, utc=True, errors="coerce", format="mixed")
        return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def arrival_curve(delay_days: np.ndarray, age_days: np.ndarray) -> np.ndarray:
    """``F[t]`` for whole days ``t = 0..K``: the estimated share of labels whose delay is under
    ``t + 1`` days, from the delays seen and the ages of their rows (both in whole days, floored;
    delay <= age)."""
    d = np.asarray(delay_days, dtype=np.int64)
    a = np.asarray(age_days, dtype=np.int64)
    if d.size == 0:
        return np.zeros(0)
    k = int(d.max())
    n = np.bincount(d, minlength=k + 1)
    f = np.ones(k + 1)
    for t in range(k, 0, -1):
        at_risk = int(np.count_nonzero((d <= t) & (a >= t)))
        f[t - 1] = f[t] * (1.0 - n[t] / at_risk) if at_risk else f[t]
    return f


def label_delay(
    event_time: pd.Series,
    arrived_at: pd.Series,
    *,
    as_of: dt.datetime,
    maturity_days: int,
) -> dict[str, Any]:
    """The delay of each label (``arrived_at - event_time``, days) for the data set's rows.

    ``event_time`` and ``arrived_at`` are aligned per row of the data set; ``arrived_at`` is
    missing where no label arrived before ``as_of``. Returns ``{"labels", "rows", "delay_days":
    {mean, p50, p90, p99, max}, "maturity_days", "within_maturity" (estimated share of labels that
    arrive within maturity_days), "matured_share" (estimated share of the rows' eventual labels
    that had arrived at the interval end), "histogram": [[day, labels]], "by_day": [{day, labels,
    arrived_share}]}`` (``by_day``: per event day, the labels seen and ``F(age)``).
    """
    end = _utc(as_of)
    ts = _utc(event_time.reset_index(drop=True))
    arrived = _utc(arrived_at.reset_index(drop=True))
    seen = (arrived.notna() & ts.notna()).to_numpy()
    delay = ((arrived[seen] - ts[seen]) / _DAY).to_numpy(dtype="float64").clip(min=0.0)
    age = ((end - ts[seen]) / _DAY).to_numpy(dtype="float64").clip(min=0.0)
    out: dict[str, Any] = {
        "labels": int(seen.sum()),
        "rows": int(ts.notna().sum()),
        "maturity_days": maturity_days,
        "delay_days": None,
        "within_maturity": None,
        "matured_share": None,
        "histogram": [],
        "by_day": [],
    }
    if not seen.any():
        return out
    d_days, a_days = np.floor(delay).astype(np.int64), np.floor(age).astype(np.int64)
    f = arrival_curve(d_days, a_days)
    f_at = f[np.minimum(a_days, f.size - 1)]
    weight = np.divide(1.0, f_at, out=np.full(f_at.size, np.nan), where=f_at > 0)
    p50, p90, p99 = np.quantile(delay, [0.5, 0.9, 0.99])
    out["delay_days"] = {
        "mean": float(delay.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(delay.max()),
    }
    # F[t] is the share arriving before t + 1 days: within maturity_days is F[maturity_days - 1]
    out["within_maturity"] = float(f[min(maturity_days - 1, f.size - 1)]) if maturity_days > 0 else 0.0
    out["matured_share"] = float(np.count_nonzero(np.isfinite(weight)) / np.nansum(weight))
    counts = np.bincount(d_days)
    out["histogram"] = [[int(t), int(c)] for t, c in enumerate(counts)]
    day = ts.dt.floor("D")
    labelled = pd.Series(seen, index=day.index).groupby(day, dropna=True).sum()
    for when, n in labelled.items():
        age_day = max(int(np.floor((end - when) / _DAY)) - 1, 0)  # the day's newest rows are this old
        out["by_day"].append(
            {"day": when.strftime("%Y-%m-%d"), "labels": int(n), "arrived_share": float(f[min(age_day, f.size - 1)])}
        )
    return _clean(out)


def label_arrivals(
    spec: Spec, labels: Store, df: pd.DataFrame, *, start: str, as_of: dt.datetime, pii_key: bytes | None
) -> pd.Series:
    """When each positive row of the data set got its label (NaT: a negative row).

    The feed is read and validated as the collect step read it (:func:`collect.collect_labels`:
    the partitions from the window's ``start`` to the interval end's day, labels arrived before
    ``as_of``, the key tokenised when it is PII, the earliest label of a key kept); only the rows
    the collection labelled positive take an arrival time."""
    from include.lifecycle.collect import collect_labels
    from include.lifecycle.dataset import positive_mask

    lab = spec.data.labels
    key = spec.data.key
    assert lab is not None and key is not None
    end = (pd.Timestamp(as_of).date() + dt.timedelta(days=1)).isoformat()
    usable = collect_labels(spec, labels, start, end, as_of, pii_key=pii_key).usable
    arrived = pd.Series(usable[lab.arrived_at].to_numpy(), index=usable[lab.key].astype(str).to_numpy())
    out = pd.Series(df[key].astype(str).map(arrived).to_numpy(), index=df.index)
    positive = positive_mask(df[spec.problem.target], spec.problem.positive_label)
    return out.where(np.asarray(positive, dtype=bool))
