"""Scoring with the champion: the one code path the endpoint (serving.py) and the batch DAG share.

* :func:`load_champion` reads the registered model's ``champion`` alias (MLflow), materialises
  that version with every sha256 checked (:meth:`ModelRegistry.materialise`) and loads its
  :class:`ModelBundle`.
* :func:`validate_rows` casts raw rows (text from CSV, JSON values) to the spec's schema with
  the same rules as collect_and_label and raises :class:`InvalidRows` naming the column and
  the rule (missing columns, wrong types, values out of range or not allowed).
* :func:`score_frame` scores typed rows and applies the champion's threshold
  (decision = ``score >= threshold``, as in the evaluation).
* :func:`score_with_context` scores rows after earlier rows of the same entities, so the
  per-entity features (velocity, history) see the same past as in training; the endpoint takes
  that past from :class:`EntityHistory` (recent curated partitions, :func:`load_history`).
* :func:`score_partition` scores one ``ds=YYYY-MM-DD`` landing partition for the batch DAG:
  the days before it are curated too (PII tokenised) and are the context; only the
  partition's rows are kept, with their inputs when the spec captures (``serving.capture``).

Nothing here imports airflow.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.bundle import ModelBundle
from include.lifecycle.collect import (
    cast_and_validate,
    curate_partition,
    list_partitions,
    read_partition_files,
    tokenise,
)
from include.lifecycle.registry import ModelRegistry
from include.lifecycle.spec import ColumnSpec, Spec
from include.lifecycle.store import Store

MAX_REPORTED_ERRORS = 20
"""At most this many broken rows are listed in an error (the count is always given)."""


class NoChampion(RuntimeError):
    """The registry has no champion yet: nothing to score with."""


class InvalidRows(ValueError):
    """Rows that cannot be scored; ``errors`` lists ``{"row", "column", "rule"}`` (values of PII
    columns are never included)."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


@dataclass(frozen=True)
class Champion:
    """A loaded champion: immutable, so a server can swap the whole object atomically."""

    problem: str
    version: int
    bundle: ModelBundle
    record: dict[str, Any]
    loaded_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    @property
    def threshold(self) -> float | None:
        return self.bundle.threshold


def champion_version(registry: ModelRegistry) -> int | None:
    """The version the alias ``champion`` points at (one registry read: what the endpoint polls)."""
    return registry.champion_version()


def load_champion(registry: ModelRegistry, problem: str, *, version: int | None = None) -> Champion:
    """The champion (or ``version``), verified and loaded; raises :class:`NoChampion`,
    or :class:`~include.lifecycle.registry.ChecksumError` for a tampered version."""
    record = registry.champion()
    if version is None:
        if not record:
            raise NoChampion(f"{registry.where()}: no alias champion, no champion deployed for {problem!r} yet")
        version = int(record["version"])
    with tempfile.TemporaryDirectory(prefix=f"champion-{problem}-v{version}-") as tmp:
        # the bundle is fully in memory after load: the verified copy can go right away
        bundle = ModelBundle.load(registry.materialise(version, tmp))
    return Champion(problem=problem, version=version, bundle=bundle, record=record or {"version": version})


# --- rows in ---------------------------------------------------------------------------------
def input_schema(spec: Spec, bundle: ModelBundle) -> list[ColumnSpec]:
    """The schema columns a request must carry: the champion's input columns (never the target)."""
    wanted = set(bundle.input_columns) - {spec.problem.target}
    return [c for c in spec.schema_.columns if c.name in wanted]


def validate_rows(raw: pd.DataFrame, spec: Spec, bundle: ModelBundle) -> tuple[pd.DataFrame, list[str]]:
    """Raw rows -> typed rows the bundle can score, and the names of the ignored extra columns.

    The row key (``data.key``) is optional: it is echoed back when present. Every other input
    column of the champion is required. Extra columns are ignored (and reported)."""
    if len(raw) == 0 and len(raw.columns) == 0:
        raise InvalidRows("no rows to score")
    raw.columns = [str(c).strip() for c in raw.columns]
    duplicated = sorted({c for c in raw.columns if list(raw.columns).count(c) > 1})
    if duplicated:
        raise InvalidRows(f"duplicate column(s) {duplicated}")
    columns = input_schema(spec, bundle)
    key = spec.data.key
    missing = [c.name for c in columns if c.name not in raw.columns and c.name != key]
    if missing:
        raise InvalidRows(
            f"missing column(s) {missing}; the champion needs {[c.name for c in columns if c.name != key]}",
            [{"row": None, "column": c, "rule": "required"} for c in missing],
        )
    if len(raw) == 0:
        raise InvalidRows("no rows to score")
    present = [c for c in columns if c.name in raw.columns]
    extra = [c for c in raw.columns if c not in {col.name for col in present}]
    pii = {c.name for c in columns if c.pii}
    for col in present:  # JSON may carry objects or lists where a scalar belongs
        bad = raw[col.name].map(lambda v: isinstance(v, dict | list | tuple | set)).to_numpy(dtype=bool)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise InvalidRows(
                f"column {col.name!r} must hold {col.dtype} values, not objects or lists (row(s) {rows[:5].tolist()})",
                [{"row": int(r), "column": col.name, "rule": f"dtype:{col.dtype}"} for r in rows[:MAX_REPORTED_ERRORS]],
            )
    schema = spec.schema_.model_copy(update={"columns": present})
    frame = raw[[c.name for c in present]].copy()
    frame["__row"] = np.arange(len(frame))
    res = cast_and_validate(frame, schema, source="request", key=None, extra_columns="drop")
    if len(res.quarantined):
        q = res.quarantined.head(MAX_REPORTED_ERRORS)
        errors = [
            {"row": int(r), "column": c, "rule": rule} | ({} if c in pii else {"value": str(raw[c].iloc[int(r)])[:60]})
            for r, c, rule in zip(q["__row"], q["_column"], q["_rule"], strict=True)
        ]
        first = errors[0]
        raise InvalidRows(
            f"{len(res.quarantined)} row(s) break the schema; first: row {first['row']} column "
            f"{first['column']!r} breaks rule {first['rule']}",
            errors,
        )
    return res.curated.drop(columns="__row", errors="ignore"), extra


# --- scores out ------------------------------------------------------------------------------
def decisions(scores: np.ndarray, threshold: float | None) -> np.ndarray | None:
    """1 where the row is flagged (``score >= threshold``, as the evaluation counts it)."""
    if threshold is None:
        return None
    return (scores >= threshold).astype("int8")


def score_frame(champion: Champion, rows: pd.DataFrame, *, key: str | None) -> pd.DataFrame:
    """One output row per input row: the key (when given), score, decision, model version."""
    scores = champion.bundle.score(rows)
    out = pd.DataFrame(index=range(len(rows)))
    if key and key in rows.columns:
        out[key] = rows[key].to_numpy()
    out["score"] = scores
    dec = decisions(scores, champion.threshold) if champion.bundle.binary else None
    out["decision"] = pd.array(dec, dtype="Int8") if dec is not None else pd.array([None] * len(rows), dtype="Int8")
    out["model_version"] = np.int64(champion.version)
    return out


def score_with_context(
    champion: Champion, rows: pd.DataFrame, context: pd.DataFrame | None, *, key: str | None
) -> pd.DataFrame:
    """Score ``rows`` with earlier rows of the same entities as ``context`` for the per-entity
    features (velocity, history); one output row per row of ``rows``, in order."""
    if context is None or context.empty:
        return score_frame(champion, rows, key=key)
    both = pd.concat([context[[c for c in rows.columns if c in context.columns]], rows], ignore_index=True)
    # the bundle computes per-entity features from the frame it is given: score all, keep ``rows``
    return score_frame(champion, both, key=key).iloc[len(context) :].reset_index(drop=True)


@dataclass(frozen=True)
class EntityHistory:
    """Recent curated rows (PII tokenised), indexed by entity: the context a request's rows need
    for their per-entity features. Immutable, so a server swaps a refreshed one atomically."""

    rows: pd.DataFrame
    entity_column: str
    positions: dict[str, np.ndarray]
    days: tuple[str, ...]

    def context_for(self, entities: pd.Series) -> pd.DataFrame:
        found = [self.positions[e] for e in pd.unique(entities.dropna()) if e in self.positions]
        if not found:
            return self.rows.iloc[:0]
        return self.rows.iloc[np.sort(np.concatenate(found))]


def load_history(problem: Store, spec: Spec, columns: list[str], days: int) -> EntityHistory | None:
    """The last ``days`` curated partitions of a problem (written by collect_and_label), or None."""
    entity = spec.data.entity_column
    if not entity or days <= 0:
        return None
    parts = list_partitions(problem.sub("curated"))[-days:]
    if not parts:
        return None
    rows = problem.read_parquet([f"curated/ds={p}/part-0.parquet" for p in parts])
    rows = rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)
    groups = rows.groupby(entity, sort=False, observed=True).indices
    return EntityHistory(rows, entity, {str(k): np.asarray(v) for k, v in groups.items()}, tuple(parts))


def tokenise_pii(rows: pd.DataFrame, spec: Spec, pii_key: bytes) -> pd.DataFrame:
    """The rows with their PII columns replaced by the same keyed tokens as in curated data."""
    out = rows.copy()
    for col in spec.pii_columns:
        if col in out.columns:
            out[col] = tokenise(out[col], pii_key)
    return out


def curate_for_scoring(
    spec: Spec, *, source: Store, ds: str, pii_key: bytes, history_days: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any], list[str]]:
    """Landing partition ``ds`` curated for scoring (rows that break the schema quarantined and
    counted, PII tokenised) and the curated ``history_days`` partitions before it (default: the
    spec's lookback, the window the model trained on) as the per-entity context:
    ``(rows, context or None, counts, history days)``."""
    if spec.data.layout != "partitioned":
        raise ValueError(f"{spec.name}: batch scoring needs a partitioned source (data.layout), not {spec.data.layout}")
    day = dt.date.fromisoformat(ds)
    available = list_partitions(source)
    if ds not in available:
        raise FileNotFoundError(f"{source.uri(f'ds={ds}')}: no landing partition for {ds} (have {len(available)})")
    history_days = spec.data.lookback_days if history_days is None else history_days
    start = (day - dt.timedelta(days=history_days)).isoformat()
    history = [p for p in available if start <= p < ds]
    token_cache: dict[str, str] = {}

    def curate(p: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        frames = read_partition_files(source, p, spec.data.format)
        cur, _, c = curate_partition(frames, spec, pii_key=pii_key, token_cache=token_cache)
        return cur, c

    context = [curate(p)[0] for p in history]
    rows, counts = curate(ds)
    return rows, (pd.concat(context, ignore_index=True) if context else None), counts, history


def finish_scores(
    spec: Spec, rows: pd.DataFrame, scored: pd.DataFrame, counts: dict[str, Any], *, ds: str, version: int,
    threshold: float | None, history: list[str], history_rows: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """The scores of ``rows`` in time order with the time column, and the run's accounting.

    With ``serving.capture`` (the default) the scores are the day's capture: the model's inputs
    (curated, so the PII columns hold their tokens) sit between the time and the score
    (:func:`include.lifecycle.capture.capture_frame`), for the monitor's drift."""
    from include.lifecycle.capture import capture_frame

    if spec.serving.capture:
        out = capture_frame(spec, rows, scored, pii_key=None, tokenised=True)
    else:
        out = scored
        if spec.data.time_column:
            out.insert(1 if spec.data.key else 0, spec.data.time_column, rows[spec.data.time_column].to_numpy())
    out = out.sort_values([c for c in (spec.data.time_column, spec.data.key) if c], kind="stable")
    out = out.reset_index(drop=True)
    summary = {
        "ds": ds,
        "rows_in": counts["rows_in"],
        "rows_scored": len(out),
        "rows_quarantined": counts["rows_quarantined"],
        "by_rule": counts["by_rule"],
        "history_partitions": len(history),
        "history_rows": history_rows,
        "model_version": version,
        "threshold": threshold,
        "flagged": int(out["decision"].fillna(0).sum()),
    }
    if summary["rows_in"] != summary["rows_scored"] + summary["rows_quarantined"]:
        raise AssertionError(f"row accounting broken: {summary}")
    return out, summary


def score_partition(
    spec: Spec,
    champion: Champion,
    *,
    source: Store,
    ds: str,
    pii_key: bytes,
    history_days: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score the rows of landing partition ``ds`` (raw, unlabelled) with the champion.

    The ``history_days`` partitions before ``ds`` (default: the spec's lookback, the window the
    model trained on) are curated as context for the per-entity features and then dropped. The
    partition's rows that break the schema are not scored; they are counted (``rows_quarantined``
    by rule), so ``rows_in = rows_scored + rows_quarantined``. The output has the row key, the
    time column, the score, the decision and the model version, and with ``serving.capture`` the
    model's inputs too (:func:`finish_scores`), the PII columns as the curation's tokens (never raw).
    """
    rows, context, counts, history = curate_for_scoring(
        spec, source=source, ds=ds, pii_key=pii_key, history_days=history_days
    )
    scored = score_with_context(champion, rows, context, key=spec.data.key)
    return finish_scores(
        spec, rows, scored, counts, ds=ds, version=champion.version, threshold=champion.threshold,
        history=history, history_rows=0 if context is None else len(context),
    )  # fmt: skip
