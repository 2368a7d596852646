"""Section 2, collect and label: the ETL from landing data to a curated, labelled data set.

Per input partition: cast to the declared schema, quarantine rows that break it (with the
rule, the column and the value), de-duplicate on the key, tokenise PII with a keyed hash and
write the curated partition. Per run: read the curated partitions of the window ending at
the data interval end and join the labels that had arrived by then. Input is never modified;
rows in = rows curated + rows quarantined, per partition and in total.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.lifecycle.dataset import positive_mask
from include.lifecycle.spec import ColumnSpec, SchemaSpec, Spec
from include.lifecycle.store import Store, concat_tables

Log = Callable[[str], None]
_DS = re.compile(r"^ds=(\d{4}-\d{2}-\d{2})$")
ALL = "all"  # the single "partition" of a single-file source


class SchemaError(ValueError):
    """A whole input file does not fit the spec (e.g. a declared column is missing)."""


def _noop(_: str) -> None:
    pass


def _utc(as_of: dt.datetime) -> pd.Timestamp:
    """``as_of`` as a UTC timestamp; a naive datetime (e.g. ``--as-of 2026-11-01``) is taken as UTC."""
    ts = pd.Timestamp(as_of)
    return ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")


# --- reading ---------------------------------------------------------------------------------
def list_partitions(source: Store) -> list[str]:
    """The ``YYYY-MM-DD`` dates of the ``ds=`` folders under a source, sorted."""
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
    files = [n for n in source.ls(rel) if n.endswith(f".{fmt}") and not n.startswith(".")]
    return [(source.uri(rel, n), _read(source, f"{rel}/{n}", fmt, columns)) for n in files]


def _read(store: Store, rel: str, fmt: str, columns: list[str] | None = None) -> pd.DataFrame:
    if fmt == "parquet":
        if columns is not None:
            try:
                return store.read_parquet(rel, columns=columns)
            except (pa.ArrowInvalid, KeyError):  # a column is missing: read it all, the caller names it
                pass
        return store.read_parquet(rel)
    with store.fs.open(store.path(rel), "rb") as fh:
        return pd.read_csv(fh, dtype=str, keep_default_na=False, na_values=[""])


def read_single_source(source: str, fmt: str) -> tuple[str, pd.DataFrame]:
    """A single CSV/Parquet file or a bundled ``sklearn:<loader>`` data set."""
    if fmt == "sklearn":
        import sklearn.datasets

        name = source.split(":", 1)[1]
        loader = getattr(sklearn.datasets, name, None)
        if loader is None or not name.startswith("load_"):
            raise SchemaError(f"{source}: not a bundled scikit-learn data set (use sklearn:load_<name>)")
        return source, loader(as_frame=True).frame
    parent, _, name = source.rstrip("/").rpartition("/")
    store = Store.from_uri(parent or ".")
    return store.uri(name), _read(store, name, fmt)


# --- casting and validation ------------------------------------------------------------------
@dataclass
class CastResult:
    curated: pd.DataFrame
    quarantined: pd.DataFrame
    by_rule: dict[str, int] = field(default_factory=dict)
    dropped_columns: list[str] = field(default_factory=list)


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
        out = pd.to_numeric(raw, errors="coerce").astype("float64")
        return out
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
        text = raw.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
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


def cast_and_validate(
    df: pd.DataFrame,
    schema: SchemaSpec,
    *,
    source: str,
    key: str | None,
    extra_columns: str = "drop",
    target: str | None = None,
) -> CastResult:
    """Cast ``df`` to the schema; every row that breaks a rule goes to quarantine with its reason.

    Raises :class:`SchemaError` naming the file and column when a declared column is absent.
    The first broken rule of a row is recorded (target_missing, not_null, dtype, min, max,
    allowed, duplicate_key). ``target``: the target column when the rows carry their own labels;
    a row whose target value is missing (null, NaN, blank) is quarantined with rule
    ``target_missing``: an unlabelled row is never read as a negative.
    """
    typed, good, res = _cast_and_validate(
        df, schema, source=source, key=key, extra_columns=extra_columns, target=target
    )
    res.curated = (typed if good.all() else typed.iloc[np.flatnonzero(good)]).reset_index(drop=True)
    return res


def _cast_and_validate(
    df: pd.DataFrame, schema: SchemaSpec, *, source: str, key: str | None, extra_columns: str, target: str | None = None
) -> tuple[pd.DataFrame, np.ndarray, CastResult]:
    """:func:`cast_and_validate` before its curated rows are taken: every row cast, the mask of the
    rows that break no rule and the result with an empty ``curated``."""
    missing = [c.name for c in schema.columns if c.name not in df.columns]
    if missing:
        raise SchemaError(
            f"{source}: column(s) {missing} declared in the spec schema are missing "
            f"(rule: every schema column must be present; found {list(df.columns)})"
        )
    extra = [c for c in df.columns if c not in schema.names]
    n = len(df)
    rule = np.full(n, "", dtype=object)
    column = np.full(n, "", dtype=object)
    free = np.ones(n, dtype=bool)  # rows with no broken rule yet
    cast: dict[str, pd.Series] = {}

    def flag(mask: np.ndarray, rule_name: str, col: str) -> None:
        fresh = mask & free
        if fresh.any():
            rule[fresh] = rule_name
            column[fresh] = col
            free[fresh] = False

    for col in schema.columns:
        raw = df[col.name]
        text = _arrow_text(raw) if col.dtype in ("string", "category") else None
        if text is not None:  # Arrow text: strip, blank is missing, without a pandas string round trip
            values, raw_missing, isin = _cast_arrow_text(text, raw.index, col.allowed)
        else:
            isin = None
            raw_missing = raw.isna().to_numpy()
            stripped = blank = None
            if pd.api.types.is_object_dtype(raw) or pd.api.types.is_string_dtype(raw):
                # only text can be blank; typed columns (numbers, timestamps) need no string round trip
                stripped = raw.astype("string").str.strip()
                blank = stripped == ""
                raw_missing = raw_missing | blank.fillna(True).to_numpy()
            values = _cast_column(raw, col, stripped, blank)
        now_missing = values.isna().to_numpy()
        if col.name == target:
            flag(raw_missing, "target_missing", col.name)
        if not col.nullable:
            flag(raw_missing, "not_null", col.name)
        flag(now_missing & ~raw_missing, f"dtype:{col.dtype}", col.name)
        if col.dtype == "int":
            flag(~now_missing & (values.fillna(0) % 1 != 0).to_numpy(), "dtype:int", col.name)
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
    for col in schema.columns:
        if col.dtype == "int" and not typed[col.name].isna().any():
            typed[col.name] = typed[col.name].astype("int64")
        elif col.dtype == "int":
            typed[col.name] = typed[col.name].astype("Int64")
    good = free.copy()
    if key is not None:
        # only a valid row can be "the first" of its key: a broken first row must not push a good one out
        dup = np.zeros(n, dtype=bool)
        dup[good] = _duplicated(typed[key][good])
        flag(dup, "duplicate_key", key)
        good = free.copy()
    bad_idx = np.flatnonzero(~good)
    quarantined = df.iloc[bad_idx].astype("string").copy()
    quarantined["_rule"] = rule[bad_idx].astype(str)
    quarantined["_column"] = column[bad_idx].astype(str)
    pii = {c.name for c in schema.columns if c.pii}
    quarantined["_reason"] = [
        f"{c}={'<pii>' if c in pii else repr(df[c].iloc[i])} breaks rule {r}"
        for i, c, r in zip(bad_idx, column[bad_idx], rule[bad_idx], strict=True)
    ]
    quarantined["_source"] = source
    by_rule = dict(zip(*np.unique(rule[bad_idx].astype(str), return_counts=True), strict=True))
    return (
        typed,
        good,
        CastResult(
            typed.iloc[:0],
            quarantined.reset_index(drop=True),
            {str(k): int(v) for k, v in by_rule.items()},
            extra if extra_columns != "keep" else [],
        ),
    )


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
    keyed = hashlib.blake2b(key=key[:64], digest_size=12)  # copied per value: the key block is hashed once
    tokens = [memo.get(u) for u in uniques]
    for i in [i for i, t in enumerate(tokens) if t is None]:
        u = uniques[i]
        mac = keyed.copy()
        mac.update(u.encode())
        tokens[i] = memo[u] = mac.hexdigest()
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
    frames: list[tuple[str, pd.DataFrame]], spec: Spec, *, pii_key: bytes, token_cache: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Curate all files of one partition; return curated, quarantined and the counts."""
    cur, qua, counts = validate_partition(frames, spec)
    tokenise_partitions([(cur, qua)], spec, pii_key=pii_key, token_cache=token_cache)
    return sort_curated(cur, spec), qua, counts


def validate_partition(
    frames: list[tuple[str, pd.DataFrame]], spec: Spec
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The first steps of :func:`curate_partition`: cast, quarantine, de-duplicate (PII not yet tokenised)."""
    curated, quarantined, by_rule, dropped, sources = [], [], {}, set(), []
    rows_in = 0
    key = spec.data.key
    single: tuple[pd.DataFrame, np.ndarray] | None = None  # one file: its cast rows and good-row positions
    for source, raw in frames:
        rows_in += len(raw)
        typed, good, res = _cast_and_validate(
            raw,
            spec.schema_,
            source=source,
            key=None,
            extra_columns=spec.schema_.extra_columns,
            target=labelled_target(spec),
        )
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


def _with_duplicates(qua: pd.DataFrame, dups: pd.DataFrame, spec: Spec, sources: np.ndarray) -> pd.DataFrame:
    """The quarantine with the curated rows ``dups`` (not the first of their key) appended."""
    key = spec.data.key
    assert key is not None
    shown = ["<pii>" if key in spec.pii_columns else repr(v) for v in dups[key]]
    dups = dups.astype("string")
    dups["_rule"] = "duplicate_key"
    dups["_column"] = key
    dups["_reason"] = [f"{key}={v} breaks rule duplicate_key" for v in shown]
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
def read_labels(
    spec: Spec, labels_source: Store, start: str, end_exclusive: str, as_of: dt.datetime, log: Log = _noop
) -> pd.DataFrame:
    """Label rows that had arrived before ``as_of`` (partitions ds in [start, end))."""
    lab = spec.data.labels
    assert lab is not None
    frames = []
    for ds in list_partitions(labels_source):
        if start <= ds < end_exclusive:
            frames += [f for _, f in read_partition_files(labels_source, ds, lab.format, [lab.key, lab.arrived_at])]
    if not frames:
        return pd.DataFrame({lab.key: pd.Series(dtype="str"), lab.arrived_at: pd.Series(dtype="datetime64[us, UTC]")})
    labels = pd.concat(frames, ignore_index=True)
    for col in (lab.key, lab.arrived_at):
        if col not in labels.columns:
            raise SchemaError(
                f"{labels_source.uri()}: label column {col!r} is missing (rule: labels.key and "
                f"labels.arrived_at must be columns of the label feed)"
            )
    arrived = pd.to_datetime(labels[lab.arrived_at], utc=True, errors="coerce")
    ts_as_of = _utc(as_of)
    usable = labels[(arrived < ts_as_of).to_numpy()]
    log(f"labels: {len(labels)} rows in feed window, {len(usable)} arrived before {ts_as_of.isoformat()}")
    return usable


def join_labels(curated: pd.DataFrame, labels: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """Positive where the key appears in the label feed, negative otherwise."""
    lab = spec.data.labels
    assert lab is not None and spec.data.key is not None
    positive = curated[spec.data.key].isin(set(labels[lab.key].astype(str)))
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


def manifest_matches(problem: Store, ds: str, fingerprint: dict[str, Any]) -> bool:
    old = problem.read_json_or(f"curated/ds={ds}/_manifest.json")
    return bool(old) and old.get("fingerprint") == fingerprint


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

    One background thread reads the next partition while the current one is validated and
    another writes curated partitions (Parquet, then the manifest) in order while the main
    thread carries on; every log line is still written in order, after what it reports.
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
    totals = {"rows_in": 0, "rows_curated": 0, "rows_quarantined": 0}
    by_rule: dict[str, int] = {}
    partitions: list[dict[str, Any]] = []
    token_cache: dict[str, str] = {}  # PII tokens of this run, shared by its partitions
    curated_rel: list[str] = []
    written: dict[str, pa.Table] = {}  # curated partitions written by this run, kept for the data set
    pending: list[_Pending] = []  # validated partitions waiting for their PII tokens

    def write(p: _Pending, table: pa.Table) -> None:
        problem.write_parquet(f"{p.rel}/part-0.parquet", table)
        if len(p.qua):
            problem.write_parquet(f"quarantine/ds={p.ds}/part-0.parquet", p.qua)
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

    if spec.data.layout == "partitioned":
        source = Store.from_uri(source_uri)
        start, end = window_dates(as_of, lookback_days)
        wanted = [ds for ds in list_partitions(source) if start <= ds < end]
        log(f"window [{start}, {end}): {len(wanted)} partitions under {source_uri}")
    else:
        start, end, wanted = None, None, [ALL]
    plans: list[tuple[str, Any, dict[str, Any], bool]] = []  # ds, frames (ALL only), fingerprint, re-use
    for ds in wanted:
        if ds == ALL:
            name, raw = read_single_source(source_uri, spec.data.format)
            frames: Any = [(name, raw)]
            fp_src: Any = [name, len(raw), int(pd.util.hash_pandas_object(raw, index=False).sum())]
        else:
            files = [n for n in source.ls(f"ds={ds}") if not n.startswith(".")]
            fp_src = [[n, source.fs.size(source.path(f"ds={ds}", n))] for n in files]
            frames = None
        fingerprint = {"source": fp_src, "spec": spec.schema_.model_dump_json(), "key": key_fingerprint(pii_key)}
        if labelled_target(spec):  # curation checks the target too (rule target_missing)
            fingerprint["target"] = labelled_target(spec)
        plans.append((ds, frames, fingerprint, manifest_matches(problem, ds, fingerprint)))
    to_read = iter([ds for ds, frames, _, reuse in plans if frames is None and not reuse])
    reads: dict[str, Future[list[tuple[str, pd.DataFrame]]]] = {}

    def read_ahead() -> None:  # keep two partitions read ahead of the one being validated
        while len(reads) < 2 and (ds := next(to_read, None)) is not None:
            reads[ds] = reader.submit(read_partition_files, source, ds, spec.data.format)

    for i, (ds, frames, fingerprint, reuse) in enumerate(plans, 1):
        read_ahead()
        rel = f"curated/ds={ds}"
        if reuse:
            flush()  # earlier partitions first: the log stays in partition order
            counts = problem.read_json(f"{rel}/_manifest.json")["counts"]
            log(f"partition {i}/{len(wanted)} ds={ds}: already curated from the same input, re-used")
        else:
            if frames is None:
                frames = reads.pop(ds).result()
                read_ahead()
            try:
                cur, qua, counts = validate_partition(frames, spec)
            except Exception:
                flush()  # as if partition by partition: the earlier ones are curated before the error
                raise
            del frames  # the raw rows are not needed any more
            pending.append(_Pending(i, ds, rel, fingerprint, cur, qua, counts))
            if sum(p.counts["rows_in"] for p in pending) >= TOKENISE_BATCH_ROWS:
                flush()
        curated_rel.append(f"{rel}/part-0.parquet")
        partitions.append({"ds": ds, **counts})
        for k in totals:
            totals[k] += counts[k]
        for k, v in counts["by_rule"].items():
            by_rule[k] = by_rule.get(k, 0) + v
    flush()
    # the partitions just written are still in memory: read back only the re-used ones
    rows = concat_tables([written.get(r) or problem.read_table(r) for r in curated_rel]) if curated_rel else None
    label_rows = None
    immature = 0
    labels = None
    if spec.data.labels is not None:
        labels_store = Store.from_uri(labels_uri or spec.data.labels.source)
        lab_end = (as_of.date() + dt.timedelta(days=1)).isoformat()
        labels = read_labels(spec, labels_store, start or "0000", lab_end, as_of, log)
        label_rows = len(labels)
        time_column, maturity_days = spec.data.time_column, spec.data.labels.maturity_days
        if rows is not None and maturity_days and time_column and len(rows):
            # the immature rows are left out in Arrow, before the rows become pandas; taken as pandas
            # takes them (``dataset[mature]``), so the data set file is written alike
            cutoff = _utc(as_of) - pd.Timedelta(days=maturity_days)
            mature = (rows.select([time_column]).to_pandas()[time_column] < cutoff).to_numpy()
            immature = int((~mature).sum())
            rows = rows if mature.all() else rows.take(pa.array(np.flatnonzero(mature)))
            log(f"labels: left out {immature} rows younger than {maturity_days} days (labels not mature)")
    if rows is None:
        dataset = pd.DataFrame({c.name: pd.Series(dtype="object") for c in spec.schema_.columns})
    else:
        dataset = rows.to_pandas()
    if labels is not None:
        dataset = join_labels(dataset, labels, spec)
    dataset_rel = f"{run_dir}/dataset.parquet"
    writer.submit(problem.write_parquet, dataset_rel, dataset)  # after the partitions, as before
    summary = {
        **totals,
        "by_rule": by_rule,
        "window": {"start": start, "end": end, "as_of": as_of.isoformat(), "lookback_days": lookback_days},
        "partitions": partitions,
        "dataset_uri": problem.uri(dataset_rel),
        "dataset_rel": dataset_rel,
        "dataset_rows": len(dataset),
        "label_rows_used": label_rows,
        "immature_rows_left_out": immature,
    }
    target = spec.problem.target
    if target in dataset.columns and spec.is_binary:
        # each distinct value compared once, by the rule every section uses (dataset.label_key)
        counts = dataset[target].value_counts(dropna=True)
        matches = positive_mask(pd.Series(counts.index, dtype=counts.index.dtype), spec.problem.positive_label)
        summary["positives"] = int(counts.to_numpy()[matches].sum())
    log(
        f"collect_and_label: {totals['rows_in']} rows in = {totals['rows_curated']} curated + "
        f"{totals['rows_quarantined']} quarantined; data set {len(dataset)} rows -> {summary['dataset_uri']}"
    )
    writer.drain()
    return summary
