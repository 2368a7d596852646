"""`make bench` must keep working: bench/lifecycle.py end to end on a small window.

This is not a speed test (the numbers of a 60k-row run mean nothing and are not checked); it
proves the benchmark still runs the DAG through `airflow dags test` and the same sections in a
plain process on the same data, that both sides time every section, and that the training step
and bare ``xgboost.train`` build the same model (the comparison is like for like).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from include.lifecycle.spec import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_bench_lifecycle_runs_both_sides_and_compares_like_for_like(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "bench/lifecycle.py", "--rows", "60000", "--train-reps", "1", "--out", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    try:
        import lifecycle as bench
    finally:
        sys.path.remove(str(PROJECT_ROOT / "bench"))
    for label in [*bench.SECTIONS, "overhead a/b", "ETL rows/s (b)", "features rows/s (b)", "training / bare xgboost"]:
        assert label in proc.stdout, label

    (r,) = json.loads(out.read_text())["results"]
    assert r["rows"] == 60_000
    # every section ran on both sides (the branch ends in one of its two tasks)
    assert set(r["airflow"]["sections_s"]) == set(r["plain"]["sections_s"]) == set(bench.SECTIONS)
    # the plain side read all generated rows and engineered features for every labelled row
    assert r["plain"]["rows_in"] == r["prepare"]["rows_generated"]
    assert sum(r["plain"]["feature_rows"].values()) == r["plain"]["dataset_rows"] > 0
    assert r["etl_rows_per_s"] > 0 and r["features_rows_per_s"] > 0 and r["ratio"] > 0
    # the training step and bare xgboost.train fit the same trees on the same matrix
    assert r["train"]["same_model"] == {"bare_quantile_dmatrix": True, "bare_dmatrix": True}
    assert r["train"]["train_rows"] == r["plain"]["feature_rows"]["train"]
