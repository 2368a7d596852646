"""Benchmark: the Glue job's Spark path (include/lifecycle/collect_spark.py) against collect.py on one
machine, and whether they write the same bytes (run by hand, not by `make bench` or `make test`).

For each size it generates the flagship's demo data (28 days), runs collect.py's
``collect_and_label`` and then ``collect_and_label_spark`` on a local Spark (``--master``, default
``local[2]``) on separate artifact roots, and compares every curated partition and the data set
byte for byte. Prints and writes seconds, rows/s and the comparison to
``bench/results/collect-spark-<date>.json``.

    .venv/bin/python bench/collect_spark.py                    # 1M rows
    .venv/bin/python bench/collect_spark.py --rows 250000 1000000

This measures Spark's overhead on one small machine, not Glue: on Glue the executors are the
workers (``aws.glue.number_of_workers``), and no Glue run has been measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAYS = 28
KEY = b"bench-collect-spark-key-32-bytes"


def run(rows: int, master: str, spark: Any) -> dict[str, Any]:
    from include.lifecycle import synth
    from include.lifecycle.collect import collect_and_label
    from include.lifecycle.collect_spark import collect_and_label_spark
    from include.lifecycle.layout import RunLayout
    from include.lifecycle.spec import load_spec
    from include.lifecycle.store import Store

    spec = load_spec(ROOT / "include" / "problems" / "card_fraud.yaml")
    work = Path(tempfile.mkdtemp(prefix=f"bench-collect-spark-{rows}-"))
    try:
        synth.generate(work / "landing", end=AS_OF.date(), days=DAYS, tx_per_day=rows // DAYS, seed=7)
        common = {
            "run_dir": "runs/bench",
            "as_of": AS_OF,
            "lookback_days": DAYS,
            "pii_key": KEY,
            "source_uri": str(work / "landing" / "transactions"),
            "labels_uri": str(work / "landing" / "chargebacks"),
        }
        out: dict[str, Any] = {"rows": rows, "master": master}
        for engine in ("pandas", "spark"):
            problem = Store.from_uri(str(work / engine))
            t0 = time.perf_counter()
            if engine == "pandas":
                summary = collect_and_label(spec, problem=problem, **common)
            else:
                summary = collect_and_label_spark(spec, problem=problem, spark=spark, log=_progress, **common)
            seconds = time.perf_counter() - t0
            out[engine] = {
                "seconds": round(seconds, 2),
                "rows_in": summary["rows_in"],
                "rows_per_s": round(summary["rows_in"] / seconds),
                "rows_curated": summary["rows_curated"],
                "dataset_rows": summary["dataset_rows"],
            }
            print(f"[{rows:,} rows] {engine}: {seconds:.1f} s", file=sys.stderr, flush=True)
        files = sorted(p.relative_to(work / "pandas") for p in (work / "pandas").glob("curated/*/part-0.parquet"))
        files.append(Path(RunLayout.dataset_in("runs/bench")))
        differ = [str(f) for f in files if (work / "pandas" / f).read_bytes() != (work / "spark" / f).read_bytes()]
        out["files_compared"] = len(files)
        out["files_differing"] = differ
        out["spark_over_pandas"] = round(out["spark"]["seconds"] / out["pandas"]["seconds"], 1)
        out["entity_features"] = _entity_features(spec, work, summary["engine"]["entity_features"])
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _entity_features(spec: Any, work: Path, info: dict[str, Any]) -> dict[str, Any]:
    """The Spark job's per-entity features (part of its seconds above) against features.py's on the
    data set: features.py's time for the same groups and the largest relative difference."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from include.lifecycle.features import EntityFeatures, FeaturePipeline

    df = pd.read_parquet(work / "pandas" / "runs" / "bench" / "dataset.parquet")
    pipeline = FeaturePipeline.from_spec(spec, info["groups"])
    t0 = time.perf_counter()
    own, _ = pipeline.engineer(df)
    pandas_seconds = time.perf_counter() - t0
    pre = EntityFeatures.from_arrow(pq.read_table(work / "spark" / info["rel"]))
    a, b = pre.frame[info["columns"]].to_numpy(), own[info["columns"]].to_numpy()
    known = ~(np.isnan(a) | np.isnan(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(known, np.abs(a - b) / np.maximum(np.abs(b), 1e-300), 0.0)
    per_column = dict(zip(info["columns"], (float(v) for v in rel.max(axis=0, initial=0.0)), strict=True))
    return {
        "groups": info["groups"],
        "columns": len(info["columns"]),
        "rows": len(df),
        "spark_seconds": info["seconds"],
        "features_py_seconds": round(pandas_seconds, 2),
        "max_relative_difference": max(per_column.values(), default=0.0),
        "max_relative_difference_by_column": per_column,
        "nan_mismatches": int((np.isnan(a) != np.isnan(b)).sum()),
    }


def _progress(msg: str) -> None:
    if msg.startswith(("spark:", "window", "collect_and_label", "per-entity")):
        print(f"  {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[1_000_000])
    p.add_argument("--master", default="local[2]")
    p.add_argument("--conf", action="append", default=[], help="a Spark setting key=value (repeatable)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from pyspark.sql import SparkSession

    from tests.unit.engines import find_java_home

    os.environ["JAVA_HOME"] = find_java_home()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = (
        SparkSession.builder.master(args.master)
        .appName("bench-collect-spark")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "6g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
    )
    for kv in args.conf:
        k, _, v = kv.partition("=")
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        results = [run(n, args.master, spark) for n in sorted(args.rows)]
    finally:
        spark.stop()
    for r in results:
        print(
            f"{r['rows']:>10,} rows  pandas {r['pandas']['seconds']:>7.1f} s ({r['pandas']['rows_per_s']:,} rows/s)  "
            f"spark {r['master']} {r['spark']['seconds']:>7.1f} s ({r['spark']['rows_per_s']:,} rows/s)  "
            f"files differing {len(r['files_differing'])} of {r['files_compared']}"
        )
    out = args.out or ROOT / "bench" / "results" / f"collect-spark-{dt.date.today().isoformat()}.json"
    data = {
        "what": "collect_and_label: collect.py vs collect_spark.py on a local Spark, and their bytes compared",
        "date": dt.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_end": os.getloadavg()},
        "results": results,
    }
    out.write_text(json.dumps(data, indent=2))
    print(f"written: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
