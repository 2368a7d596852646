"""Section 2, collect and label: the ETL from landing data to a curated, labelled data set.

Per input partition: cast to the declared schema, quarantine rows that break it (with the
rule, the column and the value), de-duplicate on the key, tokenise PII with a keyed hash and
write the curated partition. Per run: read the curated partitions of the window ending at
the data interval end, quarantine keys already delivered on an earlier day, and join the labels
that had arrived by then (validated like the data). Input is never modified; rows in = rows
curated + rows quarantined, per partition and in total, and label rows in = used + quarantined
+ unmatched.

Every input file is accounted for, in the summary's ``files`` list (path, format, rows, outcome):

* Under a partitioned source every entry is a ``ds=YYYY-MM-DD`` folder of a real date, or hidden
  (a name starting with ``.`` or ``_``, e.g. ``_SUCCESS``: listed as ``ignored``). Anything else
  (``ds=2026-10-6``, ``dt=2026-10-17``, ``ds=2026-10-32``, a trailing blank, a loose file) is an
  :class:`InputFileError` naming it: its rows cannot be placed in a day, so the run stops rather
  than leave them out.
* Inside a partition every entry is a file of the spec's format (``.parquet`` / ``.csv``) or
  hidden; a file of another format or a nested folder is an :class:`InputFileError`.
* A file that cannot be read (zero bytes, truncated, not Parquet, corrupt compression, not UTF-8,
  broken CSV quoting, no header) is an :class:`InputFileError` whose message starts with its URI
  and says what is wrong; it is never retried (a ``ValueError``). A CSV row with more or fewer
  fields than the header is quarantined (``malformed_row``, its text is not copied) unless most
  rows are, which is an error (another delimiter).
* A file with zero rows is read and reported (a warning). A partition whose input now holds zero
  rows never replaces a curated partition built from rows: :class:`EmptyInputError`.
* A curated partition is re-used only when the content of each input file (sha256 of its bytes;
  the ETag on an object store), the schema, the checks and the PII key are unchanged.

Row rules, the first broken one is recorded: ``encoding`` (bytes that are not UTF-8),
``target_missing``, ``not_null``, ``dtype:<type>`` (including inf, fractions and values outside
int64 in int columns, inf in float columns), ``min:<v>``, ``max:<v>``, ``allowed``,
``outside_partition`` (``time_column`` more than ``data.partition_tolerance_hours`` outside the
partition's day), ``future_time`` (single file: after the run's as_of), ``duplicate_key`` (in the
partition, or a key delivered on an earlier day), ``malformed_row`` (CSV). Label rules:
``not_null``, ``dtype:<type>``, ``encoding``, ``label_before_event``, ``duplicate_key``.
Quarantine files hold the declared columns only, PII tokenised; reasons never show a PII value
and mask long digit runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from include.lifecycle.dataset import positive_mask
from include.lifecycle.layout import RunLayout
from include.lifecycle.spec import ColumnSpec, SchemaSpec, Spec
from include.lifecycle.store import Store, concat_tables

Log = Callable[[str], None]
_DS = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")
ALL = "all"  # the single "partition" of a single-file source
CURATION_RULES = 2
"""Version of the curation rules, part of every manifest fingerprint: a change of the rules
re-curates partitions curated by older rules."""
HIDDEN_PREFIXES = (".", "_")
MALFORMED = "malformed_row"


class SchemaError(ValueError):
    """A whole input file does not fit the spec (e.g. a declared column is missing)."""


class InputFileError(ValueError):
    """An input file or folder cannot be used as it is (unreadable, another format than the spec's,
    an invalid partition folder). The message starts with its URI and says what is wrong; being a
    ``ValueError`` it is not retried."""


class EmptyInputError(InputFileError):
    """A partition's input holds zero rows where a curated partition built from rows exists."""


def _noop(_: str) -> None:
    pass


def _utc(as_of: dt.datetime) -> pd.Timestamp:
    """``as_of`` as a UTC timestamp; a naive datetime (e.g. ``--as-of 2026-11-01``) is taken as UTC."""
    ts = pd.Timestamp(as_of)
    return ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")


# --- masking ---------------------------------------------------------------------------------
_LONG_DIGITS = re.compile(r"(?<!\d)(?:\d{13,}|\d{4}(?:[ -]\d{4}){3})(?!\d)")


def mask_digits(text: str) -> str:
    """``text`` with every run of 13 or more digits (card numbers; also four groups of four with
    blanks or dashes) masked but for its last 4 digits: ``4111111111111111`` -> ``************1111``."""

    def masked(m: re.Match[str]) -> str:
        run = m.group()
        return re.sub(r"\d", "*", run[:-4]) + run[-4:]

    return _LONG_DIGITS.sub(masked, text)


def _short(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut and masked (never a whole data line)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return mask_digits(text if len(text) <= limit else text[:limit] + "...")


def _names(columns: Any, known: set[str]) -> list[str]:
    """Column names for a message: names that are not declared are masked like values (a header
    row that is really data must not show a card number)."""
    return [c if c in known else mask_digits(str(c)) for c in columns]


# --- the input files -------------------------------------------------------------------------
def _hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIXES)


def _partition_problem(name: str, is_dir: bool) -> str:
    """Why ``name`` (directly under a partitioned source) is not a partition folder; "" when it is."""
    if not is_dir:
        return "a file directly under a partitioned source: data files must lie in ds=YYYY-MM-DD folders"
    if name != name.strip():
        return "not a partition folder: the name has blanks around it (expected ds=YYYY-MM-DD)"
    key, sep, value = name.partition("=")
    if not sep:
        return "not a partition folder (expected ds=YYYY-MM-DD; names starting with . or _ are ignored)"
    if key != "ds":
        return f"not a partition folder: the key is {key!r}, not 'ds' (expected ds=YYYY-MM-DD)"
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"not a partition folder: {value!r} is not a YYYY-MM-DD date"
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return f"not a partition folder: {value} is not a real date"
    return ""


@dataclass
class SourceScan:
    """The partitions found directly under a source, and the hidden entries left out."""

    partitions: list[str]
    ignored: list[dict[str, Any]] = field(default_factory=list)
    exists: bool = True


def scan_partitions(source: Store, what: str = "data.source") -> SourceScan:
    """Every entry directly under a partitioned source: a valid ``ds=`` folder (its date is listed),
    hidden (listed as ignored) or an :class:`InputFileError` naming it and what is wrong."""
    if not source.exists():
        return SourceScan([], [], exists=False)
    parts: list[str] = []
    ignored: list[dict[str, Any]] = []
    for name, is_dir in source.entries():
        if _hidden(name):
            ignored.append({"path": name, "outcome": "ignored", "reason": "hidden: the name starts with . or _"})
            continue
        why = _partition_problem(name, is_dir)
        if why:
            raise InputFileError(mask_digits(f"{source.uri(name)}: {why} ({what})"))
        parts.append(name[3:])
    return SourceScan(sorted(parts), ignored)


def partition_files(source: Store, ds: str, fmt: str, what: str = "data") -> tuple[list[str], list[dict[str, Any]]]:
    """The data files of one ``ds=`` partition (names) and its hidden entries (left out, listed).

    A nested folder or a file of another format than ``fmt`` is an :class:`InputFileError`.
    """
    rel = f"ds={ds}"
    names: list[str] = []
    ignored: list[dict[str, Any]] = []
    for name, is_dir in source.entries(rel):
        if _hidden(name):
            ignored.append(
                {"path": f"{rel}/{name}", "outcome": "ignored", "reason": "hidden: the name starts with . or _"}
            )
            continue
        uri = mask_digits(source.uri(rel, name))
        if is_dir:
            raise InputFileError(f"{uri}: a folder inside partition ds={ds}; data files must lie directly in it")
        if not name.endswith(f".{fmt}"):
            ext = name.rsplit(".", 1)[1] if "." in name.strip(".") else ""
            kind = f"a .{ext} file" if ext else f"a file without the .{fmt} extension"
            raise InputFileError(
                f"{uri}: {kind} in a {fmt} source ({what}.format is {fmt}); convert it to {fmt} "
                f"or move it out of the source"
            )
        names.append(name)
    return names, ignored


def list_partitions(source: Store) -> list[str]:
    """The ``YYYY-MM-DD`` dates of the ``ds=`` folders under a source, sorted (other entries are
    left out: for stores this module writes; the ETL checks its sources with :func:`scan_partitions`)."""
    return sorted(m.group(1) for name in source.ls() if (m := _DS.match(name)))


def window_dates(as_of: dt.datetime, lookback_days: int) -> tuple[str, str]:
    """[start, end) dates of the partitions a run uses: the lookback days before ``as_of``."""
    end = as_of.date()  # a day's partition is complete once its day has ended
    start = end - dt.timedelta(days=lookback_days)
    return start.isoformat(), end.isoformat()


def read_partition_files(
    source: Store, ds: str, fmt: str, columns: list[str] | None = None
) -> list[tuple[str, pd.DataFrame]]:
    """The files of one ``ds=`` partition; ``columns``: only these of a Parquet file that has them all."""
    rel = f"ds={ds}"
    names, _ = partition_files(source, ds, fmt)
    return [(source.uri(rel, n), read_file(source, f"{rel}/{n}", fmt, columns)) for n in names]


def read_input_bytes(store: Store, rel: str, *, missing: str = "no such file", folder: str = "a folder") -> bytes:
    """The bytes of one input file; a missing file or a folder is an :class:`InputFileError` naming it."""
    uri = store.uri(rel)
    try:
        return store.read_bytes(rel)
    except FileNotFoundError:
        raise InputFileError(f"{mask_digits(uri)}: {missing}") from None
    except IsADirectoryError:
        raise InputFileError(f"{mask_digits(uri)}: {folder}") from None


def read_file(store: Store, rel: str, fmt: str, columns: list[str] | None = None) -> pd.DataFrame:
    """One input file as a frame; an unreadable file is an :class:`InputFileError` naming it."""
    data = read_input_bytes(store, rel, folder=f"a folder, not a {fmt} file")
    return frame_from_bytes(data, store.uri(rel), fmt, columns)


@dataclass
class ReadInfo:
    """What reading found besides the frame: values that were not UTF-8 (shown with ``\\x`` escapes
    in the frame) and CSV rows that could not be parsed."""

    invalid_utf8: dict[str, np.ndarray] = field(default_factory=dict)  # column -> row positions
    malformed: list[tuple[int | None, int, int]] = field(default_factory=list)  # (row number, expected, found)


_READ_INFO: dict[int, ReadInfo] = {}


def _remember(df: pd.DataFrame, info: ReadInfo) -> None:
    """Keep ``info`` for as long as ``df`` lives (never in ``df.attrs``: pyarrow writes those to files)."""
    key = id(df)
    _READ_INFO[key] = info
    weakref.finalize(df, _READ_INFO.pop, key, None)


def read_info(df: pd.DataFrame) -> ReadInfo | None:
    """What :func:`frame_from_bytes` found reading ``df`` (None: nothing to report, or not read from a file)."""
    return _READ_INFO.get(id(df))


def frame_from_bytes(data: bytes, uri: str, fmt: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The bytes of one CSV/Parquet file as a frame (``columns``: only these of a Parquet file that
    has them all). An unreadable file is an :class:`InputFileError`; values that are not UTF-8 and
    CSV rows of the wrong width are recorded (:func:`read_info`) for the quarantine."""
    shown = mask_digits(uri)
    malformed: list[tuple[int | None, int, int]] = []
    if fmt == "parquet":
        table = _parquet_table(data, shown, columns)
    elif fmt == "csv":
        table, malformed = _csv_table(data, shown)
    else:  # pragma: no cover - the spec allows only these
        raise InputFileError(f"{shown}: unknown format {fmt!r}")
    _refuse_duplicate_names(table.column_names, shown)
    table, invalid = _repair_text(table)
    try:
        df = table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise InputFileError(
            f"{shown}: its columns cannot be converted ({type(exc).__name__}: {_short(exc)})"
        ) from None
    if invalid or malformed:
        _remember(df, ReadInfo(invalid, malformed))
    return df


def _parquet_problem(exc: BaseException) -> str:
    msg = str(exc)
    low = msg.lower()
    if "size is 0 bytes" in low:
        return "empty file (0 bytes): not a Parquet file"
    if "magic bytes not found" in low:
        return "not a Parquet file (magic bytes not found in footer: truncated, or another format)"
    if "compress" in low or "snappy" in low or "zstd" in low or "gzip" in low or "lz4" in low:
        return f"corrupt compressed data in the Parquet file ({_short(exc)})"
    return f"unreadable Parquet file ({type(exc).__name__}: {_short(exc)})"


def _parquet_table(data: bytes, uri: str, columns: list[str] | None) -> pa.Table:
    if not data:
        raise InputFileError(f"{uri}: empty file (0 bytes): not a Parquet file")
    try:
        names = pq.read_schema(pa.BufferReader(data)).names
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise InputFileError(f"{uri}: {_parquet_problem(exc)}") from None
    _refuse_duplicate_names(names, uri)
    wanted = columns if columns is not None and all(c in names for c in columns) else None
    try:
        return pq.read_table(pa.BufferReader(data), columns=wanted)
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        raise InputFileError(f"{uri}: {_parquet_problem(exc)}") from None


def _refuse_duplicate_names(names: list[str], uri: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFileError(f"{uri}: column(s) {_names(dup, set())} appear more than once")


def _csv_table(data: bytes, uri: str) -> tuple[pa.Table, list[tuple[int | None, int, int]]]:
    """A CSV file as an Arrow table of text columns, and the rows that could not be parsed.

    Every value is read as text (casting is the schema's job); only an empty field is missing.
    Parser messages are never passed on: they quote the line, which may hold PII.
    """
    if not data:
        raise InputFileError(f"{uri}: empty file (0 bytes): no header line")
    if not data.strip():
        raise InputFileError(f"{uri}: no columns: the file holds only blank lines, no header line")
    if data.count(b'"') % 2:
        raise InputFileError(f"{uri}: broken CSV quoting: a quoted field is never closed (an odd number of '\"')")
    bad: list[tuple[int | None, int, int]] = []

    def invalid_row(row: Any) -> str:
        bad.append((row.number, row.expected_columns, row.actual_columns))
        return "skip"

    # the header is read as row 0 of autogenerated columns f0, f1, ..., all text: no type is inferred
    width = data[:65536].count(b",") + data[:65536].count(b"\n") + 2
    try:
        table = pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(autogenerate_column_names=True, use_threads=False),  # row numbers
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row),
            convert_options=pcsv.ConvertOptions(
                column_types={f"f{i}": pa.string() for i in range(width)},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data.count(b"\n", 0, err.start) + 1
            raise InputFileError(
                f"{uri}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); the file must be UTF-8"
            ) from None
        raise InputFileError(
            f"{uri}: not a readable CSV file (the parser stopped; check quoting and delimiter)"
        ) from None
    if any(not pa.types.is_string(t) for t in table.schema.types) or table.num_rows == 0:
        raise InputFileError(f"{uri}: no header line that the CSV parser can read")
    header = ["" if v is None else str(v) for v in (table.column(i)[0].as_py() for i in range(table.num_columns))]
    body = table.slice(1).rename_columns(header)
    bad.sort(key=lambda b: (b[0] is None, b[0] or 0))
    if bad and len(bad) > body.num_rows:
        number, expected, actual = bad[0]
        where = f"row {number}" if number is not None else "a row"
        raise InputFileError(
            f"{uri}: {len(bad)} of {len(bad) + body.num_rows} rows do not have the header's {expected} fields "
            f"({where} has {actual}): another delimiter than ',' or broken quoting"
        )
    return body, bad


def _invalid_utf8(arr: pa.Array) -> list[int]:
    """Positions of the values of a string array that are not UTF-8 (found by halving, each half
    validated by Arrow: no Python per value except in the small slices that hold one)."""
    out: list[int] = []
    stack = [(0, len(arr))]
    as_bytes = arr.view(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
    while stack:
        lo, hi = stack.pop()
        try:
            arr.slice(lo, hi - lo).validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        if hi - lo <= 32:
            for i in range(lo, hi):
                raw = as_bytes[i].as_py()
                if raw is not None:
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError:
                        out.append(i)
            continue
        mid = (lo + hi) // 2
        stack += [(mid, hi), (lo, mid)]
    return sorted(out)


def _repair_text(table: pa.Table) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Text columns as plain (not dictionary, not binary) Arrow strings, values that are not UTF-8
    replaced by their text with ``\\x`` escapes; returns the table and, per column, those rows."""
    invalid: dict[str, np.ndarray] = {}
    columns = list(table.columns)
    changed = False
    for i, fld in enumerate(table.schema):
        col, typ = columns[i], fld.type
        if pa.types.is_dictionary(typ):
            col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], type=typ.value_type)
            typ, changed = typ.value_type, True
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):  # text stored without its UTF-8 annotation
            typ = pa.large_string() if pa.types.is_large_binary(typ) else pa.string()
            col = pa.chunked_array([c.view(typ) for c in col.chunks], type=typ)
            changed = True
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            columns[i] = col
            continue
        chunks, at, bad_rows = [], 0, []
        for chunk in col.chunks:
            try:
                chunk.validate(full=True)
                chunks.append(chunk)
            except pa.ArrowInvalid:
                bad = _invalid_utf8(chunk)
                raw_type = pa.large_binary() if pa.types.is_large_string(typ) else pa.binary()
                as_bytes = chunk.view(raw_type)
                fixed = [as_bytes[j].as_py().decode("utf-8", "backslashreplace").encode() for j in bad]
                mask = np.zeros(len(chunk), dtype=bool)
                mask[bad] = True
                repaired = pc.replace_with_mask(as_bytes, pa.array(mask), pa.array(fixed, type=raw_type))
                chunks.append(repaired.view(typ))
                bad_rows += [at + j for j in bad]
                changed = True
            at += len(chunk)
        if bad_rows:
            invalid[fld.name] = np.asarray(bad_rows, dtype=np.int64)
            col = pa.chunked_array(chunks, type=typ)
        columns[i] = col
    if not changed:
        return table, invalid
    schema = pa.schema(
        [pa.field(f.name, c.type, f.nullable) for f, c in zip(table.schema, columns, strict=True)],
        metadata=table.schema.metadata,
    )
    return pa.Table.from_arrays(columns, schema=schema), invalid


def read_single_source(source: str, fmt: str) -> tuple[str, pd.DataFrame]:
    """A single CSV/Parquet file or a bundled ``sklearn:<loader>`` data set."""
    if fmt == "sklearn":
        import sklearn.datasets

        name = source.split(":", 1)[1]
        loader = getattr(sklearn.datasets, name, None)
        if loader is None or not name.startswith("load_"):
            raise SchemaError(f"{source}: not a bundled scikit-learn data set (use sklearn:load_<name>)")
        return source, loader(as_frame=True).frame
    store, name = _single_store(source)
    return store.uri(name), read_file(store, name, fmt)


def _single_store(source: str) -> tuple[Store, str]:
    parent, _, name = source.rstrip("/").rpartition("/")
    return Store.from_uri(parent or "."), name


# --- casting and validation ------------------------------------------------------------------
@dataclass
class CastResult:
    curated: pd.DataFrame
    quarantined: pd.DataFrame
    by_rule: dict[str, int] = field(default_factory=dict)
    dropped_columns: list[str] = field(default_factory=list)
    rows_in: int = 0  # the rows of the input: the frame's and any CSV rows that could not be parsed


def _arrow_text(values: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow data of an Arrow-backed text column (pandas ``str`` or ``string[pyarrow]``), else None."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        return values.array.__arrow_array__()
    return None


def _text_series(values: pa.ChunkedArray | pa.Array, index: pd.Index) -> pd.Series:
    """Arrow text as a pandas ``str`` column (what ``astype("str")`` gives) on ``index``."""
    return pd.Series(values.to_pandas().array, index=index, copy=False)


def _cast_arrow_text(
    text: pa.ChunkedArray, index: pd.Index, allowed: list[Any] | None
) -> tuple[pd.Series, np.ndarray, np.ndarray | None]:
    """A text column cast to text, as :func:`_cast_column` does it, where the raw value is missing
    or blank, and (when ``allowed`` is all text) ``values.isin(allowed)``: surrounding blanks
    stripped (the kernel ``str.strip`` uses), an empty value is missing."""
    stripped = pc.utf8_trim_whitespace(text)
    blank = pc.equal(stripped, "")
    raw_missing = pc.fill_null(blank, True).to_numpy()
    if pc.any(blank).as_py():
        stripped = pc.if_else(blank, pa.scalar(None, stripped.type), stripped)
    isin = None
    if allowed is not None and all(isinstance(a, str) for a in allowed):
        value_set = pa.array(allowed, type=stripped.type)
        isin = pc.is_in(stripped, value_set=value_set).to_numpy(zero_copy_only=False)  # missing: False
    return _text_series(stripped, index), raw_missing, isin


def _first_seen_codes(values: pa.ChunkedArray) -> np.ndarray:
    """Codes of ``values`` numbered in order of first appearance (missing values share a code)."""
    single = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.dictionary_encode(single, null_encoding="encode").indices.to_numpy(zero_copy_only=False)


def _duplicated(values: pd.Series) -> np.ndarray:
    """``values.duplicated(keep="first")`` as a numpy mask; Arrow text is hashed by Arrow (no GIL held)."""
    text = _arrow_text(values)
    if text is None or len(values) == 0:
        return values.duplicated(keep="first").to_numpy()
    codes = _first_seen_codes(text)
    # codes count up in order of first appearance: a row is a first one when its code exceeds all before it
    dup = np.zeros(len(codes), dtype=bool)
    dup[1:] = codes[1:] <= np.maximum.accumulate(codes)[:-1]
    return dup


def _cast_column(
    raw: pd.Series, col: ColumnSpec, stripped: pd.Series | None = None, blank: pd.Series | None = None
) -> pd.Series:
    """Cast one column; values that cannot be cast become missing (and are then flagged).

    ``stripped`` and ``blank``: ``raw.astype("string").str.strip()`` and ``stripped == ""`` when
    the caller has them already.
    """
    if col.dtype in ("int", "float"):
        out = pd.to_numeric(raw, errors="coerce")
        if col.dtype == "int" and isinstance(out.dtype, np.dtype) and out.dtype.kind == "i":
            return out.astype("int64")  # whole numbers stay exact (no float64 round trip beyond 2**53)
        return out.astype("float64")
    if col.dtype == "bool":
        if pd.api.types.is_bool_dtype(raw):
            return raw.astype("boolean")
        mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
        text = stripped if stripped is not None else raw.astype("string").str.strip()
        return text.str.lower().map(mapping).astype("boolean")
    if col.dtype in ("timestamp", "date"):
        if isinstance(raw.dtype, pd.DatetimeTZDtype):
            out = raw.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_any_dtype(raw):
            out = raw.dt.tz_localize("UTC")
        else:
            out = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
        out = out.astype("datetime64[us, UTC]")
        return out.dt.normalize() if col.dtype == "date" else out
    # string / category: keep text, strip surrounding blanks, empty is missing
    if pd.api.types.is_float_dtype(raw) and col.dtype in ("string", "category"):
        # numeric codes stored as floats (e.g. 1.0) read back as "1"
        text = raw.map(
            lambda v: None if pd.isna(v) else (str(int(v)) if np.isfinite(v) and float(v).is_integer() else str(v))
        )
        text = text.astype("string")
    elif stripped is not None:
        text = stripped
    else:
        text = raw.astype("string").str.strip()
    empty = blank if blank is not None and text is stripped else text == ""
    return (text.mask(empty) if empty.any() else text).astype("str")


def _infer_column(raw: pd.Series) -> pd.Series:
    """An undeclared column: numeric when every present value parses as a number, text otherwise."""
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        return raw
    text = raw.astype("string").str.strip().mask(lambda s: s == "")
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().sum() == text.notna().sum():
        return numbers.astype("float64")
    return text.astype("str")


@dataclass(frozen=True)
class TimeBounds:
    """The instants a partition's rows must lie in: ``[lo, hi)`` (``outside_partition``) and before
    ``now`` (``future_time``); ``what`` names the bounds in reasons."""

    column: str
    lo: pd.Timestamp | None = None
    hi: pd.Timestamp | None = None
    now: pd.Timestamp | None = None
    what: str = ""


def partition_bounds(spec: Spec, ds: str) -> TimeBounds | None:
    """The time bounds of partition ``ds``: its day widened by ``data.partition_tolerance_hours``."""
    if not spec.data.time_column:
        return None
    day = pd.Timestamp(ds, tz="UTC")
    tol = pd.Timedelta(hours=spec.data.partition_tolerance_hours)
    return TimeBounds(
        spec.data.time_column,
        lo=day - tol,
        hi=day + pd.Timedelta(days=1) + tol,
        what=f"partition ds={ds} widened by {spec.data.partition_tolerance_hours:g} h",
    )


def _shown(value: Any, pii: bool) -> str:
    return "<pii>" if pii else repr(value)


def cast_and_validate(
    df: pd.DataFrame,
    schema: SchemaSpec,
    *,
    source: str,
    key: str | None,
    extra_columns: str = "drop",
    target: str | None = None,
    bounds: TimeBounds | None = None,
    declared_only: bool = False,
) -> CastResult:
    """Cast ``df`` to the schema; every row that breaks a rule goes to quarantine with its reason.

    Raises :class:`SchemaError` naming the file and column when a declared column is absent.
    The first broken rule of a row is recorded (encoding, target_missing, not_null, dtype, min,
    max, allowed, outside_partition, future_time, duplicate_key). ``target``: the target column
    when the rows carry their own labels; a row whose target value is missing (null, NaN, blank)
    is quarantined with rule ``target_missing``: an unlabelled row is never read as a negative.
    ``bounds``: the instants the rows' time column must lie in. The quarantine holds every column
    of ``df`` (e.g. a caller's row number), or only the declared ones (``declared_only``, what the
    ETL writes: an undeclared column may hold anything).
    """
    typed, good, res = _cast_and_validate(
        df,
        schema,
        source=source,
        key=key,
        extra_columns=extra_columns,
        target=target,
        bounds=bounds,
        declared_only=declared_only,
    )
    res.curated = (typed if good.all() else typed.iloc[np.flatnonzero(good)]).reset_index(drop=True)
    return res


_INT64_LIMIT = 2.0**63


def _cast_and_validate(
    df: pd.DataFrame,
    schema: SchemaSpec,
    *,
    source: str,
    key: str | None,
    extra_columns: str,
    target: str | None = None,
    bounds: TimeBounds | None = None,
    declared_only: bool = True,
) -> tuple[pd.DataFrame, np.ndarray, CastResult]:
    """:func:`cast_and_validate` before its curated rows are taken: every row cast, the mask of the
    rows that break no rule and the result with an empty ``curated``."""
    declared = set(schema.names)
    check_columns(df, schema, source)
    info = read_info(df)
    extra = [c for c in df.columns if c not in declared]
    n = len(df)
    rule = np.full(n, "", dtype=object)
    column = np.full(n, "", dtype=object)
    detail = np.full(n, "", dtype=object)
    free = np.ones(n, dtype=bool)  # rows with no broken rule yet
    cast: dict[str, pd.Series] = {}

    def flag(mask: np.ndarray, rule_name: str, col: str, why: str = "") -> None:
        fresh = mask & free
        if fresh.any():
            rule[fresh] = rule_name
            column[fresh] = col
            detail[fresh] = why
            free[fresh] = False

    for col in schema.columns:
        raw = df[col.name]
        if info is not None and col.name in info.invalid_utf8:
            undecodable = np.zeros(n, dtype=bool)
            undecodable[info.invalid_utf8[col.name]] = True
            flag(undecodable, "encoding", col.name, "bytes that are not UTF-8, shown as \\x escapes")
        nested = _nested_kind(raw)
        if nested:
            raise SchemaError(
                f"{mask_digits(source)}: column {col.name!r} holds {nested} values (nested data) that cannot be "
                f"cast to {col.dtype}"
            )
        try:
            values, raw_missing, isin = _cast_one(raw, col)
        except (TypeError, ValueError, OverflowError, pa.ArrowException) as exc:
            raise SchemaError(
                f"{mask_digits(source)}: column {col.name!r} (read as {raw.dtype}) cannot be cast to "
                f"{col.dtype} ({type(exc).__name__}: {_short(exc)})"
            ) from None
        now_missing = values.isna().to_numpy()
        if col.name == target:
            flag(raw_missing, "target_missing", col.name)
        if not col.nullable:
            flag(raw_missing, "not_null", col.name)
        flag(now_missing & ~raw_missing, f"dtype:{col.dtype}", col.name)
        if col.dtype in ("int", "float"):
            number = values.to_numpy(dtype="float64", na_value=np.nan)
            present = ~now_missing
            flag(present & ~np.isfinite(number), f"dtype:{col.dtype}", col.name, "not a finite number")
            if col.dtype == "int":
                with np.errstate(invalid="ignore"):
                    out_of_range = present & ((number >= _INT64_LIMIT) | (number < -_INT64_LIMIT))
                    fraction = present & np.isfinite(number) & (np.mod(number, 1) != 0)
                flag(out_of_range, "dtype:int", col.name, "outside the int64 range")
                flag(fraction, "dtype:int", col.name)
                unfit = present & (~np.isfinite(number) | out_of_range | fraction)
                if unfit.any():  # such a row is quarantined: its value must not break the int cast below
                    values = values.astype("float64").mask(unfit)
        if col.min is not None:
            flag((values < col.min).fillna(False).to_numpy(dtype=bool), f"min:{col.min:g}", col.name)
        if col.max is not None:
            flag((values > col.max).fillna(False).to_numpy(dtype=bool), f"max:{col.max:g}", col.name)
        if col.allowed is not None:
            ok = (values.isin(col.allowed).to_numpy() if isin is None else isin) | now_missing
            flag(~ok, "allowed", col.name)
        cast[col.name] = values
    for name in extra if extra_columns == "keep" else []:
        cast[name] = _infer_column(df[name])
    typed = pd.DataFrame(cast, index=df.index)
    when = typed[bounds.column] if bounds is not None and bounds.column in typed.columns else None
    if bounds is not None and when is not None and n and pd.api.types.is_datetime64_any_dtype(when):
        if bounds.lo is not None and bounds.hi is not None:
            outside = ((when < bounds.lo) | (when >= bounds.hi)).fillna(False).to_numpy(dtype=bool)
            flag(outside, "outside_partition", bounds.column, f"outside {bounds.what}")
        if bounds.now is not None:
            future = (when >= bounds.now).fillna(False).to_numpy(dtype=bool)
            flag(future, "future_time", bounds.column, f"at or after the run's as_of {bounds.now.isoformat()}")
    for col in schema.columns:
        if col.dtype != "int":
            continue
        values = typed[col.name]
        missing = values.isna().to_numpy()
        if not missing[free].any():  # every valid row has a value: a quarantined row's gap does not matter
            typed[col.name] = (values.fillna(0) if missing.any() else values).astype("int64")
        else:
            typed[col.name] = values.astype("Int64")
    good = free.copy()
    if key is not None:
        # only a valid row can be "the first" of its key: a broken first row must not push a good one out
        dup = np.zeros(n, dtype=bool)
        dup[good] = _duplicated(typed[key][good])
        flag(dup, "duplicate_key", key)
        good = free.copy()
    bad_idx = np.flatnonzero(~good)
    pii = {c.name for c in schema.columns if c.pii}
    shown = [c for c in df.columns if c in declared or not declared_only]  # what reaches the quarantine
    quarantined = (df.iloc[bad_idx][shown] if len(shown) < len(df.columns) else df.iloc[bad_idx]).astype("string")
    quarantined["_rule"] = rule[bad_idx].astype(str)
    quarantined["_column"] = column[bad_idx].astype(str)
    quarantined["_reason"] = [
        mask_digits(f"{c}={_shown(df[c].iloc[i], c in pii)} breaks rule {r}" + (f" ({d})" if d else ""))
        for i, c, r, d in zip(bad_idx, column[bad_idx], rule[bad_idx], detail[bad_idx], strict=True)
    ]
    quarantined["_source"] = source
    quarantined = quarantined.reset_index(drop=True)
    rules = list(rule[bad_idx].astype(str))
    malformed = info.malformed if info is not None else []
    if malformed:
        quarantined = pd.concat([quarantined, _malformed_rows(malformed, shown, source)], ignore_index=True)
        rules += [MALFORMED] * len(malformed)
    by_rule = dict(zip(*np.unique(np.asarray(rules, dtype=str), return_counts=True), strict=True)) if rules else {}
    return (
        typed,
        good,
        CastResult(
            typed.iloc[:0],
            quarantined,
            {str(k): int(v) for k, v in by_rule.items()},
            extra if extra_columns != "keep" else [],
            rows_in=n + len(malformed),
        ),
    )


def check_columns(df: pd.DataFrame, schema: SchemaSpec, source: str, *, nested: bool = False) -> None:
    """A :class:`SchemaError` naming ``source`` when a declared column is missing or a column appears
    twice (``nested``: also when a declared column holds nested values: lists, arrays, mappings)."""
    declared = set(schema.names)
    missing = [c.name for c in schema.columns if c.name not in df.columns]
    if missing:
        raise SchemaError(
            f"{mask_digits(source)}: column(s) {missing} declared in the spec schema are missing "
            f"(rule: every schema column must be present; found {_names(df.columns, declared)})"
        )
    if df.columns.duplicated().any():
        twice = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise SchemaError(f"{mask_digits(source)}: column(s) {_names(twice, declared)} appear more than once")
    for col in schema.columns if nested else []:
        kind = _nested_kind(df[col.name])
        if kind:
            raise SchemaError(
                f"{mask_digits(source)}: column {col.name!r} holds {kind} values (nested data) that cannot be "
                f"cast to {col.dtype}"
            )


def _nested_kind(raw: pd.Series) -> str:
    """The kind of a column of lists, arrays or mappings (a nested Parquet type); "" for other columns."""
    if not pd.api.types.is_object_dtype(raw):
        return ""
    at = raw.first_valid_index()
    value = raw.loc[at] if at is not None else None
    return type(value).__name__ if isinstance(value, list | tuple | dict | np.ndarray) else ""


def _malformed_rows(malformed: list[tuple[int | None, int, int]], columns: list[str], source: str) -> pd.DataFrame:
    """Quarantine rows for CSV rows that could not be parsed: no value is copied, only where and why."""
    m = len(malformed)
    out = pd.DataFrame({c: pd.array([pd.NA] * m, dtype="string") for c in columns})
    out["_rule"] = MALFORMED
    out["_column"] = ""
    out["_reason"] = [
        f"{f'row {number}' if number is not None else 'a row'} has {found} fields where the header has "
        f"{expected}: not parsed, its text is not copied"
        for number, expected, found in malformed
    ]
    out["_source"] = source
    return out


def _cast_one(raw: pd.Series, col: ColumnSpec) -> tuple[pd.Series, np.ndarray, np.ndarray | None]:
    """One column cast: the values, where the raw value is missing or blank, and (for Arrow text
    with text ``allowed`` values) which values are allowed."""
    text = _arrow_text(raw) if col.dtype in ("string", "category") else None
    if text is not None:  # Arrow text: strip, blank is missing, without a pandas string round trip
        return _cast_arrow_text(text, raw.index, col.allowed)
    raw_missing = raw.isna().to_numpy()
    stripped = blank = None
    if pd.api.types.is_object_dtype(raw) or pd.api.types.is_string_dtype(raw):
        # only text can be blank; typed columns (numbers, timestamps) need no string round trip
        stripped = raw.astype("string").str.strip()
        blank = stripped == ""
        raw_missing = raw_missing | blank.fillna(True).to_numpy()
    return _cast_column(raw, col, stripped, blank), raw_missing, None


def tokenise(values: pd.Series, key: bytes, cache: dict[str, str] | None = None) -> pd.Series:
    """Keyed hash (BLAKE2b MAC, 96 bits, hex) of each value; the same value gives the same token.

    Only distinct values are hashed, so a million rows of a hundred thousand cards cost a
    hundred thousand hashes; ``cache`` (one per key) carries tokens across the partitions of a run.
    """
    return tokenise_many([values], key, cache)[0]


def tokenise_many(pieces: list[pd.Series], key: bytes, cache: dict[str, str] | None = None) -> list[pd.Series]:
    """:func:`tokenise` of several columns at once (e.g. one PII column of many partitions).

    The distinct values of all pieces are found in one pass and each is hashed once, so a card
    seen on every day of the window costs one hash and one look-up instead of one per day.
    """
    if not key:
        raise ValueError("the PII hash key is empty: set the Airflow variable ml_pii_hash_key")
    codes, uniques = _factorize_many(pieces)
    memo: dict[str, str] = {} if cache is None else cache
    tokens: list[str | None] = [memo.get(u) for u in uniques] if memo else [None] * len(uniques)
    missing = [u for u, t in zip(uniques, tokens, strict=True) if t is None]
    if missing:
        copy = hashlib.blake2b(key=key[:64], digest_size=12).copy  # the key block is hashed once

        def mac(value: str) -> str:
            h = copy()
            h.update(value.encode())
            return h.hexdigest()

        new = list(map(mac, missing))  # a map, then one dict update: 2-3x faster than a loop filling both
        memo.update(zip(missing, new, strict=True))
        fresh = iter(new)
        tokens = new if len(new) == len(tokens) else [t if t is not None else next(fresh) for t in tokens]
    taken = pa.array(tokens, type=pa.large_string()).take(codes).to_pandas().array  # a missing code: missing
    out, at = [], 0
    for piece in pieces:
        out.append(pd.Series(taken[at : at + len(piece)], index=piece.index, dtype="str"))
        at += len(piece)
    return out


def _factorize_many(pieces: list[pd.Series]) -> tuple[pa.Array, list[str]]:
    """Codes (missing for a missing value) of the pieces' values, one piece after the other, and the
    distinct values as text (``str`` of each distinct value)."""
    if not pieces:
        return pa.array([], type=pa.int64()), []
    if all(pd.api.types.is_string_dtype(p.dtype) and not pd.api.types.is_object_dtype(p.dtype) for p in pieces):
        # text columns: Arrow-backed, factorised by Arrow without a Python object per row
        texts = [p.astype("str") for p in pieces]
        arrow = [_arrow_text(t) for t in texts]
        if all(a is not None for a in arrow):
            chunks = [c.cast(pa.large_string()) for a in arrow if a is not None for c in a.chunks]
            encoded = pc.dictionary_encode(pa.chunked_array(chunks, type=pa.large_string()).combine_chunks())
            return encoded.indices, encoded.dictionary.to_pylist()
        joined = pd.concat(texts, ignore_index=True)
    else:
        joined = pd.concat([p.astype(object) for p in pieces], ignore_index=True)
    codes, uniques = pd.factorize(joined, use_na_sentinel=True)
    codes = np.asarray(codes)
    return pa.array(codes, mask=codes < 0), [str(u) for u in uniques.tolist()]


def key_fingerprint(key: bytes) -> str:
    """Identifies the PII key in manifests without revealing it."""
    return hashlib.blake2b(b"fingerprint", key=key[:64], digest_size=8).hexdigest()


# --- per partition ---------------------------------------------------------------------------
def curate_partition(
    frames: list[tuple[str, pd.DataFrame]],
    spec: Spec,
    *,
    pii_key: bytes,
    token_cache: dict[str, str] | None = None,
    bounds: TimeBounds | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Curate all files of one partition; return curated, quarantined and the counts."""
    cur, qua, counts = validate_partition(frames, spec, bounds=bounds)
    tokenise_partitions([(cur, qua)], spec, pii_key=pii_key, token_cache=token_cache)
    return sort_curated(cur, spec), qua, counts


def validate_partition(
    frames: list[tuple[str, pd.DataFrame]], spec: Spec, *, bounds: TimeBounds | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The first steps of :func:`curate_partition`: cast, quarantine, de-duplicate (PII not yet
    tokenised). ``bounds``: the instants the partition's rows must lie in (:func:`partition_bounds`)."""
    curated, quarantined, by_rule, dropped, sources = [], [], {}, set(), []
    rows_in = 0
    key = spec.data.key
    single: tuple[pd.DataFrame, np.ndarray] | None = None  # one file: its cast rows and good-row positions
    for source, raw in frames:
        typed, good, res = _cast_and_validate(
            raw,
            spec.schema_,
            source=source,
            key=None,
            extra_columns=spec.schema_.extra_columns,
            target=labelled_target(spec),
            bounds=bounds,
        )
        rows_in += res.rows_in
        if len(frames) == 1 and key:  # rows are taken once, after the duplicates are known too
            single = typed, np.flatnonzero(good)
        else:
            res.curated = (typed if good.all() else typed.iloc[np.flatnonzero(good)]).reset_index(drop=True)
            curated.append(res.curated)
            sources += [source] * len(res.curated)
        quarantined.append(res.quarantined)
        dropped.update(res.dropped_columns)
        for k, v in res.by_rule.items():
            by_rule[k] = by_rule.get(k, 0) + v
    qua = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame()
    if single is not None:
        typed, at = single
        dup = _duplicated(typed[key].iloc[at])
        if dup.any():
            dups = typed.iloc[at[dup]]
            qua = _with_duplicates(qua, dups, spec, np.full(len(dups), frames[0][0], dtype=object))
            by_rule["duplicate_key"] = by_rule.get("duplicate_key", 0) + int(dup.sum())
            at = at[~dup]
        cur = (typed if len(at) == len(typed) else typed.iloc[at]).reset_index(drop=True)
    else:
        cur = pd.concat(curated, ignore_index=True) if curated else pd.DataFrame(columns=spec.schema_.names)
    if single is None and key and len(cur):
        dup = _duplicated(cur[key])
        if dup.any():
            qua = _with_duplicates(qua, cur[dup], spec, np.asarray(sources, dtype=object)[dup])
            by_rule["duplicate_key"] = by_rule.get("duplicate_key", 0) + int(dup.sum())
            cur = cur[~dup].reset_index(drop=True)
    counts = {
        "rows_in": rows_in,
        "rows_curated": len(cur),
        "rows_quarantined": len(qua),
        "by_rule": by_rule,
        "dropped_columns": sorted(dropped),
    }
    if counts["rows_in"] != counts["rows_curated"] + counts["rows_quarantined"]:
        raise AssertionError(f"row accounting broken: {counts}")
    return cur, qua, counts


def labelled_target(spec: Spec) -> str | None:
    """The target column whose values curation checks: the problem's target when the rows carry
    their own labels (no labels feed), else None (a feed labels the rows; absent means negative)."""
    return spec.problem.target if spec.data.labels is None else None


def _with_duplicates(
    qua: pd.DataFrame, dups: pd.DataFrame, spec: Spec, sources: np.ndarray, why: list[str] | None = None
) -> pd.DataFrame:
    """The quarantine with the curated rows ``dups`` (not the first of their key) appended; only
    their declared columns, PII not yet tokenised (or already, for curated partitions)."""
    key = spec.data.key
    assert key is not None
    shown = ["<pii>" if key in spec.pii_columns else mask_digits(repr(v)) for v in dups[key]]
    dups = dups[[c for c in dups.columns if c in spec.schema_.names]].astype("string")
    dups["_rule"] = "duplicate_key"
    dups["_column"] = key
    dups["_reason"] = [
        f"{key}={v} breaks rule duplicate_key" + (f" ({w})" if w else "")
        for v, w in zip(shown, why or [""] * len(shown), strict=True)
    ]
    dups["_source"] = sources
    return pd.concat([qua, dups], ignore_index=True)


def tokenise_partitions(
    parts: list[tuple[pd.DataFrame, pd.DataFrame]],
    spec: Spec,
    *,
    pii_key: bytes,
    token_cache: dict[str, str] | None = None,
) -> None:
    """Replace the PII columns of the (curated, quarantined) frames by their tokens, in place.

    All frames' values of one column are tokenised together: each distinct value is hashed once.
    """
    for col in spec.pii_columns:
        holders = [f for pair in parts for f in pair if col in f.columns]
        for frame, tokens in zip(holders, tokenise_many([f[col] for f in holders], pii_key, token_cache), strict=True):
            frame[col] = tokens


def sort_curated(cur: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """Curated rows in time order (then key order), the order every partition is written in."""
    if not spec.data.time_column or not len(cur):
        return cur
    by = [spec.data.time_column, *([spec.data.key] if spec.data.key else [])]
    try:  # Arrow sorts strings and timestamps without a Python object per row (stable, missing last)
        keys = pa.Table.from_pandas(cur[by], preserve_index=False)
        options = pc.SortOptions(sort_keys=[(c, "ascending", "at_end") for c in by])
        order = pc.sort_indices(keys, options=options).to_numpy()
    except (pa.ArrowException, TypeError, ValueError):  # e.g. mixed types: pandas decides
        return cur.sort_values(by, kind="stable").reset_index(drop=True)
    return cur.take(order).reset_index(drop=True)


# --- labels ----------------------------------------------------------------------------------
@dataclass
class LabelResult:
    """The label feed of a run, every row accounted for.

    ``usable``: valid labels that had arrived before the run's as_of, one per key (the key and
    ``arrived_at`` columns, cast); ``quarantined``: the rows that break a rule, with ``_rule``,
    ``_column``, ``_reason`` and ``_source``; ``counts``: ``rows_read`` = ``rows_in`` +
    ``rows_not_yet_arrived``, ``rows_in`` = ``rows_quarantined`` + ``len(usable)``; ``files``:
    every entry of the feed's window (path, format, rows, outcome)."""

    usable: pd.DataFrame
    quarantined: pd.DataFrame
    counts: dict[str, Any]
    files: list[dict[str, Any]]
    positions: np.ndarray  # each usable label's row among the ``events`` rows, -1: none


def _positions(label_keys: pd.Series, keys: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For each label key, the position of the (unique) row of ``keys`` holding it, -1: none.

    The labels are the small side: they are hashed and the window's keys looked up in them."""
    codes, uniques = pd.factorize(label_keys, use_na_sentinel=True)
    out = np.full(len(label_keys), -1, dtype=np.int64)
    if not len(uniques) or not len(keys):
        return out
    try:
        value_set = pa.array(uniques).cast(keys.type)
        hit = pc.index_in(keys, value_set=value_set).fill_null(-1).to_numpy(zero_copy_only=False)
    except (pa.ArrowException, TypeError, ValueError):  # keys of another kind match nothing
        return out
    row_of = np.full(len(uniques), -1, dtype=np.int64)
    rows = np.flatnonzero(hit >= 0)
    row_of[hit[rows][::-1]] = rows[::-1]  # the first row of each key
    present = codes >= 0
    out[present] = row_of[codes[present]]
    return out


def _label_schema(spec: Spec) -> SchemaSpec:
    """The label feed's two columns: the key, cast like the data's key, and the arrival time."""
    lab = spec.data.labels
    assert lab is not None and spec.data.key is not None
    data_key = spec.schema_.column(spec.data.key)
    return SchemaSpec(
        columns=[
            ColumnSpec(name=lab.key, dtype=data_key.dtype, nullable=False, pii=data_key.pii),
            ColumnSpec(name=lab.arrived_at, dtype="timestamp", nullable=False),
        ]
    )


def collect_labels(
    spec: Spec,
    labels_source: Store,
    start: str,
    end_exclusive: str,
    as_of: dt.datetime,
    *,
    events: tuple[pa.ChunkedArray, pa.ChunkedArray | None] | None = None,
    pii_key: bytes | None = None,
    token_cache: dict[str, str] | None = None,
    log: Log = _noop,
) -> LabelResult:
    """Read and validate the label rows of partitions ds in [start, end) that arrived before ``as_of``.

    A file without the key or the arrival column is a :class:`SchemaError` naming it. Rows whose
    key is missing or does not cast (``not_null``, ``dtype:<type>``, ``encoding``), whose arrival
    time is missing or unreadable (``not_null``, ``dtype:timestamp``), that arrived before the
    event they label (``label_before_event``; ``events``: the keys and times of the window's
    rows, unique keys) or label a key labelled earlier (``duplicate_key``, the earliest arrival is kept) are
    quarantined. Rows that arrive at or after ``as_of`` are not this run's (counted apart).
    """
    lab = spec.data.labels
    assert lab is not None
    key, arrived_col = lab.key, lab.arrived_at
    schema = _label_schema(spec)
    ts_as_of = _utc(as_of)
    scan = scan_partitions(labels_source, "data.labels.source")
    files = [{"source": "labels", **e} for e in scan.ignored]
    valid_parts: list[pd.DataFrame] = []
    quarantined: list[pd.DataFrame] = []
    by_rule: dict[str, int] = {}
    rows_read = not_yet = 0
    plain: list[tuple[str, pd.DataFrame]] = []

    def check(df: pd.DataFrame, sources: np.ndarray, name: str) -> None:
        """Cast and validate label rows (``sources``: each row's file); keep the valid ones that arrived."""
        nonlocal not_yet
        typed, good, res = _cast_and_validate(df, schema, source=name, key=None, extra_columns="drop")
        late = (typed[arrived_col] >= ts_as_of).fillna(False).to_numpy(dtype=bool)
        not_yet += int(late.sum())
        bad_idx = np.flatnonzero(~good)
        extra = res.rows_in - len(df)  # CSV rows that could not be parsed: their arrival is unknown
        keep = np.concatenate([~late[bad_idx], np.ones(extra, dtype=bool)])
        q = res.quarantined
        q["_source"] = np.concatenate([sources[bad_idx], np.full(extra, name, dtype=object)])
        q = q[keep].reset_index(drop=True)
        quarantined.append(q)
        for r in q["_rule"]:
            by_rule[r] = by_rule.get(r, 0) + 1
        take = np.flatnonzero(good & ~late)
        valid_parts.append(typed.iloc[take][[key, arrived_col]].assign(_source=sources[take]))

    for ds in scan.partitions:
        if not start <= ds < end_exclusive:
            continue
        names, ignored = partition_files(labels_source, ds, lab.format, "data.labels")
        files += [{"source": "labels", **e} for e in ignored]
        for name in names:
            rel = f"ds={ds}/{name}"
            uri = labels_source.uri(rel)
            df = read_file(labels_source, rel, lab.format, [key, arrived_col])
            for col in (key, arrived_col):
                if col not in df.columns:
                    raise SchemaError(
                        f"{mask_digits(uri)}: label column {col!r} is missing (rule: labels.key and "
                        f"labels.arrived_at must be columns of the label feed; found "
                        f"{_names(df.columns, {key, arrived_col})})"
                    )
            rows = _rows_of(df)
            files.append(
                {
                    "source": "labels",
                    "path": rel,
                    "format": lab.format,
                    "rows": rows,
                    "outcome": "read" if rows else "empty",
                }
            )
            rows_read += rows
            if read_info(df) is not None:  # what reading found is reported with this file's name
                check(df, np.full(len(df), uri, dtype=object), uri)
            else:  # the others are validated together: one cast for the whole feed
                plain.append((uri, df[[key, arrived_col]]))
    if plain:
        sources = np.concatenate([np.full(len(df), uri, dtype=object) for uri, df in plain])
        frame = pd.concat([df for _, df in plain], ignore_index=True) if len(plain) > 1 else plain[0][1]
        check(frame, sources, plain[0][0] if len(plain) == 1 else labels_source.uri())
    empty_typed = {key: pd.Series(dtype="str"), arrived_col: pd.Series(dtype="datetime64[us, UTC]")}
    valid = pd.concat(valid_parts, ignore_index=True) if valid_parts else pd.DataFrame(empty_typed).assign(_source="")
    key_is_pii = spec.data.key in spec.pii_columns  # the feed's key is the data's key: PII alike
    if key_is_pii and pii_key:
        pieces = [valid[key], *[q[key] for q in quarantined if key in q.columns]]
        tokens = tokenise_many(pieces, pii_key, token_cache)
        valid[key] = tokens[0]
        for q, t in zip([q for q in quarantined if key in q.columns], tokens[1:], strict=True):
            q[key] = t
    arrived_us = _micros(pa.array(valid[arrived_col], type=pa.timestamp("us", tz="UTC")))
    assert arrived_us is not None
    before = np.zeros(len(valid), dtype=bool)
    time_column = spec.data.time_column
    pos = np.full(len(valid), -1, dtype=np.int64)  # each valid label's row among the window's rows
    if events is not None and len(valid):
        event_keys, event_times = events
        pos = _positions(valid[key], event_keys)
        matched = pos >= 0
        event_us = np.full(len(valid), np.iinfo(np.int64).min, dtype=np.int64)
        if event_times is not None and matched.any():
            taken = _micros(event_times.take(pa.array(pos[matched])))
            if taken is not None:  # a time column that is not a time: nothing to compare
                event_us[matched] = taken
        before = matched & (event_us != np.iinfo(np.int64).min) & (arrived_us < event_us)
        if before.any():
            early = valid.iloc[np.flatnonzero(before)]
            when = pd.to_datetime(event_us[before], unit="us", utc=True)
            quarantined.append(
                _label_quarantine(
                    early,
                    spec,
                    "label_before_event",
                    arrived_col,
                    [
                        f"{arrived_col}={v.isoformat()!r} breaks rule label_before_event "
                        f"(before the row's {time_column} {w.isoformat()})"
                        for v, w in zip(early[arrived_col], when, strict=True)
                    ],
                )
            )
            by_rule["label_before_event"] = by_rule.get("label_before_event", 0) + int(before.sum())
    rest = np.flatnonzero(~before)
    order = rest[np.argsort(arrived_us[rest], kind="stable")]  # the earliest label of a key is kept
    dup = np.zeros(len(valid), dtype=bool)
    dup[order] = valid[key].iloc[order].duplicated(keep="first").to_numpy()
    if dup.any():
        again = valid.iloc[np.flatnonzero(dup)]
        shown = ["<pii>" if key_is_pii else mask_digits(repr(v)) for v in again[key]]
        quarantined.append(
            _label_quarantine(
                again,
                spec,
                "duplicate_key",
                key,
                [f"{key}={v} breaks rule duplicate_key (an earlier label of the same key is used)" for v in shown],
            )
        )
        by_rule["duplicate_key"] = by_rule.get("duplicate_key", 0) + int(dup.sum())
    kept = np.flatnonzero(~before & ~dup)
    usable = valid.iloc[kept][[key, arrived_col]].reset_index(drop=True)
    qua = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame()
    counts = {
        "rows_read": rows_read,
        "rows_in": rows_read - not_yet,
        "rows_quarantined": len(qua),
        "rows_not_yet_arrived": not_yet,
        "by_rule": dict(sorted(by_rule.items())),
    }
    if counts["rows_in"] != counts["rows_quarantined"] + len(usable):
        raise AssertionError(f"label accounting broken: {counts}, {len(usable)} usable")
    log(f"labels: {rows_read} rows in feed window, {rows_read - not_yet} arrived before {ts_as_of.isoformat()}")
    return LabelResult(usable, qua, counts, files, pos[kept])


def _micros(values: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """Timestamps as int64 microseconds since the epoch (missing: the int64 minimum); None: not times."""
    if not pa.types.is_timestamp(values.type):
        return None
    micros = values.cast(pa.timestamp("us", tz=values.type.tz)).cast(pa.int64())
    return micros.fill_null(np.iinfo(np.int64).min).to_numpy()


def _label_quarantine(rows: pd.DataFrame, spec: Spec, rule: str, column: str, reasons: list[str]) -> pd.DataFrame:
    lab = spec.data.labels
    assert lab is not None
    out = pd.DataFrame(
        {
            lab.key: rows[lab.key].astype("string").to_numpy(),
            lab.arrived_at: rows[lab.arrived_at].astype("string").to_numpy(),
        }
    ).astype("string")
    out["_rule"] = rule
    out["_column"] = column
    out["_reason"] = [mask_digits(r) for r in reasons]
    out["_source"] = rows["_source"].to_numpy()
    return out


def join_labels(curated: pd.DataFrame, labels: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """Positive where the key appears in the label feed, negative otherwise."""
    lab = spec.data.labels
    assert lab is not None and spec.data.key is not None
    keys = labels[lab.key].dropna()
    text = pd.api.types.is_string_dtype(curated[spec.data.key]) or pd.api.types.is_object_dtype(curated[spec.data.key])
    positive = curated[spec.data.key].isin(set(keys.astype(str)) if text else keys.unique())
    out = curated.copy(deep=False)  # copy-on-write: the new column never reaches ``curated``
    out[spec.problem.target] = np.where(positive.to_numpy(), lab.label_value, lab.negative_value)
    return out


# --- the whole step --------------------------------------------------------------------------
TOKENISE_BATCH_ROWS = 2_000_000
"""Partitions are validated, then tokenised together in batches of about this many input rows:
each distinct PII value of a batch is hashed or looked up once (bounds the rows held in memory)."""


@dataclass
class _Pending:
    """A validated partition waiting for its PII tokens."""

    i: int
    ds: str
    rel: str
    fingerprint: dict[str, Any]
    cur: pd.DataFrame
    qua: pd.DataFrame
    counts: dict[str, Any]


@dataclass
class _Prepared:
    """One partition's input identified (and read, unless its curated partition is re-used)."""

    ds: str
    fingerprint: dict[str, Any]
    reuse: bool
    old: dict[str, Any] | None
    frames: list[tuple[str, pd.DataFrame]] | None
    names: list[str]


def _checks(spec: Spec, as_of: dt.datetime) -> dict[str, Any]:
    """What besides the input, the schema and the key decides a curated partition (fingerprint)."""
    checks: dict[str, Any] = {
        "rules": CURATION_RULES,
        "key_column": spec.data.key,
        "time_column": spec.data.time_column,
    }
    if spec.data.time_column and spec.data.layout == "partitioned":
        checks["partition_tolerance_hours"] = spec.data.partition_tolerance_hours
    elif spec.data.time_column:
        checks["future_after"] = _utc(as_of).isoformat()
    return checks


def partition_fingerprint(spec: Spec, ids: Any, pii_key: bytes, checks: dict[str, Any]) -> dict[str, Any]:
    """What a curated partition was built from (its manifest's ``fingerprint``): ``ids``, each input
    file's ``[name, size, content id]``; the schema, the PII key's fingerprint and the ``checks``."""
    fingerprint = {"source": ids, "spec": spec.schema_.model_dump_json(), "key": key_fingerprint(pii_key)}
    fingerprint["checks"] = checks
    if labelled_target(spec):  # curation checks the target too (rule target_missing)
        fingerprint["target"] = labelled_target(spec)
    return fingerprint


def _rows_of(df: pd.DataFrame) -> int:
    """The rows a file held: its frame's and the CSV rows that could not be parsed."""
    info = read_info(df)
    return len(df) + (len(info.malformed) if info is not None else 0)


def collect_and_label(
    spec: Spec,
    *,
    problem: Store,
    run_dir: str,
    as_of: dt.datetime,
    lookback_days: int,
    pii_key: bytes,
    source_uri: str,
    labels_uri: str | None = None,
    log: Log = _noop,
) -> dict[str, Any]:
    """Curate the window's partitions (re-using ones already curated from the same input) and
    write the run's labelled data set to ``<run_dir>/dataset.parquet``. Returns the summary.

    This is the pandas/Arrow path of one machine (the local backend, a Glue pythonshell job); a
    Glue glueetl job runs the same on Spark executors (:mod:`include.lifecycle.collect_spark`).

    One background thread identifies and reads the next partitions while the current one is
    validated and another writes curated partitions (Parquet, then the manifest) in order while
    the main thread carries on; every log line is still written in order, after what it reports.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="collect-read") as reader, _Writer(log) as writer:
        return _collect_and_label(
            spec,
            problem=problem,
            run_dir=run_dir,
            as_of=as_of,
            lookback_days=lookback_days,
            pii_key=pii_key,
            source_uri=source_uri,
            labels_uri=labels_uri,
            reader=reader,
            writer=writer,
        )


class _Writer:
    """A single background thread that runs write jobs in submission order.

    ``log`` is ordered with the jobs: a message is written once every job submitted before
    it has finished, so "partition 3/28 ... curated" appears after its files are written.
    ``drain`` waits for all jobs and re-raises the first error.
    """

    def __init__(self, log: Log) -> None:
        self._log = log
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="collect-write")
        self._jobs: list[Future[Any]] = []
        self._failed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._jobs.append(self._pool.submit(self._run, fn, *args))

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._failed:  # after a failed write nothing more is written or logged
            return
        try:
            fn(*args)
        except BaseException:
            self._failed = True
            raise

    def log(self, msg: str) -> None:
        self.submit(self._log, msg)

    def drain(self) -> None:
        jobs, self._jobs = self._jobs, []
        for job in jobs:
            job.result()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            self._pool.shutdown(wait=True)  # on an error too: no write is left running


def _collect_and_label(
    spec: Spec,
    *,
    problem: Store,
    run_dir: str,
    as_of: dt.datetime,
    lookback_days: int,
    pii_key: bytes,
    source_uri: str,
    labels_uri: str | None,
    reader: ThreadPoolExecutor,
    writer: _Writer,
) -> dict[str, Any]:
    log = writer.log
    fmt = spec.data.format
    key = spec.data.key
    totals = {"rows_in": 0, "rows_curated": 0, "rows_quarantined": 0}
    by_rule: dict[str, int] = {}
    partitions: list[dict[str, Any]] = []
    token_cache: dict[str, str] = {}  # PII tokens of this run, shared by its partitions
    curated_rel: list[str] = []
    written: dict[str, pa.Table] = {}  # curated partitions written by this run, kept for the data set
    pending: list[_Pending] = []  # validated partitions waiting for their PII tokens
    files: list[dict[str, Any]] = []  # every entry of the sources this run looked at, with its outcome
    warnings: list[str] = []
    shown_source: dict[str, str] = {}  # ds -> the _source of its curated rows (its file, or its folder)
    checks = _checks(spec, as_of)

    def warn(msg: str) -> None:
        msg = mask_digits(msg)
        warnings.append(msg)
        log(f"WARNING {msg}")

    def write(p: _Pending, table: pa.Table) -> None:
        problem.write_parquet(f"{p.rel}/part-0.parquet", table)
        if len(p.qua):
            problem.write_parquet(f"quarantine/ds={p.ds}/part-0.parquet", p.qua)
        else:  # rebuilt without bad rows: an older quarantine file must not outlive its partition
            problem.remove(f"quarantine/ds={p.ds}/part-0.parquet")
        problem.write_json(f"{p.rel}/_manifest.json", {"fingerprint": p.fingerprint, "counts": p.counts})

    def flush() -> None:
        """Tokenise the pending partitions together, then sort each and hand it to the writer."""
        tokenise_partitions([(p.cur, p.qua) for p in pending], spec, pii_key=pii_key, token_cache=token_cache)
        for p in pending:
            table = pa.Table.from_pandas(sort_curated(p.cur, spec), preserve_index=False)
            written[f"{p.rel}/part-0.parquet"] = table
            writer.submit(write, p, table)
            c = p.counts
            log(
                f"partition {p.i}/{len(wanted)} ds={p.ds}: {c['rows_in']} rows in, {c['rows_curated']} curated, "
                f"{c['rows_quarantined']} quarantined {c['by_rule'] or ''}"
            )
        pending.clear()

    source: Store | None = None
    plan: dict[str, list[str]] = {}
    outside_window = 0
    missing_days: list[str] = []
    if spec.data.layout == "partitioned":
        source = Store.from_uri(source_uri)
        start, end = window_dates(as_of, lookback_days)
        scan = scan_partitions(source, "data.source")
        wanted = [ds for ds in scan.partitions if start <= ds < end]
        outside_window = len(scan.partitions) - len(wanted)
        files += [{"source": "data", **e} for e in scan.ignored]
        log(f"window [{start}, {end}): {len(wanted)} partitions under {source_uri}")
        if not scan.exists:
            warn(f"{source_uri}: the source does not exist")
        days = [(dt.date.fromisoformat(start) + dt.timedelta(days=d)).isoformat() for d in range(lookback_days)]
        missing_days = sorted(set(days) - set(wanted))
        if missing_days and scan.exists:
            more = f" and {len(missing_days) - 5} more" if len(missing_days) > 5 else ""
            warn(f"{len(missing_days)} day(s) of the window have no partition: {missing_days[:5]}{more}")
        for ds in wanted:  # every partition is listed first: a file of another format stops the run at once
            names, ignored = partition_files(source, ds, fmt, "data")
            files += [{"source": "data", **e} for e in ignored]
            plan[ds] = names
    else:
        start, end, wanted = None, None, [ALL]

    def prepare(ds: str) -> _Prepared:
        """Identify one partition's input by content; read it unless its curated partition is re-used."""
        frames: list[tuple[str, pd.DataFrame]] | None = None
        if ds == ALL and fmt == "sklearn":
            name, raw = read_single_source(source_uri, fmt)
            ids: Any = [name, len(raw), int(pd.util.hash_pandas_object(raw, index=False).sum())]
            frames, names = [(name, raw)], [name]
        elif ds == ALL:
            store, fname = _single_store(source_uri)
            uri = store.uri(fname)
            data = read_input_bytes(
                store, fname, missing="no such file (data.source)", folder="a folder, but data.layout is single_file"
            )
            ids, names = [[uri, len(data), store.content_id(fname, data)]], [uri]
            datas: list[bytes | None] = [data]
        else:
            assert source is not None
            names, ids, datas = plan[ds], [], []
            for name in names:
                rel = f"ds={ds}/{name}"
                blob = source.read_bytes(rel) if source.is_local else None  # local: hashed as read, read once
                size = len(blob) if blob is not None else int(source.fs.size(source.path(rel)))
                ids.append([name, size, source.content_id(rel, blob)])
                datas.append(blob)
        fingerprint = partition_fingerprint(spec, ids, pii_key, checks)
        old = problem.read_json_or(f"curated/ds={ds}/_manifest.json")
        reuse = bool(old) and old.get("fingerprint") == fingerprint
        if not reuse and frames is None:
            frames = []
            for name, blob in zip(names, datas, strict=True):
                if ds == ALL:
                    frames.append((name, frame_from_bytes(blob or b"", name, fmt)))
                    continue
                assert source is not None
                rel = f"ds={ds}/{name}"
                uri = source.uri(rel)
                frames.append((uri, frame_from_bytes(blob if blob is not None else source.read_bytes(rel), uri, fmt)))
        return _Prepared(ds, fingerprint, reuse, old, frames, names)

    to_read = iter(wanted)
    reads: dict[str, Future[_Prepared]] = {}

    def read_ahead() -> None:  # keep two partitions read ahead of the one being validated
        while len(reads) < 2 and (ds := next(to_read, None)) is not None:
            reads[ds] = reader.submit(prepare, ds)

    for i, ds in enumerate(wanted, 1):
        read_ahead()
        rel = f"curated/ds={ds}"
        try:
            prep = reads.pop(ds).result()
        except Exception:
            flush()  # as if partition by partition: the earlier ones are curated before the error
            raise
        read_ahead()
        where = (lambda name: name) if ds == ALL else (lambda name, ds=ds: f"ds={ds}/{name}")
        if prep.reuse:
            flush()  # earlier partitions first: the log stays in partition order
            assert prep.old is not None
            counts = prep.old["counts"]
            log(f"partition {i}/{len(wanted)} ds={ds}: already curated from the same input, re-used")
            outcome = "re-used"
        else:
            assert prep.frames is not None
            bounds = partition_bounds(spec, ds) if ds != ALL else None
            if ds == ALL and spec.data.time_column:
                bounds = TimeBounds(spec.data.time_column, now=_utc(as_of))
            try:
                cur, qua, counts = validate_partition(prep.frames, spec, bounds=bounds)
            except Exception:
                flush()
                raise
            counts["files"] = [
                {"name": name, "rows": _rows_of(df)} for name, (_, df) in zip(prep.names, prep.frames, strict=True)
            ]
            prep.frames = None  # the raw rows are not needed any more
            old_rows = int(((prep.old or {}).get("counts") or {}).get("rows_in") or 0)
            if counts["rows_in"] == 0 and old_rows:
                flush()
                what = ", ".join(f"{where(f['name'])}: 0 rows" for f in counts["files"]) or "no data files"
                raise EmptyInputError(
                    mask_digits(
                        f"{source_uri if ds == ALL else source.uri(f'ds={ds}') if source else source_uri}: "
                        f"the input now holds 0 rows ({what}) where curated/ds={ds} holds {old_rows} input rows "
                        f"curated earlier from other files; an empty delivery does not replace curated data. "
                        f"If the day really is empty, delete {problem.uri(rel, '_manifest.json')} and run again"
                    )
                )
            if not counts["files"]:
                warn(f"ds={ds}: the partition folder holds no data files: curated as an empty day")
            for f in counts["files"]:
                if not f["rows"]:
                    warn(f"{where(f['name'])}: the file holds 0 rows")
            pending.append(_Pending(i, ds, rel, prep.fingerprint, cur, qua, counts))
            if sum(p.counts["rows_in"] for p in pending) >= TOKENISE_BATCH_ROWS:
                flush()
            outcome = "read"
        for f in counts.get("files", []):
            files.append(
                {
                    "source": "data",
                    "path": where(f["name"]),
                    "format": fmt,
                    "rows": f["rows"],
                    "outcome": outcome if f["rows"] or outcome == "re-used" else "empty",
                }
            )
        names = [f["name"] for f in counts.get("files", [])]
        if ds == ALL or source is None:
            shown_source[ds] = names[0] if names else source_uri
        else:
            shown_source[ds] = source.uri(f"ds={ds}", names[0]) if len(names) == 1 else source.uri(f"ds={ds}")
        curated_rel.append(f"{rel}/part-0.parquet")
        partitions.append({"ds": ds, **counts})
        for k in totals:
            totals[k] += counts[k]
        for k, v in counts["by_rule"].items():
            by_rule[k] = by_rule.get(k, 0) + v
    flush()
    # the partitions just written are still in memory: read back only the re-used ones
    tables = [written[r] if r in written else problem.read_table(r) for r in curated_rel]
    rows = concat_tables(tables) if tables else None
    cross: dict[str, Any] = {"duplicate_key": 0, "history_partitions": 0, "quarantine_rel": None}
    if rows is not None and key and spec.data.layout == "partitioned" and len(rows):
        assert start is not None and end is not None
        history = _history_keys(spec, problem, start, end, pii_key)
        cross["history_partitions"] = len(history)
        found = _cross_partition_duplicates(spec, rows, [len(t) for t in tables], wanted, history, shown_source)
        if found is not None:
            drop, dup_qua, per_ds = found
            rows = rows.filter(pa.array(~drop))
            qrel = RunLayout.quarantine_in(run_dir, "cross_partition")
            writer.submit(problem.write_parquet, qrel, dup_qua)
            n_dup = int(drop.sum())
            cross.update(duplicate_key=n_dup, quarantine_rel=qrel)
            count_cross_partition(partitions, totals, by_rule, per_ds)
            log(
                f"cross-partition: {n_dup} rows whose {key} was delivered on an earlier day quarantined "
                f"(duplicate_key) -> {problem.uri(qrel)}"
            )
    immature = 0
    labels = None
    label_positions = np.zeros(0, dtype=np.int64)
    mature_rows: np.ndarray | None = None
    label_summary: dict[str, Any] = {}
    if spec.data.labels is not None:
        labels_store = Store.from_uri(labels_uri or spec.data.labels.source)
        lab_end = (as_of.date() + dt.timedelta(days=1)).isoformat()
        time_column = spec.data.time_column
        events = None
        if rows is not None and key and len(rows):
            events = (rows.column(key), rows.column(time_column) if time_column else None)
        result = collect_labels(
            spec,
            labels_store,
            start or "0000",
            lab_end,
            as_of,
            events=events,
            pii_key=pii_key,
            token_cache=token_cache,
            log=log,
        )
        files += result.files
        labels = result.usable
        label_positions = result.positions
        qrel = None
        if len(result.quarantined):
            qrel = RunLayout.quarantine_in(run_dir, "labels")
            writer.submit(problem.write_parquet, qrel, result.quarantined)
        label_summary = label_counts(result, qrel)
        maturity_days = spec.data.labels.maturity_days
        if rows is not None and maturity_days and time_column and len(rows):
            # the immature rows are left out in Arrow, before the rows become pandas; taken as pandas
            # takes them (``dataset[mature]``), so the data set file is written alike
            cutoff = _utc(as_of) - pd.Timedelta(days=maturity_days)
            mature = (rows.select([time_column]).to_pandas()[time_column] < cutoff).to_numpy()
            mature_rows = mature
            immature = int((~mature).sum())
            # rows come by day, then time: the mature ones are (nearly always) a prefix, sliced without a copy
            n_mature = int(mature.sum())
            rows = rows.slice(0, n_mature) if mature[:n_mature].all() else rows.filter(pa.array(mature))
            log(f"labels: left out {immature} rows younger than {maturity_days} days (labels not mature)")
    if rows is None:
        dataset = pd.DataFrame({c.name: pd.Series(dtype="object") for c in spec.schema_.columns})
    else:
        dataset = rows.to_pandas()
    label_rows = None
    if labels is not None:
        dataset = join_labels(dataset, labels, spec)
        # a usable label is used when its row made it into the data set (not left out as immature)
        found = label_positions[label_positions >= 0]
        used = int(mature_rows[found].sum()) if mature_rows is not None else len(found)
        label_rows = used
        account_labels(label_summary, len(labels), used, problem, warn)
    dataset_rel = RunLayout.dataset_in(run_dir)
    writer.submit(problem.write_parquet, dataset_rel, dataset)  # after the partitions, as before
    summary = run_summary(
        spec,
        problem,
        totals=totals,
        by_rule=by_rule,
        window={"start": start, "end": end, "as_of": as_of.isoformat(), "lookback_days": lookback_days},
        partitions=partitions,
        dataset_rel=dataset_rel,
        dataset=dataset,
        label_rows=label_rows,
        label_summary=label_summary,
        immature=immature,
        source_uri=source_uri,
        labels_uri=labels_uri,
        files=files,
        outside_window=outside_window,
        missing_days=missing_days,
        cross=cross,
        warnings=warnings,
    )
    log(
        f"collect_and_label: {totals['rows_in']} rows in = {totals['rows_curated']} curated + "
        f"{totals['rows_quarantined']} quarantined; data set {len(dataset)} rows -> {summary['dataset_uri']}"
    )
    writer.drain()
    return summary


# --- the summary's bookkeeping, shared with the Spark path (collect_spark.py) ----------------------
def count_cross_partition(
    partitions: list[dict[str, Any]], totals: dict[str, int], by_rule: dict[str, int], per_ds: dict[str, int]
) -> None:
    """Move the rows whose key was delivered on an earlier day (``per_ds``: how many per partition)
    from curated to quarantined (rule ``duplicate_key``) in the partitions' counts and the totals."""
    n_dup = 0
    for entry in partitions:
        n = int(per_ds.get(entry["ds"], 0))
        if n:
            entry["rows_curated"] -= n
            entry["rows_quarantined"] += n
            entry["by_rule"] = {**entry["by_rule"], "duplicate_key": entry["by_rule"].get("duplicate_key", 0) + n}
            entry["cross_partition_duplicates"] = n
            n_dup += n
    totals["rows_curated"] -= n_dup
    totals["rows_quarantined"] += n_dup
    by_rule["duplicate_key"] = by_rule.get("duplicate_key", 0) + n_dup


def label_counts(result: LabelResult, quarantine_rel: str | None) -> dict[str, Any]:
    """The label feed's counts in the summary."""
    return {
        "label_rows_read": result.counts["rows_read"],
        "label_rows_in": result.counts["rows_in"],
        "label_rows_quarantined": result.counts["rows_quarantined"],
        "label_rows_not_yet_arrived": result.counts["rows_not_yet_arrived"],
        "label_by_rule": result.counts["by_rule"],
        "label_quarantine_rel": quarantine_rel,
    }


def account_labels(
    label_summary: dict[str, Any], usable: int, used: int, problem: Store, warn: Callable[[str], None]
) -> None:
    """Every label row counted once: used (its row is in the data set), unmatched or quarantined."""
    label_summary["label_rows_unmatched"] = usable - used
    if (
        label_summary["label_rows_in"]
        != used + label_summary["label_rows_unmatched"] + label_summary["label_rows_quarantined"]
    ):
        raise AssertionError(f"label accounting broken: {label_summary}")
    if label_summary["label_rows_quarantined"]:
        warn(
            f"{label_summary['label_rows_quarantined']} label rows quarantined {label_summary['label_by_rule']} "
            f"-> {problem.uri(label_summary['label_quarantine_rel'])}"
        )


def run_summary(
    spec: Spec,
    problem: Store,
    *,
    totals: dict[str, int],
    by_rule: dict[str, int],
    window: dict[str, Any],
    partitions: list[dict[str, Any]],
    dataset_rel: str,
    dataset: pd.DataFrame,
    label_rows: int | None,
    label_summary: dict[str, Any],
    immature: int,
    source_uri: str,
    labels_uri: str | None,
    files: list[dict[str, Any]],
    outside_window: int,
    missing_days: list[str],
    cross: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """The run's collection summary (``collect_summary.json``): counts, files by outcome, positives."""
    outcomes: dict[str, dict[str, int]] = {}
    for f in files:
        per = outcomes.setdefault(f["source"], {})
        per[f["outcome"]] = per.get(f["outcome"], 0) + 1
    summary = {
        **totals,
        "by_rule": by_rule,
        "window": window,
        "partitions": partitions,
        "dataset_uri": problem.uri(dataset_rel),
        "dataset_rel": dataset_rel,
        "dataset_rows": len(dataset),
        "label_rows_used": label_rows,
        **label_summary,
        "immature_rows_left_out": immature,
        "source_uri": source_uri,
        "labels_uri": (labels_uri or spec.data.labels.source) if spec.data.labels else None,
        "files": files,
        "files_by_outcome": outcomes,
        "partitions_outside_window": outside_window,
        "missing_days": missing_days,
        "partition_tolerance_hours": spec.data.partition_tolerance_hours if spec.data.time_column else None,
        "cross_partition": cross,
        "warnings": warnings,
    }
    target = spec.problem.target
    if target in dataset.columns and spec.is_binary:
        # each distinct value compared once, by the rule every section uses (dataset.label_key)
        value_counts = dataset[target].value_counts(dropna=True)
        matches = positive_mask(
            pd.Series(value_counts.index, dtype=value_counts.index.dtype), spec.problem.positive_label
        )
        summary["positives"] = int(value_counts.to_numpy()[matches].sum())
    return summary


def history_partitions(spec: Spec, problem: Store, start: str, end: str, pii_key: bytes) -> list[str]:
    """The curated partitions before the window, back to ``data.max_lookback_days`` before its end,
    that were curated with this schema, key column and PII key (their keys count as delivered)."""
    key = spec.data.key
    assert key is not None
    lo = (dt.date.fromisoformat(end) - dt.timedelta(days=spec.data.max_lookback_days)).isoformat()
    schema_fp, key_fp = spec.schema_.model_dump_json(), key_fingerprint(pii_key)
    out = []
    for ds in list_partitions(problem.sub("curated")):
        if not lo <= ds < start:
            continue
        fp = (problem.read_json_or(f"curated/ds={ds}/_manifest.json") or {}).get("fingerprint") or {}
        if fp.get("spec") != schema_fp or fp.get("key") != key_fp or (fp.get("checks") or {}).get("key_column") != key:
            continue
        out.append(ds)
    return out


def _history_keys(
    spec: Spec, problem: Store, start: str, end: str, pii_key: bytes
) -> list[tuple[str, pa.ChunkedArray]]:
    """Keys of the :func:`history_partitions` (a key seen there and delivered again in the window
    is a duplicate)."""
    key = spec.data.key
    assert key is not None
    out = []
    for ds in history_partitions(spec, problem, start, end, pii_key):
        try:
            out.append((ds, problem.read_table(f"curated/ds={ds}/part-0.parquet", columns=[key]).column(key)))
        except (OSError, pa.ArrowException, KeyError):  # unreadable history only weakens the check
            continue
    return out


def _cross_partition_duplicates(
    spec: Spec,
    rows: pa.Table,
    lengths: list[int],
    dss: list[str],
    history: list[tuple[str, pa.ChunkedArray]],
    shown_source: dict[str, str],
) -> tuple[np.ndarray, pd.DataFrame, dict[str, int]] | None:
    """The window's curated rows whose key was delivered on an earlier day (of the window, or of
    ``history``): their mask, their quarantine rows and their count per partition; None: none.

    Keys are unique within a curated partition, so only partitions whose key ranges overlap can
    share a key: the keys of those are hashed, in day order (none, when keys grow with the day)."""
    key = spec.data.key
    assert key is not None
    keys = rows.column(key)
    segments: list[tuple[str, pa.ChunkedArray, int | None]] = []  # day, keys, offset in the window (None: history)
    for ds, values in history:
        try:
            segments.append((ds, values.cast(keys.type), None))
        except (pa.ArrowException, TypeError, ValueError):  # keys of another kind cannot repeat these
            continue
    at = 0
    for ds, n in zip(dss, lengths, strict=True):
        segments.append((ds, keys.slice(at, n), at))
        at += n
    involved = _overlapping([values for _, values, _ in segments])
    if not any(involved[i] and segments[i][2] is not None for i in range(len(segments))):
        return None
    chosen = [seg for seg, inv in zip(segments, involved, strict=True) if inv]
    chunks = [c for _, values, _ in chosen for c in values.chunks]
    encoded = pc.dictionary_encode(pa.chunked_array(chunks, type=keys.type).combine_chunks())
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    present = codes >= 0
    seen = np.maximum.accumulate(np.where(present, codes, -1))
    dup = np.zeros(len(codes), dtype=bool)
    dup[1:] = present[1:] & (codes[1:] <= seen[:-1])  # codes count up in order of first appearance
    if not dup.any():
        return None
    ends = np.cumsum([len(values) for _, values, _ in chosen])
    seg_of = np.searchsorted(ends, np.arange(len(codes)), side="right")
    first = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    where = np.flatnonzero(present)
    first[codes[where][::-1]] = where[::-1]  # the last write wins: the first position of each code
    starts = ends - np.asarray([len(values) for _, values, _ in chosen])
    drop = np.zeros(len(rows), dtype=bool)
    window_idx, first_ds, own_ds = [], [], []
    for p in np.flatnonzero(dup):
        day, _, offset = chosen[seg_of[p]]
        if offset is None:  # a history key repeated in the history: not this run's concern
            continue
        row = offset + int(p - starts[seg_of[p]])
        drop[row] = True
        window_idx.append(row)
        own_ds.append(day)
        first_ds.append(chosen[seg_of[first[codes[p]]]][0])
    if not window_idx:
        return None
    frame = rows.take(pa.array(window_idx)).to_pandas()
    qua = _with_duplicates(
        pd.DataFrame(),
        frame,
        spec,
        np.asarray([shown_source.get(d, "") for d in own_ds], dtype=object),
        [f"first delivered in ds={d}" for d in first_ds],
    )
    qua["_ds"] = own_ds
    per_ds: dict[str, int] = {}
    for d in own_ds:
        per_ds[d] = per_ds.get(d, 0) + 1
    return drop, qua, per_ds


def _overlapping(arrays: list[pa.ChunkedArray]) -> list[bool]:
    """Which arrays' [min, max] ranges overlap another's (a superset: members of overlapping runs)."""
    ranges = []
    for i, values in enumerate(arrays):
        if len(values) == values.null_count:
            continue
        try:
            mm = pc.min_max(values).as_py()
        except (pa.ArrowException, TypeError, ValueError):  # no order: assume an overlap
            return [True] * len(arrays)
        ranges.append((mm["min"], mm["max"], i))
    ranges.sort(key=lambda r: (r[0], r[1]))
    involved = [False] * len(arrays)
    cluster: list[int] = []
    top = None
    for lo, hi, i in ranges:
        if cluster and top is not None and lo <= top:
            cluster.append(i)
            top = max(top, hi)
            continue
        if len(cluster) > 1:
            for j in cluster:
                involved[j] = True
        cluster, top = [i], hi
    if len(cluster) > 1:
        for j in cluster:
            involved[j] = True
    return involved
