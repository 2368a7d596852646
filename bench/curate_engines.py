"""Benchmark: the ETL's row curation (cast, validate, de-duplicate, tokenise PII, join labels) of the
card_fraud spec through collect.py (pandas/Arrow) and through the Ibis definition
(include/lifecycle/curate_ibis.py) on DuckDB, on the demo card data at a few sizes.

    nice -n 10 .venv/bin/python bench/curate_engines.py                 # 1M and 4M rows
    nice -n 10 .venv/bin/python bench/curate_engines.py --rows 1000000 --reps 1

Every measurement runs in a fresh process of its own, so its peak RSS is its own. Engines:

* ``collect``: :func:`include.lifecycle.collect.collect_and_label` into a fresh problem folder
  (nothing re-used): reads the 30 daily partitions and the label feed, curates, writes the
  curated and quarantine partitions and the data set;
* ``duckdb``: DuckDB reads the same Parquet files itself (file name and row number as the
  bookkeeping columns), :func:`include.lifecycle.curate_ibis.curate` with the stage cached,
  and the curated rows, the quarantine and the data set written as Parquet files.

The target of issue #19: ETL >= 3M rows/s at 4M rows on 2 cores (rows in / wall seconds).
Writes bench/results/curate-engines-<date>.json. Speed goals are measured here, never in tests.
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
END = dt.date(2026, 11, 1)
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
ENGINES = ("collect", "duckdb")
PII_KEY = b"bench-pii-key-0123456789abcdef"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spec():
    import yaml

    from include.lifecycle.spec import parse_spec

    raw = yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    raw["data"]["lookback_days"] = DAYS  # the window holds every generated day
    return parse_spec(raw, "card_fraud.yaml")


def worker(engine: str, landing: str, out: str, threads: int) -> dict:
    """One measurement in this process: curate the landing zone, report rows/s and RSS."""
    import ibis

    from include.lifecycle.collect import collect_and_label, window_dates
    from include.lifecycle.curate_ibis import curate
    from include.lifecycle.store import Store

    spec = _spec()
    source, labels = f"{landing}/transactions", f"{landing}/chargebacks"
    t0 = time.perf_counter()  # the modules are imported: only the work is timed
    if engine == "collect":
        summary = collect_and_label(
            spec,
            problem=Store.from_uri(out),
            run_dir="runs/bench",
            as_of=AS_OF,
            lookback_days=DAYS,
            pii_key=PII_KEY,
            source_uri=source,
            labels_uri=labels,
            log=lambda _: None,
        )
        seconds = time.perf_counter() - t0
        rows_in, curated = summary["rows_in"], summary["rows_curated"]
        quarantined, dataset = summary["rows_quarantined"], summary["dataset_rows"]
    else:
        start, end = window_dates(AS_OF, DAYS)
        con = ibis.duckdb.connect(threads=threads)

        def raw_rows(folder: str, lo: str, hi: str):
            t = con.read_parquet(f"{folder}/ds=*/*.parquet", filename=True, file_row_number=True)
            ds = t.filename.re_extract(r"ds=(\d{4}-\d{2}-\d{2})", 1)
            t = t.mutate(_ds=ds, _source="file://" + t.filename, _row=t.file_row_number.cast("int64"))
            return t.filter((t._ds >= lo) & (t._ds < hi)).drop("filename", "file_row_number")

        lab_end = (AS_OF.date() + dt.timedelta(days=1)).isoformat()
        result = curate(
            raw_rows(source, start, end),
            spec,
            as_of=AS_OF,
            pii_key=PII_KEY,
            labels=raw_rows(labels, start, lab_end),
            cache=True,
        )
        Path(out).mkdir(parents=True, exist_ok=True)
        assert result.dataset is not None
        con.to_parquet(result.curated, f"{out}/curated.parquet")
        con.to_parquet(result.quarantine, f"{out}/quarantine.parquet")
        con.to_parquet(result.dataset, f"{out}/dataset.parquet")
        seconds = time.perf_counter() - t0
        count = con.con.execute
        curated = count(f"SELECT count(*) FROM '{out}/curated.parquet'").fetchone()[0]
        quarantined = count(f"SELECT count(*) FROM '{out}/quarantine.parquet'").fetchone()[0]
        dataset = count(f"SELECT count(*) FROM '{out}/dataset.parquet'").fetchone()[0]
        rows_in = curated + quarantined
    return {
        "engine": engine,
        "rows_in": rows_in,
        "rows_curated": curated,
        "rows_quarantined": quarantined,
        "dataset_rows": dataset,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows_in / seconds),
        "peak_rss_mb": round(_rss_mb()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 4_000_000])
    p.add_argument("--engines", nargs="*", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--landing", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"curate-engines-{dt.date.today()}.json")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.landing, args.work, args.threads)))
        return 0

    from include.lifecycle import synth

    results = []
    print(f"{'rows in':>10} {'engine':>8} {'seconds':>8} {'rows/s':>11} {'peak MB':>8} {'curated':>10} {'quar.':>7}")
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            landing = str(Path(tmp) / "landing")
            synth.generate(landing, end=END, days=DAYS, tx_per_day=n // DAYS, seed=7)
            for rep in range(args.reps):
                for engine in args.engines:
                    work = str(Path(tmp) / f"{engine}-{rep}")
                    cmd = [sys.executable, __file__, "--worker", engine, "--landing", landing, "--work", work]
                    cmd += ["--threads", str(args.threads)]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
                    if proc.returncode:
                        raise SystemExit(f"{engine} at {n} rows failed:\n{proc.stderr[-4000:]}")
                    r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"rep": rep, "target_rows": n}
                    results.append(r)
                    print(
                        f"{r['rows_in']:>10,} {engine:>8} {r['seconds']:>8.2f} {r['rows_per_s']:>11,} "
                        f"{r['peak_rss_mb']:>8} {r['rows_curated']:>10,} {r['rows_quarantined']:>7,}",
                        flush=True,
                    )
    summary = {
        "what": "curation of the card_fraud spec's window (cast, validate, de-duplicate, tokenise, labels): "
        "collect.py's collect_and_label vs curate_ibis on DuckDB",
        "date": str(dt.date.today()),
        "target": "ETL >= 3M rows/s at 4M rows on 2 cores (issue #19)",
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
