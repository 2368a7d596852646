"""Benchmark: how long the demo-data generator and the fraud feature engineering take, and how
much memory they use, as the number of transactions grows.

    .venv/bin/python bench/bench_data_and_features.py            # 0.4M, 1M, 2M rows
    .venv/bin/python bench/bench_data_and_features.py --rows 4000000

Prints one line per size: rows, generate seconds, rows/s, features seconds, rows/s, peak RSS.
Speed goals are measured here, never in the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from include.lifecycle import synth
from include.lifecycle.features import engineer
from include.lifecycle.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
DAYS = 30


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(rows: int) -> dict[str, float]:
    spec = load_spec(ROOT / "include" / "problems" / "card_fraud.yaml")
    per_day = rows // DAYS
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synth.generate(tmp, end=dt.date(2026, 11, 1), days=DAYS, tx_per_day=per_day, seed=7)
        t_gen = time.perf_counter() - t0
        df = pd.read_parquet(Path(tmp) / "transactions")
    df = df.dropna(subset=["ts", "card_number", "amount"]).reset_index(drop=True)
    groups = [g for g in spec.features.groups if g.kind != "target_encoding"]  # needs labels
    t0 = time.perf_counter()
    feats, _ = engineer(df, groups, time_column="ts", entity_column="card_number", exclude={"transaction_id"})
    t_feat = time.perf_counter() - t0
    return {
        "rows": len(df),
        "generate_s": t_gen,
        "features_s": t_feat,
        "feature_columns": feats.shape[1],
        "peak_rss_mb": _peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[400_000, 1_000_000, 2_000_000])
    args = p.parse_args(argv)
    print(
        f"{'rows':>10} {'generate s':>11} {'rows/s':>10} {'features s':>11} {'rows/s':>10} {'cols':>5} {'peak MB':>8}"
    )
    for n in args.rows:
        r = run(n)
        print(
            f"{r['rows']:>10,} {r['generate_s']:>11.2f} {r['rows'] / r['generate_s']:>10,.0f} "
            f"{r['features_s']:>11.2f} {r['rows'] / r['features_s']:>10,.0f} {r['feature_columns']:>5} "
            f"{r['peak_rss_mb']:>8.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
