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


def test_bench_scheduler_runs_the_dag_on_a_real_scheduler_within_the_cores(tmp_path):
    """bench/scheduler.py on a small window with two trials, two slots: the run goes through a real
    scheduler (LocalExecutor) and the plain path; every task's time is split into its phases; the
    trials ran side by side, each with its share of the cores, waiting passively in OpenMP. The
    results are merged into the file under their own key, next to what was there."""
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"machine": "kept", "results": ["bench/lifecycle.py's"]}))
    proc = subprocess.run(
        [
            sys.executable,
            "bench/scheduler.py",
            "--rows",
            "40000",
            "--reps",
            "1",
            "--trials",
            "2",
            "--trial-slots",
            "2",
            "--label",
            "scheduler_test",
            "--out",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["results"] == ["bench/lifecycle.py's"] and data["machine"] == "kept"
    (r,) = data["scheduler_test"]["results"]
    assert r["rows"] == 40_000 and r["trials"] == 2 and r["ratio_median"] > 0
    (run,) = r["scheduler_runs"]
    # plugins/airflow_local_settings.py: the scheduler the stack started had the task libraries loaded
    assert run["scheduler_preloaded"] is True
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    try:
        import scheduler as bench
    finally:
        sys.path.remove(str(PROJECT_ROOT / "bench"))
    # the sections on both sides; train_model is two mapped task instances on the scheduler
    assert set(run["sections_s"]) == set(r["plain_runs"][0]["sections_s"])
    trials = [t for t in run["task_detail"] if t["task_id"] == "round_1.train_model"]
    assert sorted(t["map_index"] for t in trials) == [0, 1]
    for t in run["task_detail"]:  # the phases add up to the task instance's own wall time
        parts = sum(t[f"{k}_s"] for k in bench.PHASES if k not in ("scheduling", "queue"))
        assert abs(parts - t["wall_s"]) < 0.05, t
        assert t["compute_s"] > 0 and t["dag_file_parse_ms"] is not None
    c = run["trials"]
    cores = c["cores"]
    assert c["trials"] == 2 and c["threads_x_concurrent"] <= cores and c["within_cores"]
    assert all(t["threads"] * c["max_concurrent"] <= cores for t in c["per_trial"])
    if cores >= 2:  # two slots: the trials ran side by side, one thread each on two cores
        assert c["max_concurrent"] == 2 and c["threads_per_trial"] == [cores // 2]
    assert all(t["openmp"] == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"} for t in c["per_trial"])
    assert "scheduler" in proc.stdout and "ratio" in proc.stdout


def test_make_bench_shows_the_largest_window_measured(tmp_path):
    """`make bench` ends with the largest local window that `make bench-window` measured (the newest
    results file): measuring it takes most of an hour, so `make bench` shows it rather than runs it."""

    def show(*extra: str) -> str:
        proc = subprocess.run(
            [sys.executable, "bench/largest_window.py", "--show", *extra],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    newest = sorted((PROJECT_ROOT / "bench" / "results").glob("largest-window-*.json"))[-1]
    results = json.loads(newest.read_text())["results"]
    shown = show()
    assert newest.name in shown and "outcome" in shown
    ran = [r["rows"] for r in results if r.get("ok")]
    assert f"{max(ran):,}" in shown  # the largest window that ran is in the table
    assert "not measured yet" in show("--out", str(tmp_path / "none.json"))
    assert "bench/largest_window.py --show" in (PROJECT_ROOT / "Makefile").read_text()
