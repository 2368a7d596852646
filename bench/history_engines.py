"""Benchmark: the per-entity features (the card_fraud spec's ``velocity`` and ``history`` groups)
through features.py (pandas/numpy) and through the Ibis definition (include/lifecycle/history_ibis.py)
on DuckDB, at a few sizes of the demo card data.

    nice -n 10 .venv/bin/python bench/history_engines.py                 # 1M and 4M rows
    nice -n 10 .venv/bin/python bench/history_engines.py --rows 250000 --reps 1

Every measurement runs in a fresh process of its own, so its peak RSS is its own. Engines:

* ``pandas``: :func:`include.lifecycle.features.engineer` on the frame in memory;
* ``duckdb_frame``: the Ibis expression on DuckDB (``threads``) over the same frame in memory,
  the result fetched as a pandas frame (what features.py returns);
* ``duckdb_parquet``: the same over the parquet files (DuckDB reads them itself).

Writes bench/results/history-engines-<date>.json. Speed goals are measured here, never in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAYS = 30
ENGINES = ("pandas", "duckdb_frame", "duckdb_parquet")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _groups() -> list:
    from include.lifecycle.spec import load_spec

    spec = load_spec(ROOT / "include" / "problems" / "card_fraud.yaml")
    return [g for g in spec.features.groups if g.kind in ("velocity", "history")]


def worker(engine: str, data: str, threads: int) -> dict:
    """One measurement in this process: load the data, time the features, report rows/s and RSS."""
    import pandas as pd

    groups = _groups()
    df = pd.read_parquet(data)
    df = df.dropna(subset=["ts", "card_number", "amount"]).reset_index(drop=True)
    loaded_rss = _rss_mb()
    if engine == "pandas":
        from include.lifecycle.features import engineer

        t0 = time.perf_counter()
        out, _ = engineer(df, groups, time_column="ts", entity_column="card_number", exclude={"transaction_id"})
        seconds = time.perf_counter() - t0
    else:
        import ibis

        from include.lifecycle.history_ibis import per_entity_features

        con = ibis.duckdb.connect(threads=threads)
        t0 = time.perf_counter()
        table = ibis.memtable(df) if engine == "duckdb_frame" else con.read_parquet(f"{data}/**/*.parquet")
        expr = per_entity_features(
            table, groups, time_column="ts", entity_column="card_number", keep=["transaction_id"]
        )
        out = con.to_pandas(expr)
        seconds = time.perf_counter() - t0
    return {
        "engine": engine,
        "rows": len(df),
        "out_rows": len(out),
        "feature_columns": out.shape[1] - (engine != "pandas"),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(df) / seconds),
        "rss_after_load_mb": round(loaded_rss),
        "peak_rss_mb": round(_rss_mb()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 4_000_000])
    p.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"history-engines-{dt.date.today()}.json")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.threads)))
        return 0

    from include.lifecycle import synth

    results = []
    print(f"{'rows':>10} {'engine':>15} {'seconds':>8} {'rows/s':>11} {'peak MB':>8}", flush=True)
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            synth.generate(tmp, end=dt.date(2026, 11, 1), days=DAYS, tx_per_day=n // DAYS, seed=7)
            data = str(Path(tmp) / "transactions")
            for rep in range(args.reps):
                for engine in args.engines:
                    cmd = [sys.executable, __file__, "--worker", engine, "--data", data, "--threads", str(args.threads)]
                    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
                    r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"rep": rep, "target_rows": n}
                    results.append(r)
                    print(
                        f"{r['rows']:>10,} {engine:>15} {r['seconds']:>8.2f} {r['rows_per_s']:>11,} {r['peak_rss_mb']:>8}",
                        flush=True,
                    )
    summary = {
        "what": "velocity + history features of the card_fraud spec: features.py vs Ibis on DuckDB",
        "date": str(dt.date.today()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_end": os.getloadavg()},
        "duckdb_threads": args.threads,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
