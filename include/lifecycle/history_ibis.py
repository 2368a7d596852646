"""The per-entity feature groups (``velocity``, ``history``) as one Ibis expression.

The same definition runs on any Ibis backend that has range windows: DuckDB in process
(locally) and PySpark (Spark on Glue). It computes exactly what
:func:`include.lifecycle.features.engineer` computes for these two kinds, with the same column
names, in the same order, as float64 with NULL where features.py has NaN:

* ``velocity``: for each window ``w`` of ``params.windows`` (default 1h, 24h, 7d)
  ``vel_cnt_<w>``, the number of the entity's rows with time in ``[t - w, t)``, and
  ``vel_sum_<w>``, the sum of the first listed column over them (missing values count 0,
  0.0 when there are none); ``vel_log_secs_since_prev``, ``ln(1 + seconds since the entity's
  latest strictly earlier row)``, ``log1p(NO_PREVIOUS_SECONDS)`` when there is none.
* ``history``: ``hist_n_prior`` (the entity's strictly earlier rows); per listed numeric
  column ``hist_<c>_ratio`` = value / mean of the entity's earlier known values (NULL without
  one, or when the ratio is not finite); per other listed column ``hist_new_<c>``, 1.0 when no
  strictly earlier row of the entity has the value, else 0.0 (NULL for a missing value).

How the windows are expressed. Times become integer microseconds since the epoch
(``epoch_us`` on DuckDB, ``unix_micros`` on Spark, Ibis' portable ``TimestampDelta`` on any other
backend) and every window is
a ``RANGE`` frame over that integer, partitioned by the entity: ``[t - w, t)`` is
``RANGE BETWEEN w PRECEDING AND 1 PRECEDING`` (both bounds are inclusive in SQL, so the
exclusive upper bound is "one microsecond before t": exact on integers, and rows at the same
time as the current row are never in its frame); "all strictly earlier rows" is ``RANGE
BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING``. ``hist_new_<c>`` compares the row's time with
the earliest time of its (entity, value) pair (``MIN`` over a partition without order), so
rows tied at that earliest time are all "new", as in features.py.

Differences that cannot show on this project's data, stated so nobody is surprised:

* times are taken at microsecond precision (Spark's); features.py uses the column's own unit,
  so sub-microsecond differences in a nanosecond column are seen there and not here;
* ``vel_log_secs_since_prev`` is ``ln(1 + x)`` (neither DuckDB nor Ibis has ``log1p``): for the
  smallest gap, one microsecond, it differs from ``log1p`` by about 1e-10 relative;
* sums are window sums, not differences of one running sum over the whole window as in
  features.py (whose rounding grows with the window), so the last bits of a float sum differ:
  within 1e-9 relative on the tests' data, up to 1.1e-8 on 1M and 4e-8 on 4M rows of the demo
  data (``vel_sum_*``, ``hist_*_ratio``; ``bench/collect_spark.py``), around the float32
  resolution (6e-8) of the training channels: a channel value may differ in its last bit.

Pure Python, no airflow and no Spark import: the backend is whatever the input table is bound to.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Sequence
from typing import Any

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from include.lifecycle.features import (
    DEFAULT_WINDOWS,
    NO_PREVIOUS_SECONDS,
    PER_ENTITY_KINDS,
    _per_entity_names,
    _window_label,
    _window_ticks,
)
from include.lifecycle.spec import FeatureGroupSpec

MICROS_PER_SECOND = 1_000_000
_EPOCH = ibis.timestamp("1970-01-01 00:00:00", timezone="UTC")
_FLOAT = dt.float64
_NO_PREVIOUS_LOG = math.log1p(NO_PREVIOUS_SECONDS)
_MAX_FLOAT = sys.float_info.max


def _is_numeric(dtype: dt.DataType) -> bool:
    return dtype.is_numeric() or dtype.is_boolean()


def _known(value: ir.Value) -> ir.FloatingValue:
    """A numeric or boolean column as float64 with NaN made NULL (pandas' NaN and SQL's NULL both
    mean "missing" in features.py; a NaN that reaches Spark stays a NaN otherwise)."""
    value = value.cast(_FLOAT)
    return value.isnan().ifelse(ibis.null(_FLOAT), value)


def _check(table: ir.Table, group: FeatureGroupSpec, exclude: Collection[str]) -> None:
    missing = [c for c in group.columns if c not in table.columns]
    if missing:
        raise ValueError(f"feature group {group.name!r} ({group.kind}): columns {missing} are not in the data")
    excluded = [c for c in group.columns if c in exclude]
    if excluded:
        raise ValueError(
            f"feature group {group.name!r} ({group.kind}): columns {excluded} are excluded from features "
            "(target, key, time, entity or PII columns)"
        )


def feature_names(table: ir.Table, groups: Sequence[FeatureGroupSpec]) -> list[str]:
    """The columns :func:`per_entity_features` adds for ``groups``, in order (features.py's names,
    from the same function, with numeric-ness from the table's types)."""

    def is_numeric(c: str) -> bool:
        return c in table.columns and _is_numeric(table[c].type())

    return [name for g in groups for name in _per_entity_names(g, is_numeric)]


def per_entity_features(
    table: ir.Table,
    groups: Sequence[FeatureGroupSpec],
    *,
    time_column: str,
    entity_column: str,
    keep: Sequence[str] = (),
    exclude: Collection[str] = (),
) -> ir.Table:
    """The ``velocity`` and ``history`` features of every row of ``table`` as an Ibis table.

    ``table`` is any Ibis table (a DuckDB or PySpark backend, or an unbound memtable) whose
    ``time_column`` is a timestamp. The result has one row per input row: the ``keep`` columns
    (e.g. the key, to join the features back) then the feature columns of ``groups`` in
    :func:`feature_names` order, all float64. Rows with a missing entity or time get NULL features
    and count for no other row. The row order is not defined (SQL): sort or join on ``keep``.
    Raises ValueError for the same spec errors as features.py (missing or excluded columns, a
    non-numeric summed column, a bad window, a feature column produced twice).
    """
    for c in (time_column, entity_column, *keep):
        if c not in table.columns:
            raise ValueError(f"column {c!r} is not in the data")
    if not table[time_column].type().is_timestamp():
        raise ValueError(f"the time column {time_column!r} must be a timestamp, not {table[time_column].type()}")

    # stage 1: the entity, integer time and the value columns (numeric ones with NaN as NULL)
    columns = _used_columns(table, groups)
    numeric = {c for c in columns if _is_numeric(table[c].type())}
    base = table.select(
        *keep,
        __entity=table[entity_column],
        __ticks=_epoch_micros(table, table[time_column]),
        **{f"__v{i}": _known(table[c]) if c in numeric else table[c] for i, c in enumerate(columns)},
    )
    value_of = {c: base[f"__v{i}"] for i, c in enumerate(columns)}
    entity, t = base.__entity, base.__ticks

    def frame(preceding: int | None) -> Any:
        """Rows of the same entity with time in [t - preceding, t) (all earlier rows for None)."""
        return ibis.window(group_by=entity, order_by=t, range=(None if preceding is None else -preceding, -1))

    prior = frame(None)
    # stage 2: every window aggregate once, by name; stage 3 derives the features from them
    aggregates: dict[str, ir.Value] = {"__valid": entity.notnull() & t.notnull(), "__t": t}
    derive: dict[str, Any] = {}

    def aggregate(name: str, value: ir.Value) -> str:
        aggregates.setdefault(name, value)
        return name

    def add(name: str, group: FeatureGroupSpec, fn: Any) -> None:
        if name in derive:
            raise ValueError(f"feature group {group.name!r}: feature column {name!r} is produced twice")
        derive[name] = fn

    for g in groups:
        if g.kind not in PER_ENTITY_KINDS:
            raise ValueError(f"feature group {g.name!r}: kind {g.kind!r} is not a per-entity kind {PER_ENTITY_KINDS}")
        _check(table, g, exclude)
        if g.kind == "velocity":
            sum_column = g.columns[0] if g.columns else None
            if sum_column is not None and sum_column not in numeric:
                raise ValueError(
                    f"feature group {g.name!r} (velocity): the summed column {sum_column!r} is not numeric"
                )
            for w in g.params.get("windows") or list(DEFAULT_WINDOWS):
                label = _window_label(w)
                us = _window_ticks(w, MICROS_PER_SECOND)
                window = frame(us)
                cnt = aggregate(f"__cnt_{us}", t.count().over(window))
                add(f"vel_cnt_{label}", g, lambda a, cnt=cnt: a[cnt])
                if sum_column is not None:
                    total = aggregate(f"__sum_{us}_{sum_column}", value_of[sum_column].sum().over(window))
                    add(f"vel_sum_{label}", g, lambda a, total=total: a[total].fill_null(0.0))
            prev = aggregate("__prev", t.max().over(prior))
            add("vel_log_secs_since_prev", g, lambda a, prev=prev: _log_gap(a["__t"], a[prev]))
        else:
            n_prior = aggregate("__n_prior", t.count().over(prior))
            add("hist_n_prior", g, lambda a, n_prior=n_prior: a[n_prior])
            for c in g.columns:
                value = value_of[c]
                v = aggregate(f"__value_{c}", value)
                if c in numeric:
                    total = aggregate(f"__psum_{c}", value.sum().over(prior))
                    known = aggregate(f"__pcnt_{c}", value.count().over(prior))
                    add(f"hist_{c}_ratio", g, lambda a, v=v, s=total, k=known: _ratio(a[v], a[s], a[k]))
                else:
                    first = aggregate(f"__first_{c}", t.min().over(ibis.window(group_by=[entity, value])))
                    add(
                        f"hist_new_{c}",
                        g,
                        lambda a, v=v, first=first: (
                            a[v].isnull().ifelse(ibis.null(_FLOAT), (a["__t"] == a[first]).cast(_FLOAT))
                        ),
                    )
    stage = base.select(*keep, **aggregates)
    null = ibis.null(_FLOAT)
    return stage.select(
        *keep, **{name: stage.__valid.ifelse(fn(stage).cast(_FLOAT), null) for name, fn in derive.items()}
    )


@ibis.udf.scalar.builtin(name="epoch_us")
def _duckdb_epoch_us(ts: dt.timestamp) -> dt.int64:  # type: ignore[empty-body]
    """DuckDB's epoch_us: microseconds since the epoch of a timestamp."""


@ibis.udf.scalar.builtin(name="unix_micros")
def _spark_unix_micros(ts: dt.timestamp) -> dt.int64:  # type: ignore[empty-body]
    """Spark's unix_micros: microseconds since the epoch of a timestamp."""


_EPOCH_MICROS = {"duckdb": _duckdb_epoch_us, "pyspark": _spark_unix_micros}


def _epoch_micros(table: ir.Table, ts: ir.TimestampValue) -> ir.IntegerValue:
    """A timestamp as int64 microseconds since the epoch. The one backend-specific line: Ibis'
    portable ``TimestampDelta`` is DuckDB's ``date_diff`` on TIMESTAMPTZ, which goes through ICU and
    takes ~0.3 s per million rows (``epoch_us`` takes 0.01 s); each engine's native function is used
    where known, the portable expression elsewhere (and for unbound tables)."""
    # _find_backends, not get_backend: the latter answers Ibis' default backend (DuckDB) for an unbound
    # memtable, which may be run on Spark later
    backends, _ = table._find_backends()
    name = backends[0].name if len(backends) == 1 else None
    native = _EPOCH_MICROS.get(name)
    return native(ts) if native is not None else ts.delta(_EPOCH, unit="microsecond").cast(dt.int64)


def _log_gap(t: ir.IntegerValue, prev: ir.IntegerValue) -> ir.FloatingValue:
    """ln(1 + seconds since the previous time), log1p(NO_PREVIOUS_SECONDS) without one."""
    seconds = (t - prev).cast(_FLOAT) / float(MICROS_PER_SECOND)
    return prev.isnull().ifelse(_NO_PREVIOUS_LOG, (seconds + 1.0).ln())


def _ratio(value: ir.FloatingValue, prior_sum: ir.FloatingValue, prior_count: ir.IntegerValue) -> ir.FloatingValue:
    """value / mean of the earlier known values; NULL without one or when not finite.

    NULLIF keeps every division away from zero (division by zero is an error in ANSI SQL, Spark
    4's default). "Finite" is ``abs(ratio) <= DBL_MAX``: false for infinities, and for NaN too,
    since DuckDB and Spark both order NaN above every number. ``isinf()`` cannot be used: Ibis 12
    compiles it to FALSE on PySpark (its compiler compares sqlglot nodes with Python ``==``)."""
    mean = prior_sum / prior_count.nullif(0).cast(_FLOAT)
    ratio = value / mean.nullif(0.0)
    return (ratio.abs() <= _MAX_FLOAT).ifelse(ratio, ibis.null(_FLOAT))


def _used_columns(table: ir.Table, groups: Sequence[FeatureGroupSpec]) -> list[str]:
    """The value columns the groups read, each once, in first-use order (only those in the table)."""
    seen: dict[str, None] = {}
    for g in groups:
        for c in g.columns:
            if c in table.columns:
                seen.setdefault(c, None)
    return list(seen)
