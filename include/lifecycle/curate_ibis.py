"""Section 2's row curation (cast, validate, de-duplicate, tokenise PII, join labels) as Ibis expressions.

The same definition runs on any Ibis backend with window functions and scalar UDFs: DuckDB in
process (locally) and PySpark (Spark 3.5, Glue 5.0). From the window's raw rows as read it
computes what :func:`include.lifecycle.collect.collect_and_label` computes from them:

* ``curated``: the rows that break no rule, the declared columns cast to the schema's dtypes
  (string/category: text with surrounding blanks stripped; int: int64; float: float64; bool;
  timestamp/date: UTC timestamps, dates truncated to the day), PII columns replaced by their
  tokens, plus ``_ds``, ``_source`` and ``_row``; order ``_ds``, time, key (as ``sort_curated``).
* ``quarantine``: every other row, the declared columns as text (PII tokenised), ``_rule``,
  ``_column``, ``_source`` and ``_ds``; ``broken``: the part of it that breaks a rule (not a
  duplicate key).
* ``dataset``: the curated rows old enough for their labels (``data.labels.maturity_days``) with
  the target column: ``label_value`` where a usable label holds the key, else ``negative_value``.

Input. ``raw``: one table of every row of every file of the window's partitions (for a single
file source: of the file) with the declared columns as read (text, as from CSV, or typed, as from
Parquet) and three bookkeeping columns: ``_ds`` (the partition date ``YYYY-MM-DD``; anything, e.g.
``all``, for a single file), ``_source`` (the file's URI, as collect.py names it) and ``_row`` (the
row's number within its file). ``history``: optional ``_ds`` and key of the curated partitions
before the window (what ``collect._history_keys`` reads). ``labels``: optional raw rows of the
label feed's partitions ``[window start, as_of + 1 day)`` with ``_ds``/``_source``/``_row``.
Reading stays in collect.py's reader (``frame_from_bytes``): encoding repair and CSV rows of the
wrong width (``malformed_row``) are found while reading files. The rows of the wrong width are not
rows here (the caller quarantines them); the values that were not UTF-8 may be passed in an
optional fourth bookkeeping column ``_encoding``: the names of the declared columns of that row
whose bytes were repaired, each followed by ``\x1f`` and the whole preceded by it (``\x1ftx\x1f``;
NULL: none); a named column then breaks rule ``encoding`` before its own rules, as in collect.py.
The caller selects the window's partitions.

Rules, exactly as ``collect._cast_and_validate`` orders them; the first broken one is recorded.
Column by column in schema order: ``encoding`` (with ``_encoding``), ``target_missing`` (the target column when there is no label
feed), ``not_null``, ``dtype:<t>`` (a present value that does not cast; for int and float also
"not a finite number", then for int "outside the int64 range" and a fraction), ``min:<v>``,
``max:<v>``, ``allowed``; then ``outside_partition`` (partitioned layout: the time column more
than ``data.partition_tolerance_hours`` outside the row's ``_ds`` day) or ``future_time`` (single
file: at or after ``as_of``); then ``duplicate_key``: only rows that break no other rule compete;
within a partition the first in file order (``_source``, then ``_row``) is kept, the others are
quarantined with their own file as ``_source``; a kept row whose key was kept on an earlier day
(of the window, or of ``history``) is quarantined too, with ``_source`` the partition's file when
it had one, else its folder. Missing means NULL, NaN in a numeric column, or text that is blank
after stripping. Labels: a label row is usable when its key is present, its arrival time casts
and is before ``as_of``, and it did not arrive before the time of the row it labels
(``label_before_event``); duplicate labels of a key do not change the join.

PII tokens are ``collect.tokenise_many``'s (keyed BLAKE2b, 96 bits, hex of the value's text),
computed by a scalar UDF (pyarrow on DuckDB, pandas on Spark) over the distinct values only and
joined back.

Known differences, stated so nobody is surprised:

* ``_reason`` is not produced: collect.py writes Python's ``repr`` of each raw value
  (``np.float64(1.5)``, ``Timestamp('...')``, quotes) and masks digit runs with a look-behind
  regular expression, neither of which SQL engines have; use ``_rule``/``_column``/``_source``;
* the label feed's own quarantine (its rows and counts) is not produced, only its effect on the join;
* text of non-text values (the quarantine's numbers and timestamps; a number or bool read into a
  string column) is the engine's text form, not pandas'; integers agree;
* text is parsed by the engine's ``TRY_CAST``: numbers and ISO 8601 timestamps agree with
  ``pd.to_numeric`` / ``pd.to_datetime(format="mixed")``; other layouts pandas accepts
  (e.g. ``03/01/2024``) are ``dtype:`` errors here; naive timestamps are taken as UTC only when
  the engine's session time zone is UTC;
* integer text beyond 2**53 in a file where another row of that column is not a whole number:
  pandas rounds it through float64, here it stays exact;
* blanks stripped are Unicode White_Space (Arrow's ``utf8_trim_whitespace``, what collect.py
  uses for Arrow text); Python's ``str.strip`` (collect.py's path for non-Arrow text) also strips
  the separators ``\\x1c``-``\\x1f``;
* a partition's ``_source`` for an earlier day's duplicate counts the files that have rows here;
  collect.py also counts files without rows (a partition of one data file and one empty file
  names its folder there, the file here);
* ``schema.extra_columns: keep`` is not supported (undeclared columns are dropped);
* an int value of 2**63 - 1 (and the others that round to 2**63 as float64) is quarantined as outside
  the int64 range, as in collect.py: both compare the value as float64, where it rounds to 2**63.

Within a partition the first row is the first in ``(_source, _row)`` order: collect.py reads a
partition's files in name order, and the URIs of one folder sort like the names. For a CSV file
``_row`` is the row's position in the frame collect.py's reader gives (unparsable rows left out).

Cost. ``curate(..., cache=True)`` materialises the stage once (:func:`cached`, which also works
around Ibis 12's PySpark cache not registering UDFs); without it each output computes it again.
On DuckDB the stage holds every row's typed and bookkeeping columns, so it needs several times the
memory of collect.py's Arrow frames, and the measured speed (bench/curate_engines.py,
bench/results/curate-engines-*.json) is below collect.py's on this project's 2-core machine: the
portable definition is for Spark on Glue, not (yet) a faster local ETL.

Pure Python, no airflow and no Spark import: the backend is whatever the input table is bound to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import ibis
import ibis.expr.datatypes as idt
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.lifecycle.history_ibis import _epoch_micros
from include.lifecycle.spec import ColumnSpec, Spec

ROW_COLUMNS = ("_ds", "_source", "_row")
"""The bookkeeping columns of the raw rows: partition date, file URI, row number within the file."""
ENCODING_COLUMN = "_encoding"
"""Optional bookkeeping column of the raw rows: the declared columns whose bytes were not UTF-8."""
ENCODING_SEP = "\x1f"

QUARANTINE_COLUMNS = ("_rule", "_column", "_source", "_ds")
UTC = idt.Timestamp(timezone="UTC", scale=6)
_TEXT = idt.string
_FLOAT = idt.float64
_INT = idt.int64
_MAX_FLOAT = np.finfo(np.float64).max
_INT64_LIMIT = 2.0**63
MICROS_PER_DAY = 86_400_000_000
# Unicode White_Space: what Arrow's utf8_trim_whitespace strips
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


@dataclass
class Curation:
    """The Ibis tables of one run's curation (see the module docstring)."""

    curated: ir.Table
    quarantine: ir.Table
    dataset: ir.Table | None
    stage: ir.Table  # every row cast, with its rule and duplicate flags: what the outputs derive from
    broken: ir.Table  # the quarantined rows that break a rule (the quarantine less the duplicate keys)


# --- backend specifics ----------------------------------------------------------------------------
def _backend(table: ir.Table) -> str | None:
    backends, _ = table._find_backends()
    return backends[0].name if len(backends) == 1 else None


@ibis.udf.scalar.builtin(name="btrim")
def _spark_btrim(value: str, characters: str) -> str:  # type: ignore[empty-body]
    """Spark's btrim(string, characters)."""


@ibis.udf.scalar.builtin(name="ord")
def _duckdb_ord(value: str) -> int:  # type: ignore[empty-body]
    """DuckDB's ord: the code point of the first character."""


# Blank stripping dominates the cost of casting on DuckDB: its trim(string, characters) with
# multi-byte characters and its regexp_replace with a class of them take about 2 s per million
# values on one core, 10x a copy. There the regular expression is only applied to values whose
# first or last character is a blank (found by code point: about 0.2 s per million values).
_TRIM = {"pyspark": _spark_btrim}
_WHITESPACE_CODES = [ord(c) for c in WHITESPACE]


def _strip(backend: str | None, text: ir.StringValue) -> ir.StringValue:
    """``text`` without surrounding Unicode White_Space: Spark's btrim with the character set; on
    DuckDB a regular expression where the first or last character is a blank; elsewhere the
    regular expression."""
    native = _TRIM.get(backend or "")
    if native is not None:
        return native(text, WHITESPACE)
    ws = "".join(f"\\x{{{ord(c):X}}}" for c in WHITESPACE)
    stripped = text.re_replace(f"^[{ws}]+|[{ws}]+$", "")
    if backend != "duckdb":
        return stripped
    edge = _duckdb_ord(text).isin(_WHITESPACE_CODES) | _duckdb_ord(text.right(1)).isin(_WHITESPACE_CODES)
    return ibis.cases((edge, stripped), else_=text)


_MEMO: dict[bytes, dict[str, str]] = {}


def _hash_values(values: list[str | None], key: bytes) -> list[str | None]:
    """``collect.tokenise_many``'s token of each value (None stays None), memoised per key."""
    memo = _MEMO.setdefault(key, {})
    keyed = hashlib.blake2b(key=key[:64], digest_size=12)
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        t = memo.get(v)
        if t is None:
            mac = keyed.copy()
            mac.update(v.encode())
            t = memo[v] = mac.hexdigest()
        out.append(t)
    return out


def _arrow_tokens(values: pa.Array, key_hex: pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not len(values):
        return pa.array([], type=pa.string())
    key = bytes.fromhex(key_hex[0].as_py())
    encoded = pc.dictionary_encode(values)
    tokens = pa.array(_hash_values(encoded.dictionary.to_pylist(), key), type=pa.string())
    return tokens.take(encoded.indices)


@ibis.udf.scalar.pyarrow(name="pii_token_arrow")
def _token_pyarrow(value: str, key_hex: str) -> str:
    """The keyed BLAKE2b token of each value (pyarrow UDF: DuckDB)."""
    return _arrow_tokens(value, key_hex)


@ibis.udf.scalar.pandas(name="pii_token_pandas")
def _token_pandas(value: str, key_hex: str) -> str:
    """The keyed BLAKE2b token of each value (pandas UDF: Spark)."""
    key = bytes.fromhex(str(key_hex.iloc[0])) if len(key_hex) else b""
    codes, uniques = pd.factorize(value, use_na_sentinel=True)
    tokens = np.asarray(_hash_values([str(u) for u in uniques], key) + [None], dtype=object)
    return pd.Series(tokens[codes], index=value.index, dtype=object)


@ibis.udf.scalar.python(name="pii_token_python")
def _token_python(value: str, key_hex: str) -> str:
    """The keyed BLAKE2b token of one value (any other backend)."""
    return _hash_values([value], bytes.fromhex(key_hex))[0]


_TOKEN = {"duckdb": _token_pyarrow, "pyspark": _token_pandas}


def _tokenise(table: ir.Table, columns: list[str], pii_key: bytes, backend: str | None) -> ir.Table:
    """``table`` with each of ``columns`` (text) replaced by its token: the distinct values are
    hashed (once each) and joined back."""
    if not pii_key:
        raise ValueError("the PII hash key is empty: set the Airflow variable ml_pii_hash_key")
    udf = _TOKEN.get(backend or "", _token_python)
    key_hex = ibis.literal(pii_key.hex())
    order = table.columns
    for c in columns:
        values = table.select(__v=table[c].cast(_TEXT)).filter(ibis._.__v.notnull()).distinct()
        tokens = values.mutate(__tok=udf(values.__v, key_hex))
        joined = table.left_join(tokens, table[c].cast(_TEXT) == tokens.__v)
        table = joined.select(*[joined.__tok.name(c) if n == c else joined[n] for n in order])
    return table


def cached(table: ir.Table) -> ir.Table:
    """``table.cache()`` with its UDFs registered first: Ibis 12's PySpark backend caches a table
    without registering them (Spark then fails with UNRESOLVED_ROUTINE)."""
    backends, _ = table._find_backends()
    if len(backends) == 1 and hasattr(backends[0], "_register_udfs"):
        backends[0]._register_udfs(table)
    return table.cache()


# --- casting and the column rules -----------------------------------------------------------------
Rule = tuple[ir.BooleanValue, str, str]  # (broken, rule, column)


def _is_text(t: idt.DataType) -> bool:
    return t.is_string()


def _number_text(raw: ir.Value) -> ir.StringValue:
    """A float as text the way collect.py shows a float in a string column: whole numbers as integers."""
    whole = raw.notnull() & ~raw.isnan() & (raw.abs() <= _MAX_FLOAT) & ((raw % 1.0) == 0.0) & (raw.abs() < 2.0**63)
    return whole.ifelse(raw.cast(_INT).cast(_TEXT), raw.cast(_TEXT))


def _present_text(backend: str | None, raw: ir.StringValue) -> ir.StringValue:
    """Text stripped of surrounding blanks, NULL when nothing is left (missing, as in collect.py)."""
    return _strip(backend, raw).nullif("")


def _column(
    raw: ir.Value, col: ColumnSpec, *, target: str | None, backend: str | None, text: ir.StringValue | None = None
) -> tuple[ir.Value, list[Rule]]:
    """One declared column cast, and its rules in collect.py's order (each "broken" condition may
    be NULL, which a CASE reads as not broken). ``text``: for a text column, its
    :func:`_present_text` computed beforehand (a column of a projection below: SQL would repeat
    the expression in every rule that uses it)."""
    rt = raw.type()
    raw_missing = (raw.isnull() | raw.isnan()) if rt.is_floating() else raw.isnull()
    if _is_text(rt):
        if text is None:
            text = _present_text(backend, raw)
        raw_missing = text.isnull()
    else:
        text = None
    rules: list[Rule] = []
    name = col.name
    if name == target:
        rules.append((raw_missing, "target_missing", name))
    if not col.nullable:
        rules.append((raw_missing, "not_null", name))
    dtype_rule = f"dtype:{col.dtype}"
    value: ir.Value
    if col.dtype in ("string", "category"):
        if text is not None:
            value = text
        elif rt.is_floating():
            value = raw_missing.ifelse(ibis.null(_TEXT), _number_text(raw))
        else:
            as_text = _strip(backend, raw.cast(_TEXT))
            value = (raw.isnull() | (as_text == "")).ifelse(ibis.null(_TEXT), as_text)
        if col.allowed is not None:
            rules.append((value.notnull() & ~value.isin(list(col.allowed)), "allowed", name))
        return value, rules
    if col.dtype in ("int", "float"):
        if text is not None:
            parsed = text.try_cast(_FLOAT)
            number = parsed.isnan().ifelse(ibis.null(_FLOAT), parsed)
        elif rt.is_numeric() or rt.is_boolean():
            number = raw.cast(_FLOAT)
            number = number.isnan().ifelse(ibis.null(_FLOAT), number)
        else:
            raise ValueError(f"column {name!r}: raw values of type {rt} cannot be cast to {col.dtype} here")
        now_missing = number.isnull()
        present = ~now_missing
        rules.append((now_missing & ~raw_missing, dtype_rule, name))
        finite = number.abs() <= _MAX_FLOAT  # NULL for NULL; false for +-inf
        rules.append((present & ~finite, dtype_rule, name))
        if col.dtype == "int":
            out_of_range = (number >= _INT64_LIMIT) | (number < -_INT64_LIMIT)
            fraction = (number % 1.0) != 0.0
            rules.append((present & out_of_range, dtype_rule, name))
            rules.append((present & fraction, dtype_rule, name))
            fits = present & finite & ~out_of_range & ~fraction
            if text is not None:
                exact = text.re_search(r"^[+-]?[0-9]+$").ifelse(text.try_cast(_INT), number.cast(_INT))
            elif rt.is_integer():
                exact = raw.cast(_INT)
            else:
                exact = number.cast(_INT)
            value = fits.ifelse(exact, ibis.null(_INT))
        else:
            value = number
        if col.min is not None:
            rules.append((value < col.min, f"min:{col.min:g}", name))
        if col.max is not None:
            rules.append((value > col.max, f"max:{col.max:g}", name))
        return value, rules
    if col.dtype == "bool":
        if rt.is_boolean():
            value = raw
        else:
            lowered = (text if text is not None else _strip(backend, raw.cast(_TEXT))).lower()
            value = ibis.cases(*[(lowered == k, v) for k, v in _BOOL_TEXT.items()], else_=ibis.null(idt.boolean))
        rules.append((value.isnull() & ~raw_missing, dtype_rule, name))
        return value, rules
    # timestamp / date
    if rt.is_timestamp() or rt.is_date():
        value = raw.cast(UTC)
    elif text is not None:
        value = text.try_cast(UTC)
    else:
        raise ValueError(f"column {name!r}: raw values of type {rt} cannot be cast to {col.dtype} here")
    if col.dtype == "date":
        value = value.truncate("D")
    rules.append((value.isnull() & ~raw_missing, dtype_rule, name))
    return value, rules


def _micros_literal(ts: pd.Timestamp) -> int:
    return int(ts.value // 1000)


def _utc(as_of: dt.datetime) -> pd.Timestamp:
    ts = pd.Timestamp(as_of)
    return ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")


def _time_rules(table: ir.Table, typed: dict[str, ir.Value], spec: Spec, as_of: pd.Timestamp) -> list[Rule]:
    """``outside_partition`` (partitioned) or ``future_time`` (single file) of the time column."""
    name = spec.data.time_column
    if not name or spec.schema_.column(name).dtype not in ("timestamp", "date"):
        return []
    t = _epoch_micros(table, typed[name])
    if spec.data.layout == "partitioned":
        tol = round(spec.data.partition_tolerance_hours * 3_600_000_000)
        ds = table._ds if table._ds.type().is_date() else table._ds.cast(idt.date)
        day = ds.delta(ibis.date(1970, 1, 1), unit="day").cast(_INT) * MICROS_PER_DAY
        return [(((t < day - tol) | (t >= day + MICROS_PER_DAY + tol)), "outside_partition", name)]
    return [(t >= _micros_literal(as_of), "future_time", name)]


# --- the whole curation ---------------------------------------------------------------------------
def curate(
    raw: ir.Table,
    spec: Spec,
    *,
    as_of: dt.datetime,
    pii_key: bytes,
    history: ir.Table | None = None,
    labels: ir.Table | None = None,
    cache: bool = False,
    cross_partition: bool = True,
) -> Curation:
    """The curated rows, the quarantine and the labelled data set of one run (module docstring).

    ``cache``: materialise the stage every output is derived from (cast, rules, duplicates, tokens)
    once (:func:`cached`), so that the three outputs do not each compute it again.
    ``cross_partition=False``: no key is checked against earlier days (``history`` is not used); for
    a caller that checks the keys of the window itself, e.g. with partitions it did not curate again.
    """
    schema = spec.schema_
    if schema.extra_columns == "keep":
        raise ValueError("schema.extra_columns: keep is not supported by the Ibis curation")
    missing = [c for c in (*schema.names, *ROW_COLUMNS) if c not in raw.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the raw rows")
    backend = _backend(raw)
    as_of_ts = _utc(as_of)
    key = spec.data.key
    target = spec.problem.target if spec.data.labels is None else None
    pii = [c.name for c in schema.columns if c.pii]

    # stage 1: every declared column cast, the first broken rule of each row, the raw text
    # the text columns stripped once, in a projection of their own (SQL repeats an expression in
    # every rule that uses it: blank stripping would be computed six times per value)
    texts = {
        f"__t_{i}": _present_text(backend, raw[c.name])
        for i, c in enumerate(schema.columns)
        if _is_text(raw[c.name].type())
    }
    encoding = [ENCODING_COLUMN] if ENCODING_COLUMN in raw.columns else []
    raw = raw.select(*ROW_COLUMNS, *encoding, *schema.names, **texts)
    typed: dict[str, ir.Value] = {}
    rules: list[Rule] = []
    for i, col in enumerate(schema.columns):
        text = raw[f"__t_{i}"] if f"__t_{i}" in texts else None
        value, col_rules = _column(raw[col.name], col, target=target, backend=backend, text=text)
        typed[col.name] = value
        if encoding:  # bytes that were not UTF-8 come first, as in collect.py
            rules.append(
                (raw[ENCODING_COLUMN].contains(f"{ENCODING_SEP}{col.name}{ENCODING_SEP}"), "encoding", col.name)
            )
        rules += col_rules
    rules += _time_rules(raw, typed, spec, as_of_ts)
    why = ibis.cases(*[(broken, i) for i, (broken, _, _) in enumerate(rules)], else_=ibis.null(idt.int16))
    # the raw values as read, made text only for the quarantined rows
    raw_values = {f"__raw_{i}": raw[c.name] for i, c in enumerate(schema.columns)}
    stage = raw.select(*ROW_COLUMNS, **typed, __why=why, **raw_values)
    valid = stage.__why.isnull()
    stage = stage.mutate(
        __valid=valid,  # the raw values are kept for the broken rows only (the others show typed values)
        **{name: valid.ifelse(ibis.null(stage[name].type()), stage[name]) for name in raw_values},
    )
    if pii:
        stage = _tokenise(stage, pii, pii_key, backend)

    # stage 2: duplicate keys among the valid rows, within the partition and on earlier days
    if key is not None:
        k = stage[key]
        w = ibis.window(group_by=[stage._ds, k, stage.__valid], order_by=[stage._source, stage._row])
        stage = stage.mutate(__in_dup=stage.__valid & (ibis.row_number().over(w) > 0))
        days = stage.filter(stage.__valid).select(__k=stage[key], __d=stage._ds.cast(_TEXT))
        if not cross_partition:
            days = days.filter(ibis.literal(False))
        elif history is not None and spec.data.layout == "partitioned":
            days = days.union(history.select(__k=history[key].cast(k.type()), __d=history._ds.cast(_TEXT)))
        first = days.filter(days.__k.notnull()).group_by("__k").aggregate(__first=ibis._.__d.min())
        joined = stage.left_join(first, stage[key] == first.__k)
        if spec.data.layout == "partitioned":
            earlier = joined.__first.notnull() & (joined.__first < joined._ds.cast(_TEXT))
            cross = joined.__valid & ~joined.__in_dup & earlier.fill_null(False)
        else:
            cross = ibis.literal(False)
        stage = joined.select(*stage.columns, __cross=cross)
    else:
        stage = stage.mutate(__in_dup=ibis.literal(False), __cross=ibis.literal(False))
    stage = stage.mutate(__keep=stage.__valid & ~stage.__in_dup & ~stage.__cross)
    if cache:
        stage = cached(stage)

    # outputs
    curated = _ordered(stage.filter(stage.__keep).select(*schema.names, *ROW_COLUMNS), spec)
    parts = _quarantine(stage, spec, rules, pii, pii_key, backend)
    quarantine = _union(parts)
    dataset = None
    if spec.data.labels is not None and key is not None:
        kept = stage.filter(stage.__keep).select(*schema.names, *ROW_COLUMNS)
        dataset = _dataset(kept, spec, labels, as_of_ts, pii_key, backend)
    return Curation(curated, quarantine, dataset, stage, parts[0])


def _union(parts: list[ir.Table]) -> ir.Table:
    out = parts[0]
    for p in parts[1:]:
        out = out.union(p)
    return out


def _raw_text(raw: ir.Value) -> ir.StringValue:
    """A raw value as the quarantine shows it (pandas ``astype("string")``: NaN is missing)."""
    if raw.type().is_floating():
        return raw.isnan().ifelse(ibis.null(_TEXT), raw.cast(_TEXT))
    return raw.cast(_TEXT)


def _quarantine(
    stage: ir.Table, spec: Spec, rules: list[Rule], pii: list[str], pii_key: bytes, backend: str | None
) -> list[ir.Table]:
    """The quarantined rows: [rows that break a rule, duplicates within a partition, keys kept on an
    earlier day] (the last two only with a key; the last only for a partitioned source)."""
    schema = spec.schema_
    names = schema.names
    key = spec.data.key
    rule_of = ibis.cases(*[(stage.__why == i, r) for i, (_, r, _) in enumerate(rules)], else_=ibis.null(_TEXT))
    column_of = ibis.cases(*[(stage.__why == i, c) for i, (_, _, c) in enumerate(rules)], else_=ibis.null(_TEXT))
    broken = stage.filter(~stage.__valid)
    broken = broken.select(
        **{c: _raw_text(broken[f"__raw_{i}"]) for i, c in enumerate(names)},
        _rule=rule_of,
        _column=column_of,
        _source=broken._source,
        _ds=broken._ds.cast(_TEXT),
    )
    if pii:
        broken = _tokenise(broken, pii, pii_key, backend)
    if key is None:
        return [broken]
    typed_text = {c: _typed_text(stage[c]) for c in names}
    within = stage.filter(stage.__in_dup).select(
        **typed_text,
        _rule=ibis.literal("duplicate_key"),
        _column=ibis.literal(key),
        _source=stage._source,
        _ds=stage._ds.cast(_TEXT),
    )
    parts = [broken, within]
    if spec.data.layout == "partitioned":
        # a partition of one file shows that file, else its folder (as collect.py's shown_source)
        files = stage.group_by(__d=stage._ds.cast(_TEXT)).aggregate(
            __n=stage._source.nunique(), __one=stage._source.min()
        )
        cross = stage.filter(stage.__cross)
        cross = cross.left_join(files, cross._ds.cast(_TEXT) == files.__d)
        folder = cross.__one.re_replace(r"/[^/]*$", "")
        parts.append(
            cross.select(
                **{c: _typed_text(cross[c]) for c in names},
                _rule=ibis.literal("duplicate_key"),
                _column=ibis.literal(key),
                _source=(cross.__n == 1).ifelse(cross.__one, folder),
                _ds=cross._ds.cast(_TEXT),
            )
        )
    return parts


def _typed_text(value: ir.Value) -> ir.StringValue:
    return value.cast(_TEXT)


def _ordered(table: ir.Table, spec: Spec) -> ir.Table:
    """Rows in partition order, then time and key order (``sort_curated``: missing last)."""
    order = [ibis.asc("_ds")]
    if spec.data.time_column:
        order += [ibis.asc(c, nulls_first=False) for c in (spec.data.time_column, spec.data.key) if c]
    return table.order_by(order)


def _dataset(
    rows: ir.Table, spec: Spec, labels: ir.Table | None, as_of: pd.Timestamp, pii_key: bytes, backend: str | None
) -> ir.Table:
    """The curated rows old enough for their labels, with the target column (positive where a
    usable label holds the key)."""
    lab = spec.data.labels
    key = spec.data.key
    assert lab is not None and key is not None
    time_column = spec.data.time_column
    target_type = idt.dtype(np.asarray([lab.label_value, lab.negative_value]).dtype)
    out = rows
    if lab.maturity_days and time_column:
        cutoff = (as_of - pd.Timedelta(days=lab.maturity_days)).to_pydatetime()
        out = out.filter((out[time_column] < cutoff).fill_null(False))
    positive: ir.BooleanValue = ibis.literal(False)
    if labels is not None:
        key_spec = spec.schema_.column(key)
        label_key, _ = _column(
            labels[lab.key], ColumnSpec(name=lab.key, dtype=key_spec.dtype), target=None, backend=backend
        )
        arrived, _ = _column(
            labels[lab.arrived_at], ColumnSpec(name=lab.arrived_at, dtype="timestamp"), target=None, backend=backend
        )
        feed = labels.select(__lk=label_key, __arrived=arrived)
        feed = feed.filter(feed.__lk.notnull() & feed.__arrived.notnull() & (feed.__arrived < as_of.to_pydatetime()))
        if key in spec.pii_columns:
            feed = _tokenise(feed, ["__lk"], pii_key, backend)
        if time_column:
            # a label that arrived before the event it labels is quarantined by collect.py (label_before_event)
            events = rows.select(__ek=rows[key], __et=rows[time_column])
            j = feed.left_join(events, feed.__lk == events.__ek)
            before = (j.__ek.notnull() & j.__et.notnull() & (j.__arrived < j.__et)).fill_null(False)
            feed = j.filter(~before).select("__lk")
        keys = feed.distinct()
        positive = out[key].isin(keys.__lk).fill_null(False)
    label = positive.ifelse(
        ibis.literal(lab.label_value, type=target_type), ibis.literal(lab.negative_value, type=target_type)
    )
    return _ordered(out.select(*spec.schema_.names, *ROW_COLUMNS, **{spec.problem.target: label}), spec)
