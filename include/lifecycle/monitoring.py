"""Production monitoring: the champion's realised business metric on scored rows whose labels have
matured, its drift, and whether the evidence asks for retraining.

The scored rows are what batch scoring (``scores/ds=<day>/``) and the endpoint's capture
(``captures/ds=<day>/``) wrote: the row key, the time, the model's inputs (when captured), the
score, the decision at the champion's threshold and the model version. :func:`scored_rows` keeps
one row per key: a row the endpoint answered wins over batch scoring's score of the same row
(the endpoint's decision is the one the business acted on when the transaction happened; batch
scoring re-scores after the fact), and of several endpoint answers the latest (``captured_at``:
a client's retry got the last answer). A scored row is
*matured* when its time lies at least ``data.labels.maturity_days`` before the monitor's instant
(most labels that will ever come have come); its label is positive when the label feed holds its
key with an arrival before that instant, negative otherwise - the same rule training uses
(``collect.join_labels``). Rows younger than the maturity are not judged: a missing chargeback
there means "not yet", not "no fraud".

The realised goal metric is the spec's goal metric as the business runs it (``*_at_alert_rate``
metrics: the share caught by the decisions actually taken, see ``assessment.goal_value``), per day
and over the rolling window of the newest matured ``monitoring.window_days`` days, each with a
seeded bootstrap interval. A day or window with fewer than ``monitoring.min_positives`` positives
(binary) cannot tell and says so. The champion *decays* when the window's interval lies wholly on
the wrong side of the goal (below it with confidence, not by a noisy day).

Nothing here imports airflow.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.evaluate_data.labels import _utc
from include.lifecycle.evaluate_model import MetricUndefined
from include.lifecycle.spec import Spec
from include.lifecycle.uncertainty import interval, resamples

THRESHOLD_FREE = {"auprc", "roc_auc", "rmse", "mae", "r2"}
"""Goal metrics computed on the scores; the others on the decisions actually taken."""

LABEL = "_label"
DAY = "_day"
LOW, HIGH = "low", "high"


SOURCE = "_source"
BATCH, ENDPOINT = "batch", "endpoint"


def scored_rows(
    batch: pd.DataFrame | None, endpoint: pd.DataFrame | None, spec: Spec
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Batch scores and endpoint captures as one frame with one row per key (column ``_source``
    says which; see the module's doc for which wins) and the counts: ``{"rows_batch",
    "rows_endpoint", "duplicates_dropped", "rows_without_key"}``. Rows without a key cannot be
    joined to a label and are left out (counted)."""
    from include.lifecycle.capture import CAPTURED_AT

    key = spec.data.key
    frames = [f.assign(**{SOURCE: name}) for f, name in ((batch, BATCH), (endpoint, ENDPOINT)) if f is not None]
    if not frames:
        raise ValueError("no scored rows: neither batch scores nor endpoint captures")
    both = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    counts = {
        "rows_batch": 0 if batch is None else len(batch),
        "rows_endpoint": 0 if endpoint is None else len(endpoint),
    }
    keyless = both[key].isna().to_numpy() if key in both.columns else np.ones(len(both), dtype=bool)
    both = both.loc[~keyless]
    # the winner last: batch before endpoint, endpoint answers by the time they were given
    order = pd.DataFrame(
        {
            "rank": (both[SOURCE] == ENDPOINT).astype(int).to_numpy(),
            "at": _utc_naive(both[CAPTURED_AT]).to_numpy() if CAPTURED_AT in both.columns else pd.NaT,
        }
    )
    # as integers, NaT (a batch row: no answer time) is the smallest and sorts first
    at = order["at"].to_numpy(dtype="datetime64[us]").astype("int64")
    sorted_rows = both.iloc[np.lexsort((at, order["rank"].to_numpy()))]
    out = sorted_rows.drop_duplicates(key, keep="last")
    if spec.data.time_column in out.columns:
        out = out.sort_values([spec.data.time_column, key], kind="stable")
    counts |= {"duplicates_dropped": len(both) - len(out), "rows_without_key": int(keyless.sum())}
    return out.reset_index(drop=True), counts


def utc(ts: pd.Series) -> pd.Series:
    """Times as UTC-aware (naive ones are taken as UTC), by the collect step's rule."""
    return _utc(ts)


def _utc_naive(ts: pd.Series) -> pd.Series:
    """UTC wall times without the zone (naive ones are taken as UTC), by the collect step's rule."""
    return _utc(ts).dt.tz_localize(None)


def matured_rows(
    scores: pd.DataFrame, labels: pd.DataFrame | None, spec: Spec, *, as_of: dt.datetime
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(the scored rows old enough to judge, with their label in column _label and their day in _day;
    the counts)``. ``scores`` holds the key, the time column, ``score``, ``decision`` and
    ``model_version``; ``labels`` the label feed's key and arrival columns (or, for a problem whose
    data carries its own target, None: ``scores`` must then hold the target column)."""
    d = spec.data
    if d.time_column is None or d.time_column not in scores.columns:
        raise ValueError(f"monitoring needs the scored rows' time column {d.time_column!r}")
    maturity = d.labels.maturity_days if d.labels else 0
    instant = _utc(as_of).tz_localize(None)
    times = _utc_naive(scores[d.time_column])
    mature = (times <= instant - pd.Timedelta(days=maturity)).to_numpy(dtype=bool)
    out = scores.loc[mature].copy()
    if d.labels is not None:
        lab = d.labels
        if lab.key not in labels.columns or lab.arrived_at not in labels.columns:  # type: ignore[union-attr]
            raise ValueError(f"the label feed needs the columns {lab.key!r} and {lab.arrived_at!r}")
        arrived = _utc_naive(labels[lab.arrived_at]) < instant  # type: ignore[index]
        known = labels.loc[arrived.to_numpy(dtype=bool), lab.key].dropna().astype(str)  # type: ignore[union-attr]
        out[LABEL] = out[d.key].astype(str).isin(set(known)).astype(int).to_numpy()
        labels_seen = int(arrived.sum())
    else:
        target = spec.problem.target
        if target not in out.columns:
            raise ValueError(f"the scored rows hold no target column {target!r} and the spec has no label feed")
        out[LABEL] = out[target]
        labels_seen = int(out[target].notna().sum())
    out[DAY] = _utc_naive(out[d.time_column]).dt.floor("D")
    counts = {
        "rows_scored": len(scores),
        "rows_matured": len(out),
        "rows_too_young": int((~mature).sum()),
        "maturity_days": maturity,
        "labels_arrived": labels_seen,
        "positives": int(out[LABEL].sum()) if spec.is_binary else None,
    }
    return out.reset_index(drop=True), counts


def _value(spec: Spec, y: np.ndarray, scores: np.ndarray, flags: np.ndarray, amount: np.ndarray | None) -> float:
    from include.lifecycle.assessment import goal_value

    if spec.goal.metric in THRESHOLD_FREE:
        return goal_value(spec, y, scores, amount=amount, threshold=None)
    # the decisions actually taken (score >= the champion's threshold when it scored the row)
    return goal_value(spec, y, flags.astype(float), amount=amount, threshold=0.5)


def realised(spec: Spec, rows: pd.DataFrame, *, amount: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """The goal metric on ``rows`` (from :func:`matured_rows`) with its bootstrap interval, the alert
    rate, and whether it can tell: ``{"rows", "positives", "value", "low", "high", "alert_rate",
    "why"}`` (value None and ``why`` when it cannot)."""
    mon = spec.monitoring
    y = rows[LABEL].to_numpy(dtype=float if not spec.is_binary else int)
    scores = rows["score"].to_numpy(dtype=float)
    flags = rows["decision"].fillna(0).to_numpy(dtype=float) if "decision" in rows.columns else np.zeros(len(rows))
    out: dict[str, Any] = {
        "rows": len(rows),
        "positives": int(y.sum()) if spec.is_binary else None,
        "value": None,
        "low": None,
        "high": None,
        "alert_rate": float(flags.mean()) if len(rows) and spec.is_binary else None,
        "why": None,
    }
    if spec.is_binary and out["positives"] < mon.min_positives:
        out["why"] = f"{out['positives']} positives (< monitoring.min_positives {mon.min_positives}): cannot tell"
        return out
    if not spec.is_binary and len(rows) < max(2, mon.min_positives):
        out["why"] = f"{len(rows)} rows (< {max(2, mon.min_positives)}): cannot tell"
        return out

    def metric(r: np.ndarray) -> float:
        return _value(spec, y[r], scores[r], flags[r], None if amount is None else amount[r])

    try:
        value = metric(np.arange(len(rows)))
    except MetricUndefined as exc:
        out["why"] = str(exc)
        return out
    sets = resamples(
        y if spec.is_binary else None, len(rows), count=mon.bootstrap_resamples, seed=seed, stratify=spec.is_binary
    )
    ci = interval(metric, sets, value=value, level=spec.goal.confidence)
    out.update(value=value, low=ci["low"], high=ci["high"], level=ci["level"], resamples=ci["resamples"])
    return out


def series(spec: Spec, rows: pd.DataFrame, *, amount_column: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The realised goal metric per matured day and over the rolling window of the newest
    ``monitoring.window_days`` matured days (only the rows of the newest model version in that
    window: the champion being judged)."""
    days = sorted(rows[DAY].dropna().unique())
    amount = rows[amount_column].to_numpy(dtype=float) if amount_column and amount_column in rows.columns else None
    per_day = []
    for i, day in enumerate(days):
        mask = (rows[DAY] == day).to_numpy()
        r = realised(spec, rows.loc[mask], amount=None if amount is None else amount[mask], seed=seed + i)
        versions = sorted({int(v) for v in rows.loc[mask, "model_version"].dropna()}) if "model_version" in rows else []
        per_day.append({"day": pd.Timestamp(day).date().isoformat(), "model_versions": versions, **r})
    window: dict[str, Any] = {"days": 0, "start": None, "end": None, "model_version": None}
    if days:
        newest = days[-spec.monitoring.window_days :]
        mask = rows[DAY].isin(newest).to_numpy().copy()
        version = None
        if "model_version" in rows.columns and rows.loc[mask, "model_version"].notna().any():
            scored = rows.loc[mask & rows["model_version"].notna().to_numpy()]
            newest_row = _utc_naive(scored[spec.data.time_column]).to_numpy().argmax()
            version = int(scored["model_version"].iloc[newest_row])  # the version that scored last
            mask &= (rows["model_version"] == version).to_numpy()
        window = {
            "days": len(newest),
            "start": pd.Timestamp(newest[0]).date().isoformat(),
            "end": pd.Timestamp(newest[-1]).date().isoformat(),
            "model_version": version,
            **realised(spec, rows.loc[mask], amount=None if amount is None else amount[mask], seed=seed),
        }
    return {"metric": spec.goal.metric, "target": spec.goal.target, "per_day": per_day, "window": window}


def verdict(spec: Spec, realised_series: Mapping[str, Any], drift: Mapping[str, Any] | None) -> dict[str, Any]:
    """Whether the evidence asks for retraining, and why.

    * decay: the window's interval lies wholly on the wrong side of the goal (its upper bound
      below the target for a higher-is-better metric), a sustained shortfall and not one noisy day;
    * drift: a served feature's PSI against the champion's training rows above
      ``monitoring.max_drift_psi`` (and above its own noise, see ``stability.drifted``)."""
    from include.lifecycle.evaluate_data.stability import drifted

    mon, goal = spec.monitoring, spec.goal
    w = realised_series.get("window") or {}
    reasons, evidence = [], {"metric": goal.metric, "target": goal.target}
    decayed = False
    if w.get("value") is not None:
        bound = w["high"] if goal.higher_is_better else w["low"]
        decayed = not goal.met_by(bound)
        evidence["window"] = {
            k: w.get(k) for k in ("start", "end", "days", "model_version", "rows", "positives", "value", "low", "high")
        }
        if decayed:
            op = "<" if goal.higher_is_better else ">"
            reasons.append(
                f"decay: realised {goal.metric} {w['value']:.4f} [{w['low']:.4f}, {w['high']:.4f}] over "
                f"{w['start']}..{w['end']} ({w['rows']} matured rows) is {op} the goal {goal.target} with "
                f"{goal.confidence:.0%} confidence"
            )
    limit = mon.max_drift_psi if mon.max_drift_psi is not None else spec.quality.max_drift_psi
    over: dict[str, float] = {}
    if drift and drift.get("columns"):
        over = drifted(drift, limit)
        if over:
            listed = ", ".join(f"{c} {v:.3f}" for c, v in sorted(over.items(), key=lambda kv: -kv[1])[:6])
            reasons.append(f"drift: PSI above {limit} against the champion's training rows: {listed}")
        evidence["drifted"] = over
    if w.get("value") is None:
        reasons.append(f"the goal cannot be judged yet: {w.get('why') or 'no matured scored rows'}")
    elif not decayed:
        state = "meets the goal" if goal.met_by(w["value"]) else "misses the goal, but not with confidence (watching)"
        reasons.append(
            f"realised {goal.metric} {w['value']:.4f} [{w['low']:.4f}, {w['high']:.4f}] over {w['start']}..{w['end']} "
            f"{state}"
        )
    if drift is not None and not over:
        reasons.append(
            f"no served feature drifted past PSI {limit}" if drift.get("columns") else f"drift: {drift.get('why')}"
        )
    retrain = (decayed and mon.retrain_on_decay) or (bool(over) and mon.retrain_on_drift)
    return {
        "retrain": bool(retrain),
        "decayed": bool(decayed),
        "drifted": sorted(over),
        "reasons": reasons,
        "evidence": evidence,
    }


# --- the report --------------------------------------------------------------------------------
def series_plot(realised_series: Mapping[str, Any]) -> bytes:
    """The realised goal metric per day with its interval, the goal line and the window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d for d in realised_series["per_day"] if d["value"] is not None]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    if days:
        x = pd.to_datetime([d["day"] for d in days])
        v = np.array([d["value"] for d in days])
        lo = np.array([d["low"] for d in days])
        hi = np.array([d["high"] for d in days])
        ax.fill_between(x, lo, hi, alpha=0.2, label="95% interval (day)")
        ax.plot(x, v, marker="o", ms=3, label=f"realised {realised_series['metric']}")
    ax.axhline(realised_series["target"], color="crimson", ls="--", label=f"goal {realised_series['target']}")
    w = realised_series.get("window") or {}
    if w.get("value") is not None:
        ax.axvspan(pd.Timestamp(w["start"]), pd.Timestamp(w["end"]) + pd.Timedelta(days=1), color="grey", alpha=0.1)
        ax.hlines(
            w["value"],
            pd.Timestamp(w["start"]),
            pd.Timestamp(w["end"]) + pd.Timedelta(days=1),
            colors="black",
            label="window",
        )
    ax.set_title("Realised goal metric on matured labels")
    ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _sources(counts: Mapping[str, Any]) -> str:
    """Where the scored rows and the drift's inputs came from (batch scores, endpoint captures)."""
    if "rows_endpoint" not in counts:
        return ""
    text = (
        f"scored rows: {counts['rows_batch']:,} by batch scoring, {counts['rows_endpoint']:,} captured by the "
        f"endpoint; {counts['duplicates_dropped']:,} scored twice (the endpoint's answer kept)"
    )
    if counts.get("rows_without_key"):
        text += f", {counts['rows_without_key']:,} without a key left out"
    drift = counts.get("drift_inputs") or {}
    text += f". Drift inputs: {drift.get('captured_rows', 0):,} captured rows"
    if drift.get("landing_days"):
        text += " and the landing data of " + ", ".join(drift["landing_days"])
    return f"<p>{html.escape(text)}.</p>"


def render_report(problem: str, summary: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """A self-contained HTML monitoring report."""
    import base64

    esc = html.escape
    v = summary["verdict"]

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    rows = "".join(
        f"<tr><td>{esc(d['day'])}</td><td>{d['rows']}</td><td>{'' if d['positives'] is None else d['positives']}</td>"
        f"<td>{num(d['value'])}</td><td>{'' if d['low'] is None else f'[{num(d[LOW])}, {num(d[HIGH])}]'}</td>"
        f"<td>{esc(','.join(map(str, d['model_versions'])))}</td><td>{esc(d['why'] or '')}</td></tr>"
        for d in summary["realised"]["per_day"]
    )
    imgs = "".join(
        f"<h3>{esc(name)}</h3><img src='data:image/png;base64,{base64.b64encode(data).decode()}'/>"
        for name, data in images.items()
    )
    reasons = "".join(f"<li>{esc(r)}</li>" for r in v["reasons"])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(problem)} monitoring {esc(summary['as_of'][:10])}</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        "</style></head><body>"
        f"<h1>{esc(problem)}: champion monitoring, {esc(summary['as_of'][:10])}</h1>"
        f"<p><b>{'RETRAINING REQUESTED' if v['retrain'] else 'no retraining requested'}</b></p><ul>{reasons}</ul>"
        f"<p>champion version {summary.get('champion_version')}; {summary['counts']['rows_matured']:,} matured scored rows "
        f"of {summary['counts']['rows_scored']:,} (labels mature after {summary['counts']['maturity_days']} days)</p>"
        f"{_sources(summary['counts'])}"
        f"{imgs}<h2>Per day</h2><table><tr><th>day</th><th>rows</th><th>positives</th><th>{esc(summary['realised']['metric'])}</th>"
        f"<th>interval</th><th>model</th><th>note</th></tr>{rows}</table></body></html>"
    )
