"""Section 2, collect and label, as a Spark job (the Glue ``glueetl`` job): the work of
:func:`include.lifecycle.collect.collect_and_label` spread over Spark executors, the same outputs
in the same layout (``curated/ds=<ds>/part-0.parquet`` + ``_manifest.json``,
``quarantine/ds=<ds>/part-0.parquet``, the run's ``cross_partition`` and ``labels`` quarantine,
``<run_dir>/dataset.parquet`` and the summary, with ``engine`` saying what ran).

Who does what. All I/O goes through the project's :class:`Store` (fsspec, s3fs on S3) in Python,
never through Spark's own S3 connector:

* the driver plans with collect.py's own functions: the window's ``ds=`` partitions and their files
  (every entry accounted for in ``summary["files"]``), each partition's fingerprint (the files'
  size and content id, sha256 locally or the ETag on S3; schema, checks, PII key), and which curated
  partitions are re-used because their manifest's fingerprint is unchanged (not read again);
* the executors read the files of the partitions to curate (``sparkContext.parallelize`` of the
  file list + ``mapInArrow``), each through ``Store`` and collect.py's ``read_file`` /
  ``frame_from_bytes``, so reading stays one implementation: read errors, encoding repair,
  malformed CSV rows. Every declared column travels as text (pandas' text of the value read, what
  a CSV holds anyway), so one Spark schema fits every file whatever its Parquet types; with
  ``_ds``, ``_source``, ``_row`` and ``_encoding`` (the columns whose bytes were not UTF-8);
* ``curate_ibis.curate`` on Ibis's PySpark backend casts, validates, de-duplicates within each
  partition and tokenises PII (collect.py's rules in collect.py's order);
* the executors write the curated partitions: the rows are shuffled by ``_ds`` and one task writes
  each day (sorted by ``collect.sort_curated``), its quarantine (a duplicate key's row made by
  collect.py's ``_with_duplicates``) and, last, its manifest, through ``Store``, returning the
  day's counts; the manifests' fingerprints are collect.py's, so either engine re-uses the other's
  partitions;
* keys delivered on an earlier day (of the window, re-used partitions included, or of the curated
  history before it; collect.py's ``history_partitions``) are found by a Spark group-by on the key;
  those rows (normally few) are gathered into the run's ``cross_partition`` quarantine on the driver;
* the label feed (one row per reported key: small) is read and validated on the driver by
  collect.py's ``collect_labels``, against the events of the labelled keys only (a Spark semi-join);
* the labelled data set is gathered on the driver, labelled by collect.py's ``join_labels`` and
  written as the one ``<run_dir>/dataset.parquet``: the downstream SageMaker steps read one file
  anyway, so the driver must hold the window's mature rows (as the pandas path does);
* the spec's per-entity feature groups (``velocity``, ``history``) of the data set's rows are
  computed by the executors with the one Ibis definition (``history_ibis``, parity-tested against
  features.py) and written beside the data set in its row order (``entity_features.parquet``,
  :class:`~include.lifecycle.features.EntityFeatures`): feature engineering takes them from there
  instead of computing them in the Airflow task.

Differences from collect.py (tests/unit/test_collect_spark.py holds the rest equal):

* the ``_reason`` of a quarantined row that breaks a rule names the column and the rule, not the
  value (``amount breaks rule min:0.01``): SQL has neither Python's ``repr`` of a value nor its
  masking (duplicate keys and CSV rows that could not be parsed keep collect.py's reason); the rows
  of a partition's quarantine file are in another order, its columns in schema order;
* a run that stops on an unreadable file, a schema error or an empty delivery writes no
  partition (collect.py has written the partitions before the one that stops it);
* the text forms curate_ibis documents (e.g. a float stored in a string column of a Parquet file
  is curated as collect.py does, "1.0" -> "1", but its quarantine text is "1" too, not "1.0");
  timestamps are parsed by Spark from pandas' text of them;
* a single-file source, ``sklearn:`` data and ``schema.extra_columns: keep`` are not partitioned
  or not supported by curate_ibis: they run collect.py on the driver (``engine`` says so).

Logged: the window, files and rows read by the executors (and how long), partitions written,
each partition's counts, cross-partition duplicates, labels, the totals. Needs
``spark.sql.session.timeZone`` UTC (set here). No airflow import; pyspark and ibis are imported
when a run starts.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.lifecycle import collect as C
from include.lifecycle.curate_ibis import ENCODING_COLUMN, ENCODING_SEP, ROW_COLUMNS
from include.lifecycle.layout import RunLayout
from include.lifecycle.spec import ColumnSpec, FeatureGroupSpec, Spec
from include.lifecycle.store import Store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Log = Callable[[str], None]
META = "_meta"
SHUFFLE_ROWS = 1_000_000  # rows per shuffle partition at the most, past two partitions per core
KIND = "_kind"
_ERRORS: dict[str, type[Exception]] = {"InputFileError": C.InputFileError, "SchemaError": C.SchemaError}


def _noop(_: str) -> None:
    pass


def spark_fallback_reason(spec: Spec) -> str:
    """Why a spec's collection runs collect.py on the driver instead of Spark ("" when it runs on Spark)."""
    if spec.data.layout != "partitioned":
        return "a single-file source is one file: collect.py on the driver"
    if spec.schema_.extra_columns == "keep":
        return "schema.extra_columns: keep is not supported by curate_ibis: collect.py on the driver"
    return ""


def spark_session(master: str | None = None) -> SparkSession:
    """The job's Spark session (Glue's own; else a local one, ``master`` or PySpark's default), UTC."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("ml-lifecycle-collect-and-label")
    if master:
        builder = builder.master(master)
    session = builder.getOrCreate()
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session


# --- executors: reading -----------------------------------------------------------------------
def _text_of(raw: pd.Series, col: ColumnSpec) -> pa.Array:
    """One raw column as text: what a CSV would hold. A missing value (None, NaN, NaT) is NULL; a
    float in a string column is written as collect.py casts it (whole numbers as integers)."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(raw):
        tz = getattr(raw.dtype, "tz", None)
        raw = raw.astype(f"datetime64[us, {tz}]" if tz is not None else "datetime64[us]")
    if pd.api.types.is_float_dtype(raw) and col.dtype in ("string", "category"):
        text = raw.map(
            lambda v: None if pd.isna(v) else (str(int(v)) if np.isfinite(v) and float(v).is_integer() else str(v))
        ).astype("string")
    else:
        text = raw.astype("string")
    return pa.array(text, type=pa.large_string(), from_pandas=True).cast(pa.string())


def _raw_schema(spec: Spec) -> pa.Schema:
    return pa.schema(
        [pa.field(n, pa.string()) for n in spec.schema_.names]
        + [
            pa.field("_ds", pa.string()),
            pa.field("_source", pa.string()),
            pa.field("_row", pa.int64()),
            pa.field(ENCODING_COLUMN, pa.string()),
            pa.field(META, pa.string()),
        ]
    )


def _read_one(source: Store, spec: Spec, ds: str, name: str) -> Iterator[pa.RecordBatch]:
    """One input file as raw rows, then one meta row (``_row`` -1) saying what reading found."""
    schema = _raw_schema(spec)
    fmt = spec.data.format
    rel = f"ds={ds}/{name}"
    uri = source.uri(rel)
    meta: dict[str, Any] = {"ds": ds, "name": name, "uri": uri}
    try:
        df = C.read_file(source, rel, fmt)
        C.check_columns(df, spec.schema_, uri, nested=True)
    except (C.InputFileError, C.SchemaError) as exc:  # reported in the driver, in partition order
        meta["error"] = [type(exc).__name__, str(exc)]
    else:
        info = C.read_info(df)
        declared = set(spec.schema_.names)
        n = len(df)
        meta |= {
            "rows": C._rows_of(df),
            "malformed": [list(m) for m in (info.malformed if info else [])],
            "dropped": [str(c) for c in df.columns if c not in declared],
        }
        encoding = pa.nulls(n, pa.string())
        if info is not None and info.invalid_utf8:
            marks = np.full(n, "", dtype=object)
            for column, rows in info.invalid_utf8.items():
                if column in declared:
                    marks[rows] += f"{column}{ENCODING_SEP}"
            encoding = pa.array([f"{ENCODING_SEP}{m}" if m else None for m in marks], type=pa.string())
        arrays = [_text_of(df[c.name], c) for c in spec.schema_.columns]
        arrays += [
            pa.array([ds] * n, type=pa.string()),
            pa.array([uri] * n, type=pa.string()),
            pa.array(np.arange(n, dtype=np.int64)),
            encoding,
            pa.nulls(n, pa.string()),
        ]
        yield from pa.Table.from_arrays(arrays, schema=schema).to_batches(max_chunksize=100_000)
    row = {f.name: pa.nulls(1, f.type) for f in schema}
    row |= {"_ds": pa.array([ds]), "_source": pa.array([uri]), "_row": pa.array([-1], type=pa.int64())}
    row[META] = pa.array([json.dumps(meta)])
    yield pa.RecordBatch.from_arrays([row[f.name] for f in schema], schema=schema)


def _reader(source: Store, spec: Spec) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for ds, name in zip(batch.column("ds").to_pylist(), batch.column("name").to_pylist(), strict=True):
                yield from _read_one(source, spec, ds, name)

    return read


def _curated_reader(
    problem: Store, names: list[str], schema: pa.Schema
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Curated partitions read back (``schema``: their columns with ``_ds``, ``_source``, ``_row``):
    a re-used partition of the window whole, a history partition's key only (unreadable history, or
    keys of another type, only weaken the check, as in collect.py)."""

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for ds, whole in zip(batch.column("ds").to_pylist(), batch.column("whole").to_pylist(), strict=True):
                rel = f"curated/ds={ds}/part-0.parquet"
                try:
                    table = problem.read_table(rel, columns=None if whole else names)
                    n = len(table)
                    arrays = [table.column(f.name).cast(f.type) if f.name in names else None for f in schema]
                except (OSError, pa.ArrowException, KeyError):
                    if whole:
                        raise
                    continue
                extra = {"_ds": pa.array([ds] * n, pa.string()), "_source": pa.nulls(n, pa.string())}
                extra["_row"] = pa.array(np.arange(n, dtype=np.int64))
                arrays = [a if a is not None else extra[f.name] for a, f in zip(arrays, schema, strict=True)]
                yield from pa.Table.from_arrays(arrays, schema=schema).to_batches(max_chunksize=100_000)

    return read


# --- executors: writing -----------------------------------------------------------------------
def typed_frame(table: pa.Table, spec: Spec) -> pd.DataFrame:
    """Curated rows (Arrow, as Spark gives them) as the frame collect.py holds: text as ``str``, ints
    as int64 (``Int64`` with missing values), floats, ``boolean``, UTC timestamps in microseconds."""
    out: dict[str, Any] = {}
    for col in spec.schema_.columns:
        arr = table.column(col.name)
        if col.dtype in ("string", "category"):
            out[col.name] = pd.Series(arr.to_pandas(), dtype=object).astype("str")
        elif col.dtype == "int":
            out[col.name] = (
                arr.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
                if arr.null_count
                else pd.Series(arr.to_numpy(), dtype="int64")
            )
        elif col.dtype == "float":
            out[col.name] = pd.Series(arr.to_pandas(), dtype="float64")
        elif col.dtype == "bool":
            out[col.name] = arr.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get).astype("boolean")
        else:
            out[col.name] = pd.Series(arr.cast(pa.timestamp("us", tz="UTC")).to_pandas()).astype("datetime64[us, UTC]")
        out[col.name] = out[col.name].reset_index(drop=True)
    return pd.DataFrame(out, index=pd.RangeIndex(len(table)))


def _write_day(problem: Store, spec: Spec, ds: str, table: pa.Table, plan: dict[str, Any]) -> dict[str, Any]:
    """One curated partition (its rows sorted as collect.py sorts them), its quarantine, its manifest.
    ``table``: the day's rows of kind ``c`` (curated), ``d`` (a duplicate key, typed), ``q`` (a row
    that breaks a rule, as text) and one ``m`` (the day is there)."""
    names = spec.schema_.names
    rel = f"curated/ds={ds}"
    kind = table.column(KIND)
    cur = C.sort_curated(typed_frame(table.filter(pc.equal(kind, "c")).select(names), spec), spec)
    problem.write_parquet(f"{rel}/part-0.parquet", pa.Table.from_pandas(cur, preserve_index=False))
    q = table.filter(pc.equal(kind, "q"))
    qua = pd.DataFrame({n: pd.array(q.column(f"__q_{i}").to_pylist(), dtype="string") for i, n in enumerate(names)})
    for c in ("_rule", "_column", "_reason", "_source"):
        qua[c] = pd.Series(q.column(c).to_pylist(), dtype="str")
    d = table.filter(pc.equal(kind, "d"))
    if len(d):  # duplicate keys in the partition: quarantined by collect.py's own function (its text, its reason)
        sources = np.asarray(d.column("_source").to_pylist(), dtype=object)
        qua = C._with_duplicates(qua, typed_frame(d.select(names), spec), spec, sources)
    if len(qua):
        problem.write_parquet(f"quarantine/ds={ds}/part-0.parquet", qua)
    else:  # rebuilt without bad rows: an older quarantine file must not outlive its partition
        problem.remove(f"quarantine/ds={ds}/part-0.parquet")
    rules, n_rules = np.unique(qua["_rule"].to_numpy(dtype=str), return_counts=True) if len(qua) else ([], [])
    counts = {
        "rows_in": plan["rows_in"],
        "rows_curated": len(cur),
        "rows_quarantined": len(qua),
        "by_rule": {str(r): int(k) for r, k in zip(rules, n_rules, strict=True)},
        "dropped_columns": plan["dropped_columns"],
        "files": plan["files"],
    }
    if counts["rows_in"] != counts["rows_curated"] + counts["rows_quarantined"]:
        raise AssertionError(f"row accounting broken in ds={ds}: {counts}")
    problem.write_json(f"{rel}/_manifest.json", {"fingerprint": plan["fingerprint"], "counts": counts})
    return {"ds": ds, "counts": counts}


_WRITTEN = pa.schema([pa.field("ds", pa.string()), pa.field("counts", pa.string())])


def _writer(
    problem: Store, spec: Spec, plans: dict[str, dict[str, Any]]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """Writes the days of one Spark partition (rows sorted by ``_ds``: each day's rows are contiguous)."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        held: list[pa.RecordBatch] = []
        day: str | None = None

        def flush() -> Iterator[pa.RecordBatch]:
            if day is None:
                return
            done = _write_day(problem, spec, day, pa.Table.from_batches(held), plans[day])
            yield pa.RecordBatch.from_pydict({"ds": [day], "counts": [json.dumps(done["counts"])]}, schema=_WRITTEN)

        for batch in batches:
            dss = batch.column("_ds")
            at = 0
            while at < len(batch):
                ds = dss[at].as_py()
                end = at + 1
                while end < len(batch) and dss[end].as_py() == ds:
                    end += 1
                if ds != day:
                    yield from flush()
                    held, day = [], ds
                held.append(batch.slice(at, end - at))
                at = end
        yield from flush()

    return write


# --- the driver ---------------------------------------------------------------------------------
def _spark_df(con: Any, expr: Any) -> DataFrame:
    """An Ibis expression of the PySpark backend as a Spark DataFrame (its UDFs registered)."""
    con._run_pre_execute_hooks(expr)
    return con._session.sql(con.compile(expr))


def _to_arrow(df: DataFrame) -> pa.Table:
    """A (small, or gathered on purpose) Spark DataFrame on the driver as Arrow, in its order."""
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema)
    batches = df._collect_as_arrow()
    return pa.Table.from_batches(batches).cast(schema) if batches else schema.empty_table()


def collect_and_label_spark(
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
    spark: SparkSession | None = None,
) -> dict[str, Any]:
    """:func:`collect.collect_and_label` on Spark (module docstring); returns the same summary, with
    ``engine``. ``spark``: the session (default: :func:`spark_session`)."""
    why = spark_fallback_reason(spec)
    if why:
        log(f"collect_and_label: {why}")
        summary = C.collect_and_label(
            spec,
            problem=problem,
            run_dir=run_dir,
            as_of=as_of,
            lookback_days=lookback_days,
            pii_key=pii_key,
            source_uri=source_uri,
            labels_uri=labels_uri,
            log=log,
        )
        return summary | {"engine": {"name": "pandas", "why": why}}
    if not pii_key and spec.pii_columns:
        raise ValueError("the PII hash key is empty: set the Airflow variable ml_pii_hash_key")
    spark = spark or spark_session()
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    return _Run(spec, problem, run_dir, as_of, lookback_days, pii_key, source_uri, labels_uri, log, spark).run()


@dataclass
class _Run:
    """One Spark collection (the state :func:`collect_and_label_spark` threads through its steps)."""

    spec: Spec
    problem: Store
    run_dir: str
    as_of: dt.datetime
    lookback_days: int
    pii_key: bytes
    source_uri: str
    labels_uri: str | None
    log: Log
    spark: SparkSession
    files: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    persisted: list[DataFrame] = field(default_factory=list)
    cached: list[Any] = field(default_factory=list)  # Ibis tables cached in Spark, released at the end

    def __post_init__(self) -> None:
        self.sc = self.spark.sparkContext
        self.parallelism = max(1, self.sc.defaultParallelism)

    def warn(self, msg: str) -> None:
        msg = C.mask_digits(msg)
        self.warnings.append(msg)
        self.log(f"WARNING {msg}")

    def _slices(self, n: int) -> int:
        return max(1, min(n, 2 * self.parallelism))

    # -- planning ------------------------------------------------------------------------------
    def plan(self) -> None:
        spec, log = self.spec, self.log
        fmt = spec.data.format
        self.source = source = Store.from_uri(self.source_uri)
        self.start, self.end = start, end = C.window_dates(self.as_of, self.lookback_days)
        scan = C.scan_partitions(source, "data.source")
        self.wanted = wanted = [ds for ds in scan.partitions if start <= ds < end]
        self.outside_window = len(scan.partitions) - len(wanted)
        self.files += [{"source": "data", **e} for e in scan.ignored]
        log(f"window [{start}, {end}): {len(wanted)} partitions under {self.source_uri}")
        if not scan.exists:
            self.warn(f"{self.source_uri}: the source does not exist")
        days = [(dt.date.fromisoformat(start) + dt.timedelta(days=d)).isoformat() for d in range(self.lookback_days)]
        self.missing_days = sorted(set(days) - set(wanted))
        if self.missing_days and scan.exists:
            more = f" and {len(self.missing_days) - 5} more" if len(self.missing_days) > 5 else ""
            self.warn(f"{len(self.missing_days)} day(s) of the window have no partition: {self.missing_days[:5]}{more}")
        self.names: dict[str, list[str]] = {}
        for ds in wanted:  # every partition is listed first: a file of another format stops the run at once
            names, ignored = C.partition_files(source, ds, fmt, "data")
            self.files += [{"source": "data", **e} for e in ignored]
            self.names[ds] = names
        checks = C._checks(spec, self.as_of)

        def identify(ds: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
            ids = []
            for name in self.names[ds]:
                rel = f"ds={ds}/{name}"
                ids.append([name, int(source.fs.size(source.path(rel))), source.content_id(rel)])
            fingerprint = C.partition_fingerprint(spec, ids, self.pii_key, checks)
            return fingerprint, self.problem.read_json_or(f"curated/ds={ds}/_manifest.json")

        with ThreadPoolExecutor(8, thread_name_prefix="collect-plan") as pool:  # object store round trips
            found = dict(zip(wanted, pool.map(identify, wanted), strict=True))
        self.fingerprint = {ds: fp for ds, (fp, _) in found.items()}
        self.old = {ds: old for ds, (_, old) in found.items()}
        self.reused = [ds for ds in wanted if self.old[ds] and self.old[ds].get("fingerprint") == self.fingerprint[ds]]
        self.fresh = [ds for ds in wanted if ds not in self.reused]

    # -- reading -------------------------------------------------------------------------------
    def read(self) -> DataFrame | None:
        """The raw rows of the partitions to curate, read by the executors; the files' meta on the driver."""
        from pyspark.sql.pandas.types import from_arrow_schema

        tasks = [(ds, name) for ds in self.fresh for name in self.names[ds]]
        self.meta: dict[tuple[str, str], dict[str, Any]] = {}
        if not tasks:
            return None
        t0 = time.monotonic()
        schema = _raw_schema(self.spec)
        todo = self.spark.createDataFrame(
            self.sc.parallelize(tasks, self._slices(len(tasks))), "ds string, name string"
        )
        raw = todo.mapInArrow(_reader(self.source, self.spec), from_arrow_schema(schema)).persist()
        self.persisted.append(raw)
        for row in raw.filter(raw["_row"] < 0).select(META).collect():
            m = json.loads(row[META])
            self.meta[(m["ds"], m["name"])] = m
        for ds, name in tasks:  # the first error in partition order, as collect.py would meet it
            error = self.meta[(ds, name)].get("error")
            if error:
                raise _ERRORS.get(error[0], ValueError)(error[1])
        rows = sum(m["rows"] for m in self.meta.values())
        self.log(
            f"spark: read {len(tasks)} files of {len(self.fresh)} partitions ({rows} rows) on the executors "
            f"in {time.monotonic() - t0:.1f} s"
        )
        # Spark's default of 200 shuffle partitions is hundreds of tiny tasks for a window of a few
        # million rows on a few workers (1M rows on local[2]: 87 s with 200, 54 s with 4,
        # bench/collect_spark.py): two per core, or one per SHUFFLE_ROWS rows when that is more
        shuffle = max(2 * self.parallelism, -(-rows // SHUFFLE_ROWS))
        self.spark.conf.set("spark.sql.shuffle.partitions", str(shuffle))
        self.log(f"spark: {shuffle} shuffle partitions ({self.parallelism} cores, {rows} rows)")
        return raw.filter(raw["_row"] >= 0).drop(META)

    def day_plans(self) -> dict[str, dict[str, Any]]:
        """Per partition to curate: its manifest's fingerprint and input counts; an empty delivery
        where a curated partition built from rows exists stops the run (nothing written)."""
        plans = {}
        for ds in self.fresh:
            metas = [self.meta[(ds, n)] for n in self.names[ds]]
            files = [{"name": m["name"], "rows": m["rows"]} for m in metas]
            rows_in = sum(f["rows"] for f in files)
            old_rows = int(((self.old[ds] or {}).get("counts") or {}).get("rows_in") or 0)
            if rows_in == 0 and old_rows:
                what = ", ".join(f"ds={ds}/{f['name']}: 0 rows" for f in files) or "no data files"
                raise C.EmptyInputError(
                    C.mask_digits(
                        f"{self.source.uri(f'ds={ds}')}: the input now holds 0 rows ({what}) where curated/ds={ds} "
                        f"holds {old_rows} input rows curated earlier from other files; an empty delivery does not "
                        f"replace curated data. If the day really is empty, delete "
                        f"{self.problem.uri(f'curated/ds={ds}', '_manifest.json')} and run again"
                    )
                )
            dropped = sorted({c for m in metas for c in m["dropped"]})
            plans[ds] = {"fingerprint": self.fingerprint[ds], "rows_in": rows_in, "files": files}
            plans[ds]["dropped_columns"] = dropped
        return plans

    # -- curating and writing -------------------------------------------------------------------
    def curate(self, raw: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
        """curate_ibis on the raw rows: the kept rows of each partition and its duplicate keys (typed),
        and its rows that break a rule."""
        import ibis

        from include.lifecycle.curate_ibis import curate

        con = ibis.pyspark.connect(self.spark)
        view = f"ml_collect_raw_{uuid.uuid4().hex}"
        raw.createOrReplaceTempView(view)
        self.views.append(view)
        out = curate(
            con.table(view), self.spec, as_of=self.as_of, pii_key=self.pii_key, cache=True, cross_partition=False
        )
        stage = out.stage
        self.cached.append(stage)
        columns = [*self.spec.schema_.names, *ROW_COLUMNS]
        kept = _spark_df(con, stage.filter(stage["__keep"]).select(*columns))
        dups = _spark_df(con, stage.filter(stage["__in_dup"]).select(*columns))
        return kept, dups, _spark_df(con, out.broken)

    def malformed(self) -> pd.DataFrame:
        """Quarantine rows of the CSV rows that could not be parsed (collect.py's text, no value)."""
        frames = []
        names = self.spec.schema_.names
        for ds in self.fresh:
            for name in self.names[ds]:
                m = self.meta[(ds, name)]
                if m["malformed"]:
                    q = C._malformed_rows([tuple(x) for x in m["malformed"]], names, m["uri"])
                    frames.append(q.assign(_ds=ds))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write(
        self, kept: DataFrame, dups: DataFrame, quarantine: DataFrame, plans: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """Every partition to curate written by the executors (one task per day); their counts."""
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_schema

        t0 = time.monotonic()
        names = self.spec.schema_.names
        q_cols = {f"__q_{i}": F.col(n).cast("string") for i, n in enumerate(names)}
        parts = [
            kept.select(F.lit("c").alias(KIND), "_ds", "_source", "_row", *names),
            dups.select(F.lit("d").alias(KIND), "_ds", "_source", "_row", *names),
            quarantine.select(
                F.lit("q").alias(KIND),
                F.col("_ds").cast("string").alias("_ds"),
                "_source",
                *[c.alias(n) for n, c in q_cols.items()],
                "_rule",
                "_column",
                F.concat_ws(" breaks rule ", "_column", "_rule").alias("_reason"),
            ),
        ]
        bad = self.malformed()
        if len(bad):
            bad = bad.rename(columns={n: f"__q_{i}" for i, n in enumerate(names)})
            types = ", ".join(f"{c} string" for c in bad.columns)
            parts.append(
                self.spark.createDataFrame(bad.astype(object).where(bad.notna(), None), types).withColumn(
                    KIND, F.lit("q")
                )
            )
        parts.append(
            self.spark.createDataFrame([(ds,) for ds in self.fresh], "_ds string").withColumn(KIND, F.lit("m"))
        )
        rows = parts[0]
        for p in parts[1:]:
            rows = rows.unionByName(p, allowMissingColumns=True)
        rows = rows.repartition(self._slices(len(self.fresh)), "_ds").sortWithinPartitions(
            "_ds", KIND, "_source", "_row"
        )
        done = rows.mapInArrow(_writer(self.problem, self.spec, plans), from_arrow_schema(_WRITTEN)).collect()
        counts = {r["ds"]: json.loads(r["counts"]) for r in done}
        missing = sorted(set(self.fresh) - set(counts))
        if missing:
            raise AssertionError(f"spark: partitions not written: {missing}")
        self.log(f"spark: wrote {len(counts)} curated partitions on the executors in {time.monotonic() - t0:.1f} s")
        return counts

    # -- the window ----------------------------------------------------------------------------
    def window_rows(self, kept: DataFrame | None) -> DataFrame | None:
        """The curated rows of the whole window: the partitions just curated and the re-used ones."""
        from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

        names = self.spec.schema_.names
        if kept is None and not self.reused:
            return None
        # only re-used partitions: their types as curate_ibis gives them
        schema = to_arrow_schema(kept.select(*names).schema) if kept is not None else _typed_schema(self.spec)
        schema = pa.schema(
            [*schema, pa.field("_ds", pa.string()), pa.field("_source", pa.string()), pa.field("_row", pa.int64())]
        )
        frames = [] if kept is None else [kept.select(*names, "_ds", "_source", "_row")]
        if self.reused:
            tasks = self.spark.createDataFrame(
                self.sc.parallelize([(ds, True) for ds in self.reused], self._slices(len(self.reused))),
                "ds string, whole boolean",
            )
            frames.append(tasks.mapInArrow(_curated_reader(self.problem, names, schema), from_arrow_schema(schema)))
        rows = frames[0]
        for f in frames[1:]:
            rows = rows.unionByName(f)
        return rows

    def history(self, key_schema: pa.Schema) -> DataFrame | None:
        """The keys of the curated history before the window (collect.py's ``history_partitions``)."""
        from pyspark.sql.pandas.types import from_arrow_schema

        days = C.history_partitions(self.spec, self.problem, self.start, self.end, self.pii_key)
        self.history_days = days
        if not days:
            return None
        tasks = self.spark.createDataFrame(
            self.sc.parallelize([(ds, False) for ds in days], self._slices(len(days))), "ds string, whole boolean"
        )
        return tasks.mapInArrow(
            _curated_reader(self.problem, [self.spec.data.key or ""], key_schema), from_arrow_schema(key_schema)
        )

    def run(self) -> dict[str, Any]:
        log = self.log
        t_start = time.monotonic()
        try:
            self.plan()
            for ds in self.reused:
                log(
                    f"partition {self.wanted.index(ds) + 1}/{len(self.wanted)} ds={ds}: already curated from the same "
                    f"input, re-used"
                )
            raw = self.read()
            plans = self.day_plans()
            kept = written = None
            if raw is not None:
                kept, dups, quarantine = self.curate(raw)
                kept = kept.persist()
                self.persisted.append(kept)
                written = self.write(kept, dups, quarantine, plans)
            return self.finish(kept, written or {}, t_start)
        finally:
            for df in self.persisted:
                df.unpersist()
            for table in self.cached:
                release = getattr(table, "release", None)
                if release is not None:
                    release()
            for view in self.views:
                self.spark.catalog.dropTempView(view)

    def finish(self, kept: DataFrame | None, written: dict[str, Any], t_start: float) -> dict[str, Any]:
        """Cross-partition duplicates, labels, the data set and the summary."""
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import to_arrow_schema

        spec, log, problem = self.spec, self.log, self.problem
        key, time_column = spec.data.key, spec.data.time_column
        totals = {"rows_in": 0, "rows_curated": 0, "rows_quarantined": 0}
        by_rule: dict[str, int] = {}
        partitions: list[dict[str, Any]] = []
        shown_source: dict[str, str] = {}
        for i, ds in enumerate(self.wanted, 1):
            if ds in written:
                counts = written[ds]
                outcome = "read"
                if not counts["files"]:
                    self.warn(f"ds={ds}: the partition folder holds no data files: curated as an empty day")
                for f in counts["files"]:
                    if not f["rows"]:
                        self.warn(f"ds={ds}/{f['name']}: the file holds 0 rows")
                log(
                    f"partition {i}/{len(self.wanted)} ds={ds}: {counts['rows_in']} rows in, {counts['rows_curated']} "
                    f"curated, {counts['rows_quarantined']} quarantined {counts['by_rule'] or ''}"
                )
            else:
                counts = (self.old[ds] or {})["counts"]
                outcome = "re-used"
            for f in counts.get("files", []):
                self.files.append(
                    {
                        "source": "data",
                        "path": f"ds={ds}/{f['name']}",
                        "format": spec.data.format,
                        "rows": f["rows"],
                        "outcome": outcome if f["rows"] or outcome == "re-used" else "empty",
                    }
                )
            names = [f["name"] for f in counts.get("files", [])]
            shown_source[ds] = self.source.uri(f"ds={ds}", names[0]) if len(names) == 1 else self.source.uri(f"ds={ds}")
            partitions.append({"ds": ds, **counts})
            for k in totals:
                totals[k] += counts[k]
            for k, v in counts["by_rule"].items():
                by_rule[k] = by_rule.get(k, 0) + v

        rows = self.window_rows(kept)
        cross: dict[str, Any] = {"duplicate_key": 0, "history_partitions": 0, "quarantine_rel": None}
        run_dir = self.run_dir
        if rows is not None and key:
            rows_schema = to_arrow_schema(rows.schema)
            key_schema = pa.schema([rows_schema.field(key), pa.field("_ds", pa.string())])
            history = self.history(key_schema)
            cross["history_partitions"] = len(self.history_days)
            days = rows.select(key, "_ds")
            if history is not None:
                days = days.unionByName(history)
            first = days.filter(F.col(key).isNotNull()).groupBy(key).agg(F.min("_ds").alias("__first"))
            rows = rows.join(first, on=key, how="left").withColumn(
                "__cross", F.coalesce(F.col("__first") < F.col("_ds"), F.lit(False))
            )
            rows = rows.persist()
            self.persisted.append(rows)
            dups = _to_arrow(self._ordered(rows.filter("__cross")))
            if len(dups):
                frame = typed_frame(dups, spec)
                own = dups.column("_ds").to_pylist()
                qua = C._with_duplicates(
                    pd.DataFrame(),
                    frame,
                    spec,
                    np.asarray([shown_source.get(d, "") for d in own], dtype=object),
                    [f"first delivered in ds={d}" for d in dups.column("__first").to_pylist()],
                )
                qua["_ds"] = own
                qrel = RunLayout.quarantine_in(run_dir, "cross_partition")
                problem.write_parquet(qrel, qua)
                n_dup = len(dups)
                cross.update(duplicate_key=n_dup, quarantine_rel=qrel)
                C.count_cross_partition(partitions, totals, by_rule, pd.Series(own).value_counts().to_dict())
                log(
                    f"cross-partition: {n_dup} rows whose {key} was delivered on an earlier day quarantined "
                    f"(duplicate_key) -> {problem.uri(qrel)}"
                )
            rows = rows.filter(~F.col("__cross"))
        immature = 0
        mature = None
        label_summary: dict[str, Any] = {}
        labels = None
        result = None
        ev_mature = np.zeros(0, dtype=bool)
        if spec.data.labels is not None and rows is not None:
            maturity_days = spec.data.labels.maturity_days
            if maturity_days and time_column:
                cutoff = C._utc(self.as_of) - pd.Timedelta(days=maturity_days)
                mature = F.coalesce(F.col(time_column) < F.lit(cutoff.to_pydatetime()), F.lit(False))
                rows = rows.withColumn("__mature", mature)
                n_all = rows.count()
                immature = n_all - rows.filter("__mature").count()
            result, ev_mature = self.labels(rows, mature is not None)
        elif spec.data.labels is not None:
            result, ev_mature = self.labels(None, False)
        if result is not None:
            labels = result.usable
            self.files += result.files
            qrel = None
            if len(result.quarantined):
                qrel = RunLayout.quarantine_in(run_dir, "labels")
                problem.write_parquet(qrel, result.quarantined)
            label_summary = C.label_counts(result, qrel)
            if mature is not None:
                log(
                    f"labels: left out {immature} rows younger than {spec.data.labels.maturity_days} days "
                    f"(labels not mature)"
                )
        if rows is None:
            dataset = pd.DataFrame({c.name: pd.Series(dtype="object") for c in spec.schema_.columns})
        else:
            if mature is not None:
                rows = rows.filter("__mature")
            dataset = typed_frame(_to_arrow(self._ordered(rows).select(*spec.schema_.names)), spec)
        label_rows = None
        if labels is not None and result is not None:
            dataset = C.join_labels(dataset, labels, spec)
            found = result.positions[result.positions >= 0]
            used = int(ev_mature[found].sum())
            label_rows = used
            C.account_labels(label_summary, len(labels), used, problem, self.warn)
        dataset_rel = RunLayout.dataset_in(run_dir)
        problem.write_parquet(dataset_rel, dataset)
        entity_features = self.entity_features(rows, dataset_rel, len(dataset))
        summary = C.run_summary(
            spec,
            problem,
            totals=totals,
            by_rule=by_rule,
            window={
                "start": self.start,
                "end": self.end,
                "as_of": self.as_of.isoformat(),
                "lookback_days": self.lookback_days,
            },
            partitions=partitions,
            dataset_rel=dataset_rel,
            dataset=dataset,
            label_rows=label_rows,
            label_summary=label_summary,
            immature=immature,
            source_uri=self.source_uri,
            labels_uri=self.labels_uri,
            files=self.files,
            outside_window=self.outside_window,
            missing_days=self.missing_days,
            cross=cross,
            warnings=self.warnings,
        )
        summary["engine"] = {
            "name": "spark",
            "spark_version": self.spark.version,
            "master": self.sc.master,
            "default_parallelism": self.parallelism,
            "partitions_curated": len(self.fresh),
            "partitions_reused": len(self.reused),
            "seconds": round(time.monotonic() - t_start, 1),
            "entity_features": entity_features,
        }
        log(
            f"collect_and_label: {totals['rows_in']} rows in = {totals['rows_curated']} curated + "
            f"{totals['rows_quarantined']} quarantined; data set {len(dataset)} rows -> {summary['dataset_uri']} "
            f"(spark, {summary['engine']['seconds']} s)"
        )
        return summary

    def entity_features(self, rows: DataFrame | None, dataset_rel: str, n_rows: int) -> dict[str, Any] | None:
        """The spec's per-entity feature groups (``velocity``, ``history``) of the data set's rows,
        computed here by the one Ibis definition (history_ibis) and written beside the data set in its
        row order (:class:`~include.lifecycle.features.EntityFeatures`): feature engineering then takes
        them instead of computing them in the Airflow task. Every declared group is computed, so any
        round's plan finds its groups; a group features.py would refuse (a summed column that is not
        numeric, an excluded column) is left out, named in ``skipped`` with the reason (feature
        engineering computes it, and fails with that reason, if a round uses it). None (and no file)
        when there are no rows or the spec declares no per-entity group."""
        import ibis

        from include.lifecycle.features import PER_ENTITY_KINDS, EntityFeatures
        from include.lifecycle.history_ibis import feature_names, per_entity_features

        spec, problem = self.spec, self.problem
        rel = RunLayout.entity_features_beside(dataset_rel)
        time_column, entity_column = spec.data.time_column, spec.data.entity_column
        groups = [g for g in spec.features.groups if g.kind in PER_ENTITY_KINDS]
        problem.remove(rel)  # a retried run never leaves an earlier attempt's file behind
        if rows is None or not groups or not time_column or not entity_column:
            return None
        t0 = time.monotonic()
        con = ibis.pyspark.connect(self.spark)
        view = f"ml_collect_rows_{uuid.uuid4().hex}"
        rows.createOrReplaceTempView(view)
        self.views.append(view)
        table = con.table(view)
        keep = list(dict.fromkeys(c for c in ("_ds", time_column, spec.data.key, "_source", "_row") if c))

        def expression(chosen: list[FeatureGroupSpec]) -> Any:
            return per_entity_features(
                table,
                chosen,
                time_column=time_column,
                entity_column=entity_column,
                keep=keep,
                exclude=spec.excluded_from_features,
            )

        skipped: dict[str, str] = {}
        for g in groups:  # a group features.py would refuse is left to it (it says why when a round uses it)
            try:
                expression([g])
            except ValueError as exc:
                skipped[g.name] = str(exc)
                self.log(f"per-entity features: group {g.name!r} not computed on Spark: {exc}")
        groups = [g for g in groups if g.name not in skipped]
        if not groups:
            return {"groups": [], "skipped": skipped}
        names = feature_names(table, groups)
        out = _to_arrow(self._ordered(_spark_df(con, expression(groups))).select(*names))
        if out.num_rows != n_rows:  # the same rows in the same order as the data set, or nothing
            raise RuntimeError(f"per-entity features: {out.num_rows} rows for a data set of {n_rows}")
        engine = f"spark {self.spark.version}"
        meta = EntityFeatures.metadata(
            groups, time_column=time_column, entity_column=entity_column, rows=n_rows, engine=engine
        )
        problem.write_parquet(rel, out.replace_schema_metadata(meta))
        seconds = round(time.monotonic() - t0, 1)
        self.log(
            f"per-entity features: groups {[g.name for g in groups]}, {len(names)} columns for {n_rows} rows "
            f"({engine}, {seconds} s) -> {problem.uri(rel)}"
        )
        return {
            "rel": rel,
            "groups": [g.name for g in groups],
            "columns": names,
            "seconds": seconds,
            "skipped": skipped,
        }

    def _ordered(self, rows: DataFrame) -> DataFrame:
        """The order of collect.py's data set: partition, then time and key (missing last), then file order."""
        from pyspark.sql import functions as F

        order = [F.col("_ds").asc()]
        for c in (self.spec.data.time_column, self.spec.data.key):
            if c:
                order.append(F.col(c).asc_nulls_last())
        return rows.orderBy(*order, F.col("_source").asc_nulls_first(), F.col("_row").asc())

    def labels(self, rows: DataFrame | None, has_mature: bool) -> tuple[C.LabelResult, np.ndarray]:
        """collect.py's ``collect_labels`` on the driver, against the window's rows of the keys in the
        feed (``events``), and which of those rows are mature."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import StructField, StructType

        spec = self.spec
        lab = spec.data.labels
        assert lab is not None
        store = Store.from_uri(self.labels_uri or lab.source)
        lab_end = (self.as_of.date() + dt.timedelta(days=1)).isoformat()
        key, time_column = spec.data.key, spec.data.time_column
        cache: dict[str, str] = {}
        args = (spec, store, self.start or "0000", lab_end, self.as_of)
        events = None
        mature = np.zeros(0, dtype=bool)
        if rows is not None and key:
            # the feed's valid keys first (without events), then the window's rows of those keys only
            first = C.collect_labels(*args, pii_key=self.pii_key, token_cache=cache)
            wanted = [v.item() if hasattr(v, "item") else v for v in pd.unique(first.usable[key].dropna())]
            key_type = rows.schema[key].dataType
            keys = self.spark.createDataFrame([(v,) for v in wanted], StructType([StructField(key, key_type)]))
            cols = [key, *([time_column] if time_column else [])]
            ev = rows.join(F.broadcast(keys), on=key, how="left_semi").select(
                *cols, *(["__mature"] if has_mature else [])
            )
            table = _to_arrow(ev)
            events = (table.column(key), table.column(time_column) if time_column else None)
            mature = (
                table.column("__mature").to_numpy(zero_copy_only=False).astype(bool)
                if has_mature
                else np.ones(len(table), dtype=bool)
            )
        result = C.collect_labels(*args, events=events, pii_key=self.pii_key, token_cache=cache, log=self.log)
        return result, mature


def _typed_schema(spec: Spec) -> pa.Schema:
    """The Arrow types of curated columns as curate_ibis gives them on Spark."""
    kinds = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    fields = []
    for c in spec.schema_.columns:
        if c.dtype in ("string", "category"):
            fields.append(pa.field(c.name, pa.string()))
        elif c.dtype in kinds:
            fields.append(pa.field(c.name, kinds[c.dtype]))
        else:
            fields.append(pa.field(c.name, pa.timestamp("us", tz="UTC")))
    return pa.schema(fields)
