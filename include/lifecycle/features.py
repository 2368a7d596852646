"""Feature engineering, the shared preprocessor and minority oversampling.

Section 4 of the lifecycle ("engineer features") lives here. Nothing in this module
imports airflow: the same code runs in a DAG task, a Glue job, a SageMaker training
script and when a champion's features are recomputed for scoring.

Four pieces:

* :class:`FeaturePipeline` is the one path from rows to features that training and
  scoring share: the groups and columns of a model, built from the spec for training and
  from the model's ``features.json`` for scoring, engineered with the same call.
* :func:`engineer` turns a raw frame into a frame of features, one feature group
  (:class:`~include.lifecycle.spec.FeatureGroupSpec`) at a time. It is deterministic and
  stateless: it fits nothing, so features of a row depend only on that row and, for the
  per-entity groups (``velocity``, ``history``), on rows of the same entity strictly
  *before* the row's timestamp. Appending later data never changes earlier features.
* :func:`make_preprocessor` (in :mod:`include.lifecycle.preprocess`, re-exported here)
  builds the (unfitted) sklearn ``ColumnTransformer`` that imputes, scales, one-hot
  encodes and target-encodes those features. Everything that is learnt from data is
  learnt here: **call ``fit_transform`` on the training rows and
  ``transform`` on validation, test and scoring rows**. ``fit_transform`` target-encodes
  the training rows out-of-fold (cross fitting), ``transform`` uses the encoding fitted
  on all training rows.
* :func:`apply_resampling` oversamples the minority class of the (already preprocessed)
  training matrix.

The per-entity groups are vectorised: rows are sorted once by (entity, time), every
window is found with ``np.searchsorted`` on int64 keys and sums come from cumulative
sums, so the full card-fraud feature set runs far above 500k rows/s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from include.lifecycle.spec import FeatureGroupSpec

if TYPE_CHECKING:
    from include.lifecycle.spec import Spec

DEFAULT_WINDOWS: tuple[str, ...] = ("1h", "24h", "7d")
"""Velocity windows used when a ``velocity`` group gives no ``params.windows``."""

NO_PREVIOUS_SECONDS = 365 * 86400
"""Gap assumed before an entity's first transaction: ``vel_log_secs_since_prev`` is
``log1p(NO_PREVIOUS_SECONDS)`` (a year) instead of NaN, so that median imputation does not
make a first transaction look like an ordinary one. ``hist_n_prior == 0`` marks it too."""

NIGHT_END_HOUR = 6
"""``time_is_night`` is 1.0 for local times 00:00-05:59."""

DEFAULT_INTERACTION_COLUMNS = 5
"""An ``interactions`` group without columns multiplies the first this-many numeric columns."""

_TICKS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_NAT = np.iinfo(np.int64).min
_KEY_LIMIT = 2**62
_WINDOW_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")
_WINDOW_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
}


@dataclass(frozen=True)
class FeatureColumns:
    """Names of the engineered feature columns, by how the preprocessor treats them.

    ``numeric`` columns are float64 (imputed, scaled); ``categorical`` columns are strings
    with NaN for missing (imputed with "missing", one-hot encoded); ``target_encoded``
    columns are strings encoded out-of-fold with the target mean.
    """

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    target_encoded: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        """Every feature column: numeric, then categorical, then target-encoded."""
        return [*self.numeric, *self.categorical, *self.target_encoded]

    def to_dict(self) -> dict[str, list[str]]:
        """A JSON-ready dict, e.g. for a model's lineage record."""
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "target_encoded": list(self.target_encoded),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureColumns:
        """Inverse of :meth:`to_dict`; missing keys mean no columns of that type."""
        return cls(
            numeric=list(d.get("numeric") or []),
            categorical=list(d.get("categorical") or []),
            target_encoded=list(d.get("target_encoded") or []),
        )


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _as_float(s: pd.Series) -> np.ndarray:
    """A numeric or bool column as a float64 array (missing -> NaN, bool -> 0/1)."""
    return s.to_numpy(dtype="float64", na_value=np.nan)


def _as_string(s: pd.Series) -> pd.Series:
    """A column as pandas' ``str`` dtype with missing values kept as NaN."""
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.na_value is np.nan:
        return s
    if isinstance(s.dtype, pd.CategoricalDtype):  # convert the few categories, then take: much faster
        categories = s.cat.categories.astype("str").array
        codes = s.cat.codes.to_numpy().astype(np.intp)
        return pd.Series(categories.take(codes, allow_fill=True), index=s.index, name=s.name)
    return s.astype("str")


def _is_numeric(s: pd.Series) -> bool:
    return ptypes.is_bool_dtype(s.dtype) or (
        ptypes.is_numeric_dtype(s.dtype) and not isinstance(s.dtype, pd.CategoricalDtype)
    )


def _is_datetime(s: pd.Series) -> bool:
    return ptypes.is_datetime64_any_dtype(s.dtype)


def _codes(s: pd.Series) -> np.ndarray:
    """Integer codes of a column's values (int64, -1 for missing); equal values share a code."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.codes.to_numpy().astype(np.int64)
    codes, _ = pd.factorize(s, use_na_sentinel=True)
    return codes.astype(np.int64, copy=False)


def _time_ticks(s: pd.Series, timezone: str | None = None) -> tuple[np.ndarray, int]:
    """A time column as int64 ticks since the epoch (NaT -> int64 min) and ticks per second.

    Without ``timezone`` the ticks are absolute (UTC); naive timestamps are taken as UTC.
    With ``timezone`` they are local wall-clock ticks in that zone (for hour/day features).
    """
    if not _is_datetime(s):
        s = pd.to_datetime(s, utc=True, errors="coerce")
    tz = getattr(s.dtype, "tz", None)
    if timezone is not None:
        s = (s if tz is not None else s.dt.tz_localize("UTC")).dt.tz_convert(timezone).dt.tz_localize(None)
    elif tz is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    unit = s.dt.unit
    if unit not in _TICKS_PER_SECOND:
        s = s.astype("datetime64[us]")
        unit = "us"
    ticks = s.to_numpy().view(np.int64)
    return ticks, _TICKS_PER_SECOND[unit]


def _window_label(window: Any) -> str:
    label = str(window).strip().lower().replace(" ", "")
    return "".join(ch if ch.isalnum() else "_" for ch in label)


def _window_ticks(window: Any, ticks_per_second: int) -> int:
    """A window such as "1h", "24h", "7d", "30min", "90s", "2w" (or a number of seconds) in ticks."""
    if isinstance(window, int | float):
        seconds = float(window)
    else:
        match = _WINDOW_RE.match(str(window))
        if match and match.group(2).lower() in _WINDOW_UNITS:
            seconds = float(match.group(1)) * _WINDOW_UNITS[match.group(2).lower()]
        else:
            try:
                seconds = pd.Timedelta(str(window)).total_seconds()
            except ValueError as exc:
                raise ValueError(f"velocity window {window!r} is not a duration like 1h, 24h or 7d") from exc
    if not seconds > 0:
        raise ValueError(f"velocity window {window!r} must be positive")
    return round(seconds * ticks_per_second)


class _EntityTimeIndex:
    """Rows sorted by (entity, time) with, for every sorted row, where its entity block and
    its group of same-timestamp rows start. Built once per :func:`engineer` call and shared
    by the ``velocity`` and ``history`` groups.

    Rows with a missing entity or time are left out: their per-entity features are NaN and
    they count for no other row.
    """

    def __init__(self, df: pd.DataFrame, time_column: str, entity_column: str) -> None:
        codes = _codes(df[entity_column])
        ticks, self.ticks_per_second = _time_ticks(df[time_column])
        self.n_rows = len(df)
        valid = (codes >= 0) & (ticks != _NAT)
        rows = None if valid.all() else np.flatnonzero(valid)
        if rows is not None:
            codes, ticks = codes[rows], ticks[rows]
        self._uniq: np.ndarray | None = None
        if len(codes):
            t_min = int(ticks.min())
            span = int(ticks.max()) - t_min + 1
            n_codes = int(codes.max()) + 1
            if n_codes * span < _KEY_LIMIT:
                keys = codes * span + (ticks - t_min)
            else:  # too many entities x too long a time range: rank-compress the timestamps (exact)
                self._uniq = np.unique(ticks)
                span = len(self._uniq) + 1
                keys = codes * span + np.searchsorted(self._uniq, ticks)
        else:
            span = 1
            keys = codes
        order = np.argsort(keys, kind="quicksort")  # ties are same entity + same time: order irrelevant
        self.keys = keys[order]
        self.ticks = ticks[order]
        self.entity = codes[order]
        self.base = self.entity * span
        self.positions = order if rows is None else rows[order]
        # both are run starts in sorted arrays: found in one pass, no binary search per row
        self.block_start = _run_starts(self.entity)
        self.first_same = _run_starts(self.keys)
        self.n_prior = self.first_same - self.block_start

    def sorted(self, values: np.ndarray) -> np.ndarray:
        """Values of the original rows, in sorted (entity, time) order."""
        return values[self.positions]

    def window_start(self, window_ticks: int) -> np.ndarray:
        """For each sorted row, the first sorted index of its entity with time >= t - window."""
        if self._uniq is None:
            query = np.maximum(self.keys - window_ticks, self.base)
        else:
            query = self.base + np.searchsorted(self._uniq, self.ticks - window_ticks, side="left")
        return np.searchsorted(self.keys, query, side="left")

    def scatter(self, sorted_values: np.ndarray) -> np.ndarray:
        """Sorted-order values back to the original row order (float64; left-out rows NaN)."""
        out = np.full(self.n_rows, np.nan)
        out[self.positions] = sorted_values
        return out


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    """For each position of a sorted array, where its run of equal values starts (what
    ``np.searchsorted(a, a, side="left")`` gives, in linear time)."""
    n = len(sorted_values)
    starts = np.zeros(n, dtype=np.intp)
    if n > 1:
        changed = np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1
        starts[changed] = changed
        np.maximum.accumulate(starts, out=starts)
    return starts


def _prior_sum(cumsum: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Sum of values[start:stop] per row, from a cumulative sum with a leading 0."""
    return cumsum[stop] - cumsum[start]


def _cumsum0(values: np.ndarray) -> np.ndarray:
    out = np.empty(len(values) + 1)
    out[0] = 0.0
    np.cumsum(values, out=out[1:])
    return out


# --------------------------------------------------------------------------------------
# feature groups
# --------------------------------------------------------------------------------------
class _Builder:
    """Collects feature columns, keeps names unique and records their type."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.data: dict[str, Any] = {}
        self.numeric: list[str] = []
        self.categorical: list[str] = []
        self.target_encoded: list[str] = []
        self._raw: set[str] = set()

    def add(self, name: str, values: Any, kind: str, group: str, *, raw: bool = False) -> bool:
        if name in self.data:
            if raw and name in self._raw:
                return False  # the same input column listed by two raw groups
            raise ValueError(f"feature group {group!r}: feature column {name!r} is produced twice")
        self.data[name] = values
        {"numeric": self.numeric, "categorical": self.categorical, "target_encoded": self.target_encoded}[kind].append(
            name
        )
        if raw:
            self._raw.add(name)
        return True


def _check_columns(df: pd.DataFrame, group: FeatureGroupSpec, columns: Sequence[str], exclude: Collection[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"feature group {group.name!r} ({group.kind}): columns {missing} are not in the data")
    excluded = [c for c in columns if c in exclude]
    if excluded:
        raise ValueError(
            f"feature group {group.name!r} ({group.kind}): columns {excluded} are excluded from features "
            "(target, key, time, entity or PII columns)"
        )


def _raw(b: _Builder, g: FeatureGroupSpec, exclude: Collection[str], log: Callable[[str], None]) -> int:
    explicit = bool(g.columns)
    columns = list(g.columns) if explicit else [str(c) for c in b.df.columns if c not in exclude]
    _check_columns(b.df, g, columns, exclude)
    added = 0
    for c in columns:
        s = b.df[c]
        if _is_datetime(s):
            if explicit:
                raise ValueError(f"feature group {g.name!r} (raw): {c!r} is a timestamp; use a time_parts group")
            log(f"features: group {g.name!r} skips timestamp column {c!r} (use time_parts)")
            continue
        if _is_numeric(s):
            added += b.add(c, _as_float(s), "numeric", g.name, raw=True)
        else:
            added += b.add(c, _as_string(s).array, "categorical", g.name, raw=True)
    return added


def _time_parts(b: _Builder, g: FeatureGroupSpec, time_column: str) -> int:
    ticks, tps = _time_ticks(b.df[time_column], g.params.get("timezone"))
    missing = ticks == _NAT
    seconds = ticks // tps
    second_of_day = np.mod(seconds, 86400).astype(np.float64)
    angle = second_of_day * (2.0 * math.pi / 86400.0)
    day_of_week = np.mod(seconds // 86400 + 3, 7).astype(np.float64)  # 1970-01-01 was a Thursday; Monday = 0
    is_night = (second_of_day < NIGHT_END_HOUR * 3600).astype(np.float64)
    parts = {
        "time_hour_sin": np.sin(angle),
        "time_hour_cos": np.cos(angle),
        "time_day_of_week": day_of_week,
        "time_is_night": is_night,
    }
    for name, values in parts.items():
        values[missing] = np.nan
        b.add(name, values, "numeric", g.name)
    return len(parts)


def _velocity(b: _Builder, g: FeatureGroupSpec, idx: _EntityTimeIndex) -> int:
    windows = g.params.get("windows") or list(DEFAULT_WINDOWS)
    sum_column = g.columns[0] if g.columns else None
    if sum_column is not None and not _is_numeric(b.df[sum_column]):
        raise ValueError(f"feature group {g.name!r} (velocity): the summed column {sum_column!r} is not numeric")
    csum = None
    if sum_column is not None:
        amounts = idx.sorted(_as_float(b.df[sum_column]))
        csum = _cumsum0(np.nan_to_num(amounts, nan=0.0))
    stop = idx.first_same
    added = 0
    for w in windows:
        label = _window_label(w)
        start = idx.window_start(_window_ticks(w, idx.ticks_per_second))
        added += b.add(f"vel_cnt_{label}", idx.scatter((stop - start).astype(np.float64)), "numeric", g.name)
        if csum is not None:
            added += b.add(f"vel_sum_{label}", idx.scatter(_prior_sum(csum, start, stop)), "numeric", g.name)
    has_prev = idx.n_prior > 0
    gap = np.full(len(stop), float(NO_PREVIOUS_SECONDS))
    prev = idx.ticks[stop[has_prev] - 1]
    gap[has_prev] = (idx.ticks[has_prev] - prev) / idx.ticks_per_second
    added += b.add("vel_log_secs_since_prev", idx.scatter(np.log1p(gap)), "numeric", g.name)
    return added


def _history(b: _Builder, g: FeatureGroupSpec, idx: _EntityTimeIndex) -> int:
    start, stop = idx.block_start, idx.first_same
    added = b.add("hist_n_prior", idx.scatter(idx.n_prior.astype(np.float64)), "numeric", g.name)
    for c in g.columns:
        s = b.df[c]
        if _is_numeric(s):
            values = idx.sorted(_as_float(s))
            known = ~np.isnan(values)
            prior_sum = _prior_sum(_cumsum0(np.where(known, values, 0.0)), start, stop)
            prior_cnt = _prior_sum(_cumsum0(known.astype(np.float64)), start, stop)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = values / (prior_sum / prior_cnt)
            ratio[~np.isfinite(ratio)] = np.nan
            added += b.add(f"hist_{c}_ratio", idx.scatter(ratio), "numeric", g.name)
        else:
            value_codes = idx.sorted(_codes(s)) + 1  # 0 = missing
            added += b.add(f"hist_new_{c}", idx.scatter(_first_seen(idx, value_codes)), "numeric", g.name)
    return added


def _first_seen(idx: _EntityTimeIndex, value_codes: np.ndarray) -> np.ndarray:
    """1.0 when no strictly earlier row of the same entity has the same value, else 0.0
    (NaN for a missing value). ``value_codes`` are in sorted order, 0 meaning missing."""
    n_values = int(value_codes.max(initial=0)) + 1
    pair = idx.entity * n_values + value_codes
    pair_codes, _ = pd.factorize(pair)  # codes numbered in order of first appearance (= earliest time)
    is_first = np.ones(len(pair_codes), dtype=bool)
    if len(pair_codes) > 1:
        is_first[1:] = pair_codes[1:] > np.maximum.accumulate(pair_codes)[:-1]
    first_pos = np.flatnonzero(is_first)
    flag = (idx.keys[first_pos[pair_codes]] == idx.keys).astype(np.float64)
    flag[value_codes == 0] = np.nan
    return flag


def _target_encoding(b: _Builder, g: FeatureGroupSpec, exclude: Collection[str]) -> int:
    _check_columns(b.df, g, g.columns, exclude)
    for c in g.columns:
        b.add(f"te_{c}", _as_string(b.df[c]).array, "target_encoded", g.name)
    return len(g.columns)


def _interactions(b: _Builder, g: FeatureGroupSpec, exclude: Collection[str]) -> int:
    if g.columns:
        columns = list(g.columns)
        _check_columns(b.df, g, columns, exclude)
        not_numeric = [c for c in columns if not _is_numeric(b.df[c])]
        if not_numeric:
            raise ValueError(f"feature group {g.name!r} (interactions): columns {not_numeric} are not numeric")
    else:
        limit = int(g.params.get("max_columns", DEFAULT_INTERACTION_COLUMNS))
        columns = [str(c) for c in b.df.columns if c not in exclude and _is_numeric(b.df[c])][:limit]
    values = {c: _as_float(b.df[c]) for c in columns}
    added = 0
    for i, a in enumerate(columns):
        for c in columns[i + 1 :]:
            added += b.add(f"{a}_x_{c}", values[a] * values[c], "numeric", g.name)
    return added


PER_ENTITY_KINDS = ("velocity", "history")
"""The feature group kinds computed per entity over time (the ones a Spark job can precompute)."""

ENTITY_FEATURES_META = b"ml_lifecycle.entity_features"
"""The Parquet schema metadata key of a file of precomputed per-entity features (JSON: the groups,
time and entity columns, the rows and the engine that computed them)."""


def per_entity_names(df: pd.DataFrame, group: FeatureGroupSpec) -> list[str]:
    """The columns :func:`engineer` adds for a ``velocity`` or ``history`` group on ``df``, in order."""
    return _per_entity_names(group, lambda c: _is_numeric(df[c]))


def _per_entity_names(group: FeatureGroupSpec, is_numeric: Callable[[str], bool]) -> list[str]:
    """The column names of a per-entity group; ``is_numeric(column)`` decides a history column's
    kind (ratio or new-value flag). Shared with history_ibis, which asks its engine's types."""
    if group.kind == "velocity":
        names = []
        for w in group.params.get("windows") or list(DEFAULT_WINDOWS):
            label = _window_label(w)
            names.append(f"vel_cnt_{label}")
            if group.columns:
                names.append(f"vel_sum_{label}")
        return [*names, "vel_log_secs_since_prev"]
    if group.kind == "history":
        return ["hist_n_prior", *(f"hist_{c}_ratio" if is_numeric(c) else f"hist_new_{c}" for c in group.columns)]
    raise ValueError(f"feature group {group.name!r}: kind {group.kind!r} is not a per-entity kind {PER_ENTITY_KINDS}")


@dataclass(frozen=True)
class EntityFeatures:
    """Per-entity feature columns (``velocity``, ``history``) computed elsewhere for the same rows, in
    the same order: the Spark collect job computes them for its data set with the one Ibis definition
    (:mod:`include.lifecycle.history_ibis`, parity-tested against this module) and writes them beside
    it. :func:`engineer` takes a group's columns from here when the group's definition and the time
    and entity columns are the ones they were computed with; otherwise it computes the group itself."""

    frame: pd.DataFrame
    groups: tuple[FeatureGroupSpec, ...]
    time_column: str | None
    entity_column: str | None
    engine: str = ""

    @staticmethod
    def metadata(
        groups: Sequence[FeatureGroupSpec], *, time_column: str, entity_column: str, rows: int, engine: str
    ) -> dict[bytes, bytes]:
        """The schema metadata a file of precomputed features carries (read by :meth:`from_arrow`)."""
        import json

        meta = {
            "groups": [g.model_dump() for g in groups],
            "time_column": time_column,
            "entity_column": entity_column,
            "rows": rows,
            "engine": engine,
        }
        return {ENTITY_FEATURES_META: json.dumps(meta, sort_keys=True).encode()}

    @classmethod
    def from_arrow(cls, table: Any) -> EntityFeatures:
        """A file of precomputed features read as an Arrow table (its metadata says what it holds)."""
        import json

        raw = (table.schema.metadata or {}).get(ENTITY_FEATURES_META)
        if raw is None:
            raise ValueError("not a file of precomputed per-entity features (no ml_lifecycle metadata)")
        meta = json.loads(raw)
        if table.num_rows != meta["rows"]:
            raise ValueError(f"precomputed per-entity features: {table.num_rows} rows, the file says {meta['rows']}")
        return cls(
            frame=table.to_pandas(),
            groups=tuple(FeatureGroupSpec(**g) for g in meta["groups"]),
            time_column=meta["time_column"],
            entity_column=meta["entity_column"],
            engine=meta.get("engine", ""),
        )

    def columns_for(
        self, df: pd.DataFrame, group: FeatureGroupSpec, time_column: str, entity_column: str
    ) -> list[str] | None:
        """The group's columns if they are here for ``df`` (None when the group, or the time or entity
        column, is not the one they were computed with). Raises ValueError when the rows differ."""
        if group not in self.groups or (time_column, entity_column) != (self.time_column, self.entity_column):
            return None
        if len(self.frame) != len(df):
            raise ValueError(
                f"precomputed per-entity features ({self.engine or 'unknown engine'}) have {len(self.frame)} rows, "
                f"the data set {len(df)}: they are not this data set's"
            )
        names = per_entity_names(df, group)
        return names if all(n in self.frame.columns for n in names) else None

    def taken(
        self, df: pd.DataFrame, groups: Sequence[FeatureGroupSpec], time_column: str | None, entity_column: str | None
    ) -> dict[str, list[str]]:
        """The per-entity groups of ``groups`` taken from here for ``df``, with their columns."""
        if not time_column or not entity_column:
            return {}
        out = {}
        for g in groups:
            if g.kind in PER_ENTITY_KINDS:
                names = self.columns_for(df, g, time_column, entity_column)
                if names is not None:
                    out[g.name] = names
        return out


def engineer(
    df: pd.DataFrame,
    groups: Sequence[FeatureGroupSpec],
    *,
    time_column: str | None,
    entity_column: str | None,
    exclude: Collection[str],
    log: Callable[[str], None] | None = None,
    precomputed: EntityFeatures | None = None,
) -> tuple[pd.DataFrame, FeatureColumns]:
    """Compute the features of ``groups`` for every row of ``df``.

    Returns a new frame with the same index and row order as ``df`` (``df`` is not
    modified) and the :class:`FeatureColumns` that say how the preprocessor treats each
    column. Stateless and deterministic: the same call recomputes a champion's features.

    Kinds and the columns they produce:

    * ``raw``: the listed columns (all columns not in ``exclude`` when none are listed;
      timestamp columns are then skipped). Numeric/bool -> numeric float64 (bool as 0/1),
      everything else -> categorical ``str`` with missing values as NaN. Names unchanged.
    * ``time_parts`` (``time_column``; ``params.timezone`` optional, default UTC):
      ``time_hour_sin``, ``time_hour_cos`` (of the time of day), ``time_day_of_week``
      (Monday = 0), ``time_is_night`` (00:00-05:59).
    * ``velocity`` (per ``entity_column``): for each window of ``params.windows`` (default
      1h, 24h, 7d) ``vel_cnt_<w>``, the number of the entity's rows with time in
      ``[t - w, t)``, and ``vel_sum_<w>``, the sum of the first listed column over those
      rows (missing values count 0); ``vel_log_secs_since_prev``, log1p of the seconds
      since the entity's latest earlier row, ``log1p(NO_PREVIOUS_SECONDS)`` when none.
    * ``history`` (per ``entity_column``, all strictly earlier rows): ``hist_n_prior``;
      for each listed numeric column ``hist_<col>_ratio`` = value / mean of the entity's
      earlier values (NaN without history); for each other listed column
      ``hist_new_<col>`` = 1.0 when the entity has no earlier row with this value, else
      0.0 (NaN when the value is missing).
    * ``target_encoding``: the listed columns as ``str`` named ``te_<col>``, returned in
      ``target_encoded`` (the preprocessor encodes them out-of-fold).
    * ``interactions``: ``<a>_x_<b>`` products of each pair of the listed numeric columns
      (when none are listed, of the first ``params.max_columns`` (5) numeric columns not
      in ``exclude``, in column order).

    "Earlier" means a strictly smaller timestamp: rows of the same entity at the same
    time do not see each other, so features at time t never depend on rows at or after t.
    Rows with a missing entity or time get NaN per-entity features and count for no row.
    Explicitly listed columns must exist and must not be in ``exclude`` (ValueError).

    ``precomputed``: per-entity columns computed for the same rows by another engine
    (:class:`EntityFeatures`); a ``velocity`` or ``history`` group found there is taken from there.
    """
    say = log or (lambda _msg: None)
    per_entity = [g for g in groups if g.kind in PER_ENTITY_KINDS]
    taken: dict[str, list[str]] = {}
    if per_entity:
        if not time_column or not entity_column:
            raise ValueError("velocity and history feature groups need a time_column and an entity_column")
        for c in (time_column, entity_column):
            if c not in df.columns:
                raise ValueError(f"column {c!r} is not in the data")
        for g in per_entity:
            _check_columns(df, g, g.columns, exclude)
        if precomputed is not None:
            taken = precomputed.taken(df, per_entity, time_column, entity_column)
    idx: _EntityTimeIndex | None = None
    if any(g.name not in taken for g in per_entity):
        assert time_column and entity_column
        idx = _EntityTimeIndex(df, time_column, entity_column)
    b = _Builder(df)
    for g in groups:
        if g.kind == "raw":
            added = _raw(b, g, exclude, say)
        elif g.kind == "time_parts":
            if not time_column or time_column not in df.columns:
                raise ValueError(f"feature group {g.name!r} (time_parts) needs the time column {time_column!r}")
            added = _time_parts(b, g, time_column)
        elif g.name in taken:
            assert precomputed is not None
            frame = precomputed.frame
            added = sum(
                b.add(n, frame[n].to_numpy(np.float64, na_value=np.nan), "numeric", g.name) for n in taken[g.name]
            )
            say(f"features: group {g.name!r} ({g.kind}) taken as computed by {precomputed.engine or 'another engine'}")
        elif g.kind in PER_ENTITY_KINDS:
            assert idx is not None
            added = _velocity(b, g, idx) if g.kind == "velocity" else _history(b, g, idx)
        elif g.kind == "target_encoding":
            added = _target_encoding(b, g, exclude)
        elif g.kind == "interactions":
            added = _interactions(b, g, exclude)
        else:
            raise ValueError(f"feature group {g.name!r}: unknown kind {g.kind!r}")
        say(f"features: group {g.name!r} ({g.kind}) added {added} columns")
    out = _features_frame(b.data, df.index)
    columns = FeatureColumns(numeric=b.numeric, categorical=b.categorical, target_encoded=b.target_encoded)
    say(
        f"features: {len(df)} rows x {out.shape[1]} columns ({len(b.numeric)} numeric, "
        f"{len(b.categorical)} categorical, {len(b.target_encoded)} target-encoded)"
    )
    return out, columns


def _features_frame(data: dict[str, Any], index: pd.Index) -> pd.DataFrame:
    """The feature columns as a frame, without consolidating them into one 2-D block.

    ``pd.DataFrame(data)`` would copy every float column into one block; the preprocessor picks
    the columns out again anyway. Each column keeps its own array instead: the arrays computed here
    are new, and any that may still be memory of the input (a raw float column, a text column) is
    copied first, so the frame never shares memory with ``df``."""
    columns: dict[str, Any] = {}
    for name, values in data.items():
        if isinstance(values, np.ndarray):
            if not (values.flags.owndata and values.flags.writeable):
                values = values.copy()
        elif hasattr(values, "copy"):
            values = values.copy()
        columns[name] = values
    return pd.DataFrame(columns, index=index, copy=False)


# --------------------------------------------------------------------------------------
# the one path from rows to features, for training and for scoring
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeaturePipeline:
    """How a model's features are built from data set rows: the groups, the time and entity
    columns and the columns no group may use.

    Training builds it from the spec and the round's feature groups (:meth:`from_spec`),
    engineers the data set with :meth:`engineer` and records :meth:`to_config` in the model's
    ``features.json``; scoring rebuilds it from that file (:meth:`from_config`) and engineers
    the rows to score with the same call, so both get the same features for the same rows.
    """

    groups: tuple[FeatureGroupSpec, ...]
    time_column: str | None
    entity_column: str | None
    exclude: tuple[str, ...]

    @classmethod
    def from_spec(cls, spec: Spec, groups: Sequence[str | FeatureGroupSpec]) -> FeaturePipeline:
        """The pipeline of ``groups`` (names of the spec's feature groups, e.g. a plan's
        ``feature_groups``, or the groups themselves) for the spec's data."""
        return cls(
            groups=tuple(spec.group(g) if isinstance(g, str) else g for g in groups),
            time_column=spec.data.time_column,
            entity_column=spec.data.entity_column,
            exclude=tuple(spec.excluded_from_features),
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FeaturePipeline:
        """The pipeline a model was trained with, from its ``features.json`` (see :meth:`to_config`)."""
        return cls(
            groups=tuple(FeatureGroupSpec(**g) for g in config["groups"]),
            time_column=config.get("time_column"),
            entity_column=config.get("entity_column"),
            exclude=tuple(config["exclude"]),
        )

    def to_config(self) -> dict[str, Any]:
        """The JSON-ready keys of ``features.json`` that :meth:`from_config` reads back."""
        return {
            "groups": [g.model_dump() for g in self.groups],
            "exclude": sorted(self.exclude),
            "time_column": self.time_column,
            "entity_column": self.entity_column,
        }

    def engineer(
        self,
        df: pd.DataFrame,
        log: Callable[[str], None] | None = None,
        *,
        precomputed: EntityFeatures | None = None,
    ) -> tuple[pd.DataFrame, FeatureColumns]:
        """The features of every row of ``df``: :func:`engineer` with this pipeline's settings."""
        return engineer(
            df,
            self.groups,
            time_column=self.time_column,
            entity_column=self.entity_column,
            exclude=self.exclude,
            log=log,
            precomputed=precomputed,
        )


# --------------------------------------------------------------------------------------
# preprocessor
# --------------------------------------------------------------------------------------
# the preprocessor (sklearn) lives in include.lifecycle.preprocess, imported on first use so that
# computing features, resampling and scoring rows do not pay for importing sklearn; preprocessors
# pickled before it moved there name its classes and ``_to_float32`` in this module
_PREPROCESS_NAMES = (
    "make_preprocessor",
    "_to_float32",
    "_float32",
    "_ColumnsInOut",
    "_MedianImputer",
    "_CategoryCodes",
    "_OneHot",
)


def __getattr__(name: str) -> Any:
    """``features.make_preprocessor`` and the preprocessor's classes (for imports and unpickling)."""
    if name in _PREPROCESS_NAMES:
        from include.lifecycle import preprocess

        return getattr(preprocess, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------
def _take(X: Any, rows: np.ndarray) -> Any:
    return X.iloc[rows] if hasattr(X, "iloc") else X[rows]


def apply_resampling(
    X: np.ndarray, y: np.ndarray, *, method: str, seed: int, ratio: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Rebalance training rows; apply to the training split only, after preprocessing.

    * ``"none"``: returns ``X`` and ``y`` unchanged.
    * ``"oversample"``: every class with fewer than ``ratio`` x the majority-class count
      gets randomly drawn duplicates of its own rows (with replacement, seeded) until it
      reaches ``ceil(ratio * majority)``. Data never shrinks; the original rows come first
      in their original order, the duplicates are appended. Classification labels only.
    """
    if method == "none":
        return X, y
    if method != "oversample":
        raise ValueError(f"unknown resampling method {method!r}: use none or oversample")
    if not 0 < ratio <= 1:
        raise ValueError(f"resampling ratio must be in (0, 1], got {ratio}")
    y_arr = np.asarray(y)
    if len(y_arr) != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y_arr)}")
    if y_arr.dtype.kind == "f" and not np.all(np.isfinite(y_arr) & (y_arr == np.round(y_arr))):
        raise ValueError("oversample needs class labels, not a continuous target")
    classes, counts = np.unique(y_arr, return_counts=True)
    if len(classes) < 2:
        return X, y
    wanted = math.ceil(round(ratio * int(counts.max()), 9))  # round: 0.07 * 100 is 7.000000000000001
    rng = np.random.default_rng(seed)
    extra = [
        rng.choice(np.flatnonzero(y_arr == cls), size=wanted - cnt, replace=True)
        for cls, cnt in zip(classes, counts, strict=True)
        if cnt < wanted
    ]
    if not extra:
        return X, y
    rows = np.concatenate([np.arange(len(y_arr)), *extra])
    return _take(X, rows), _take(y, rows)
