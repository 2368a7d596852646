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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.spec import ColumnSpec, SchemaSpec, Spec
from include.lifecycle.store import Store

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


def read_partition_files(source: Store, ds: str, fmt: str) -> list[tuple[str, pd.DataFrame]]:
    rel = f"ds={ds}"
    files = [n for n in source.ls(rel) if n.endswith(f".{fmt}") and not n.startswith(".")]
    return [(source.uri(rel, n), _read(source, f"{rel}/{n}", fmt)) for n in files]


def _read(store: Store, rel: str, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
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


def _cast_column(raw: pd.Series, col: ColumnSpec) -> pd.Series:
    """Cast one column; values that cannot be cast become missing (and are then flagged)."""
    if col.dtype in ("int", "float"):
        out = pd.to_numeric(raw, errors="coerce").astype("float64")
        return out
    if col.dtype == "bool":
        if pd.api.types.is_bool_dtype(raw):
            return raw.astype("boolean")
        mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
        return raw.astype("string").str.strip().str.lower().map(mapping).astype("boolean")
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
    else:
        text = raw.astype("string").str.strip()
    return text.mask(text == "").astype("str")


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
    df: pd.DataFrame, schema: SchemaSpec, *, source: str, key: str | None, extra_columns: str = "drop"
) -> CastResult:
    """Cast ``df`` to the schema; every row that breaks a rule goes to quarantine with its reason.

    Raises :class:`SchemaError` naming the file and column when a declared column is absent.
    The first broken rule of a row is recorded (not_null, dtype, min, max, allowed, duplicate_key).
    """
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
    cast: dict[str, pd.Series] = {}

    def flag(mask: np.ndarray, rule_name: str, col: str) -> None:
        fresh = mask & (rule == "")
        rule[fresh] = rule_name
        column[fresh] = col

    for col in schema.columns:
        raw = df[col.name]
        values = _cast_column(raw, col)
        raw_missing = raw.isna().to_numpy()
        if pd.api.types.is_object_dtype(raw) or pd.api.types.is_string_dtype(raw):
            # only text can be blank; typed columns (numbers, timestamps) need no string round trip
            raw_missing = raw_missing | (raw.astype("string").str.strip() == "").fillna(True).to_numpy()
        now_missing = values.isna().to_numpy()
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
            ok = values.isin(col.allowed).to_numpy() | now_missing
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
    good = rule == ""
    if key is not None:
        # only a valid row can be "the first" of its key: a broken first row must not push a good one out
        dup = np.zeros(n, dtype=bool)
        dup[good] = typed[key][good].duplicated(keep="first").to_numpy()
        flag(dup, "duplicate_key", key)
        good = rule == ""
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
    by_rule = pd.Series(rule[bad_idx]).value_counts().sort_index().to_dict() if len(bad_idx) else {}
    curated = typed.iloc[np.flatnonzero(good)].reset_index(drop=True)
    return CastResult(
        curated,
        quarantined.reset_index(drop=True),
        {str(k): int(v) for k, v in by_rule.items()},
        extra if extra_columns != "keep" else [],
    )


def tokenise(values: pd.Series, key: bytes, cache: dict[str, str] | None = None) -> pd.Series:
    """Keyed hash (BLAKE2b MAC, 96 bits, hex) of each value; the same value gives the same token.

    Only distinct values are hashed, so a million rows of a hundred thousand cards cost a
    hundred thousand hashes; ``cache`` (one per key) carries tokens across the partitions of a run.
    """
    if not key:
        raise ValueError("the PII hash key is empty: set the Airflow variable ml_pii_hash_key")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    memo: dict[str, str] = {} if cache is None else cache
    mac = key[:64]
    out: list[str | None] = []
    for u in map(str, uniques.tolist()):
        token = memo.get(u)
        if token is None:
            token = memo[u] = hashlib.blake2b(u.encode(), key=mac, digest_size=12).hexdigest()
        out.append(token)
    tokens = np.array([*out, None], dtype=object)
    return pd.Series(tokens[codes], index=values.index, dtype="str")


def key_fingerprint(key: bytes) -> str:
    """Identifies the PII key in manifests without revealing it."""
    return hashlib.blake2b(b"fingerprint", key=key[:64], digest_size=8).hexdigest()


# --- per partition ---------------------------------------------------------------------------
def curate_partition(
    frames: list[tuple[str, pd.DataFrame]], spec: Spec, *, pii_key: bytes, token_cache: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Curate all files of one partition; return curated, quarantined and the counts."""
    curated, quarantined, by_rule, dropped, sources = [], [], {}, set(), []
    rows_in = 0
    for source, raw in frames:
        rows_in += len(raw)
        res = cast_and_validate(raw, spec.schema_, source=source, key=None, extra_columns=spec.schema_.extra_columns)
        curated.append(res.curated)
        sources += [source] * len(res.curated)
        quarantined.append(res.quarantined)
        dropped.update(res.dropped_columns)
        for k, v in res.by_rule.items():
            by_rule[k] = by_rule.get(k, 0) + v
    cur = pd.concat(curated, ignore_index=True) if curated else pd.DataFrame(columns=spec.schema_.names)
    qua = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame()
    if spec.data.key and len(cur):
        dup = cur[spec.data.key].duplicated(keep="first")
        if dup.any():
            dups = cur[dup].astype("string")
            dups["_rule"] = "duplicate_key"
            dups["_column"] = spec.data.key
            shown = ["<pii>" if spec.data.key in spec.pii_columns else repr(v) for v in cur.loc[dup, spec.data.key]]
            dups["_reason"] = [f"{spec.data.key}={v} breaks rule duplicate_key" for v in shown]
            dups["_source"] = np.asarray(sources, dtype=object)[dup.to_numpy()]
            qua = pd.concat([qua, dups], ignore_index=True)
            by_rule["duplicate_key"] = by_rule.get("duplicate_key", 0) + int(dup.sum())
            cur = cur[~dup.to_numpy()].reset_index(drop=True)
    for col in spec.pii_columns:
        cur[col] = tokenise(cur[col], pii_key, token_cache)
        if col in qua.columns:
            qua[col] = tokenise(qua[col], pii_key, token_cache)
    if spec.data.time_column and len(cur):
        cur = cur.sort_values(
            [spec.data.time_column, *([spec.data.key] if spec.data.key else [])], kind="stable"
        ).reset_index(drop=True)
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
            frames += [f for _, f in read_partition_files(labels_source, ds, lab.format)]
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
    out = curated.copy()
    out[spec.problem.target] = np.where(positive.to_numpy(), lab.label_value, lab.negative_value)
    return out


# --- the whole step --------------------------------------------------------------------------
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
    write the run's labelled data set to ``<run_dir>/dataset.parquet``. Returns the summary."""
    totals = {"rows_in": 0, "rows_curated": 0, "rows_quarantined": 0}
    by_rule: dict[str, int] = {}
    partitions: list[dict[str, Any]] = []
    token_cache: dict[str, str] = {}  # PII tokens of this run, shared by its partitions
    curated_rel: list[str] = []
    if spec.data.layout == "partitioned":
        source = Store.from_uri(source_uri)
        start, end = window_dates(as_of, lookback_days)
        wanted = [ds for ds in list_partitions(source) if start <= ds < end]
        log(f"window [{start}, {end}): {len(wanted)} partitions under {source_uri}")
    else:
        start, end, wanted = None, None, [ALL]
    for i, ds in enumerate(wanted, 1):
        if ds == ALL:
            name, raw = read_single_source(source_uri, spec.data.format)
            frames = [(name, raw)]
            fp_src = [name, len(raw), int(pd.util.hash_pandas_object(raw, index=False).sum())]
        else:
            files = [n for n in source.ls(f"ds={ds}") if not n.startswith(".")]
            fp_src = [[n, source.fs.size(source.path(f"ds={ds}", n))] for n in files]
            frames = None
        fingerprint = {"source": fp_src, "spec": spec.schema_.model_dump_json(), "key": key_fingerprint(pii_key)}
        rel = f"curated/ds={ds}"
        if manifest_matches(problem, ds, fingerprint):
            counts = problem.read_json(f"{rel}/_manifest.json")["counts"]
            log(f"partition {i}/{len(wanted)} ds={ds}: already curated from the same input, re-used")
        else:
            if frames is None:
                frames = read_partition_files(source, ds, spec.data.format)
            cur, qua, counts = curate_partition(frames, spec, pii_key=pii_key, token_cache=token_cache)
            problem.write_parquet(f"{rel}/part-0.parquet", cur)
            if len(qua):
                problem.write_parquet(f"quarantine/ds={ds}/part-0.parquet", qua)
            problem.write_json(f"{rel}/_manifest.json", {"fingerprint": fingerprint, "counts": counts})
            log(
                f"partition {i}/{len(wanted)} ds={ds}: {counts['rows_in']} rows in, {counts['rows_curated']} curated, "
                f"{counts['rows_quarantined']} quarantined {counts['by_rule'] or ''}"
            )
        curated_rel.append(f"{rel}/part-0.parquet")
        partitions.append({"ds": ds, **counts})
        for k in totals:
            totals[k] += counts[k]
        for k, v in counts["by_rule"].items():
            by_rule[k] = by_rule.get(k, 0) + v
    if not curated_rel:
        dataset = pd.DataFrame({c.name: pd.Series(dtype="object") for c in spec.schema_.columns})
    else:
        dataset = problem.read_parquet(curated_rel)
    label_rows = None
    immature = 0
    if spec.data.labels is not None:
        labels_store = Store.from_uri(labels_uri or spec.data.labels.source)
        lab_end = (as_of.date() + dt.timedelta(days=1)).isoformat()
        labels = read_labels(spec, labels_store, start or "0000", lab_end, as_of, log)
        dataset = join_labels(dataset, labels, spec)
        label_rows = len(labels)
        if spec.data.labels.maturity_days and spec.data.time_column and len(dataset):
            cutoff = _utc(as_of) - pd.Timedelta(days=spec.data.labels.maturity_days)
            mature = (dataset[spec.data.time_column] < cutoff).to_numpy()
            immature = int((~mature).sum())
            dataset = dataset[mature].reset_index(drop=True)
            log(
                f"labels: left out {immature} rows younger than {spec.data.labels.maturity_days} days (labels not mature)"
            )
    dataset_rel = f"{run_dir}/dataset.parquet"
    problem.write_parquet(dataset_rel, dataset)
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
        summary["positives"] = int((dataset[target].astype(str) == str(spec.problem.positive_label)).sum())
    log(
        f"collect_and_label: {totals['rows_in']} rows in = {totals['rows_curated']} curated + "
        f"{totals['rows_quarantined']} quarantined; data set {len(dataset)} rows -> {summary['dataset_uri']}"
    )
    return summary
