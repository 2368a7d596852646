"""The drift reference: the rows the current champion was trained on, and the newest rows of this
run's window that are compared with them.

The champion's registry version names its run and round in ``lineage.json``; that round's
``plan.json`` names the data set it trained on (the run's collection, or augment_data's wider
one) and its ``split.json`` where training ended. The reference is that data set's training rows
(every row for a random split: a static file whose training rows are not stored apart), read
again from the store. Reading the rows, rather than a profile stored with the version, keeps
every registered version usable as a reference (none needs re-registering), gives the exact
training rows (not the whole window of the run that trained it) and lets this run bin them as
its own profile needs. When the champion's data set is gone, drift says so and is not measured.

With no champion there is no reference ("no reference: first model"): comparing with whatever
run came before, even a failed one, would measure nothing the model saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.evaluate_data.labels import _utc
from include.lifecycle.evaluate_data.profiling import profile
from include.lifecycle.evaluate_data.stability import drift, reference_bins
from include.lifecycle.layout import RunLayout
from include.lifecycle.registry import ModelRegistry
from include.lifecycle.store import Store

FIRST_MODEL = "no reference: first model (no champion yet)"


def champion_training_data(
    problem: Store, *, columns: Sequence[str], time_column: str | None
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
    """``(the champion's training rows, what they are)``, or ``(None, {"why": ...})``.

    ``columns``: the columns to compare (those of them in the champion's data set are read, with
    the time column). The info holds ``version``, ``run_id``, ``round``, ``dataset_rel``,
    ``train_end`` (ISO instant; None for a random split), ``rows``, ``note`` (a damaged champion
    skipped) and ``description``."""
    reg = ModelRegistry(problem)
    if reg.champion() is None:
        return None, {"why": FIRST_MODEL}
    champ, damaged = reg.last_intact_champion()
    note = f"champion version(s) {damaged} are damaged and were skipped" if damaged else None
    if champ is None:
        return None, {"why": f"no reference: no intact champion ({note})", "note": note}
    version = int(champ["version"])
    lineage = reg.lineage(version)
    if not lineage or not lineage.get("run_id") or lineage.get("round") is None:
        return None, {"why": f"no reference: champion version {version} has no lineage naming its run", "note": note}
    rnd = RunLayout(lineage["run_id"]).round(int(lineage["round"]))
    plan = problem.read_json_or(rnd.plan) or {}
    rel = plan.get("dataset_rel")
    info: dict[str, Any] = {
        "version": version,
        "run_id": lineage["run_id"],
        "round": int(lineage["round"]),
        "note": note,
    }
    if not rel or not problem.exists(rel):
        why = f"no reference: the data set champion version {version} trained on ({rel or 'unknown'}) is gone"
        return None, {**info, "why": why}
    split = problem.read_json_or(rnd.split) or {}
    train_end = (split.get("train") or {}).get("end") if split.get("kind") == "time" else None
    present = set(problem.parquet_columns(rel))
    wanted = [*columns, time_column] if time_column else list(columns)
    df = problem.read_parquet(rel, columns=[c for c in dict.fromkeys(wanted) if c in present])
    if train_end and time_column and time_column in df.columns:
        ts = _utc(df[time_column])
        df = df[~(ts >= pd.Timestamp(train_end)).to_numpy(dtype=bool)].reset_index(drop=True)
        what = f"its {len(df):,} training rows (before {train_end[:19]})"
    else:
        train_end = None
        what = f"its whole data set, {len(df):,} rows (random split: training rows are not stored apart)"
    description = f"champion version {version} (run {lineage['run_id']}, round {lineage['round']}): {what}"
    return df, {**info, "dataset_rel": rel, "train_end": train_end, "rows": len(df), "description": description}


def newest_rows(
    df: pd.DataFrame, time_column: str | None, *, days: int, after: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(mask, window)``: the rows of the last ``days`` days of ``df`` (by its newest row's day),
    and only those at or after ``after`` (the end of the reference's training rows).

    Without a time column every row is compared (a static data set has no newest days)."""
    if not time_column or time_column not in df.columns:
        return np.ones(len(df), dtype=bool), {"kind": "all rows", "rows": len(df)}
    ts = _utc(df[time_column])
    if ts.notna().sum() == 0:
        return np.zeros(len(df), dtype=bool), {"kind": "newest days", "rows": 0, "start": None, "end": None}
    end = ts.max().floor("D") + pd.Timedelta(days=1)
    start = end - pd.Timedelta(days=days)
    if after is not None:
        start = max(start, pd.Timestamp(after))
    mask = ((ts >= start) & (ts < end)).to_numpy(dtype=bool)
    window = {"kind": "newest days", "start": start.isoformat(), "end": end.isoformat(), "rows": int(mask.sum())}
    return mask, window


def drift_against(
    df: pd.DataFrame,
    reference: pd.DataFrame | None,
    info: dict[str, Any],
    *,
    time_column: str | None,
    numeric: list[str],
    categorical: list[str],
    recent_days: int,
    seed: int = 0,
) -> dict[str, Any]:
    """PSI per column of the newest days of ``df`` against ``reference`` (the champion's training
    rows, binned by the reference's quantiles and top categories), with its noise (see
    :func:`.stability.drift`). ``info`` is what :func:`champion_training_data` said; without a
    reference the result says why (``why``) and holds no columns."""
    if reference is None:
        return {**drift(_EMPTY, None), "why": info.get("why") or FIRST_MODEL, "note": info.get("note")}
    mask, window = newest_rows(df, time_column, days=recent_days, after=info.get("train_end"))
    kw = {"target": None, "time_column": time_column, "numeric": numeric, "categorical": categorical}
    ref_prof = profile(reference, **kw)
    cur_prof = profile(df[mask], **kw, **reference_bins(ref_prof))
    out = drift(cur_prof, ref_prof, reference_name=info["description"], seed=seed)
    out.update(compared=window, version=info.get("version"), note=info.get("note"))
    if not window["rows"]:
        out["why"] = (
            f"no rows of the newest {recent_days} days lie after the champion's training rows "
            f"(they end {str(info.get('train_end'))[:19]}): drift not measured"
        )
    return out


_EMPTY: dict[str, Any] = {"overall": {"rows": 0}}
