"""Benchmark: what a whole lifecycle run costs through Airflow against the same sections in one
plain Python process, at several data sizes (run by `make bench`, never by `make test`).

For each size (transactions in the training window) it generates the flagship's demo data with
the project's generator, then runs one round with one xgboost trial and the full fraud feature
set twice, on separate artifact roots so neither re-uses the other's curated partitions:

  (a) ``airflow dags test`` of the DAG (per-section times from the metadata database);
  (b) the same section functions called one after the other in a plain Python process.

It prints a table (wall time per section, total, the ratio a/b, peak RSS, ETL and feature rows/s,
the training step against a bare ``xgboost.train`` with the same parameters on the same matrix)
and writes the numbers to ``bench/results/<date>.json``.

    .venv/bin/python bench/lifecycle.py                      # 250k, 1M, 4M
    .venv/bin/python bench/lifecycle.py --rows 250000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
AS_OF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
LOOKBACK = 28
PROBLEM = "bench_fraud"
XGB_PARAMS = {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1, "subsample": 0.9, "colsample_bytree": 0.8}
SECTIONS = [
    "formulate_problem",
    "collect_and_label",
    "evaluate_data",
    "round_1.feature_engineering",
    "round_1.plan_trials",
    "round_1.tuning_trials",
    "round_1.train_model",
    "round_1.evaluate_model",
    "round_1.meets_business_goal",
    "deploy_model|goal_not_met",
    "publish_report",
]


def bench_spec() -> dict[str, Any]:
    """The flagship spec, one round, one xgboost trial, every feature group switched on."""
    import yaml

    spec = yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    spec["name"] = PROBLEM
    spec["schedule"] = None
    spec["max_rounds"] = 1
    spec["data"].update(lookback_days=LOOKBACK, max_lookback_days=LOOKBACK)
    spec["features"]["initial"] = [g["name"] for g in spec["features"]["groups"]]
    spec["training"].update(
        initial_candidates=["xgboost"],
        trials_per_candidate=1,
        candidates=[{"family": "xgboost", "params": XGB_PARAMS}],
    )
    return spec


def _env(work: Path, artifacts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ML_"))}
    env.update(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        AIRFLOW_VAR_ML_PII_HASH_KEY="bench-only-key",
        ML_PROBLEMS_DIR=str(work / "problems"),
        ML_DATA_ROOT=str(work / "data"),
        ML_ARTIFACT_ROOT=str(artifacts),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
    )
    return env


def prepare(work: Path, rows: int) -> dict[str, Any]:
    import yaml

    from include.lifecycle import synth

    (work / "problems").mkdir(parents=True, exist_ok=True)
    (work / "problems" / f"{PROBLEM}.yaml").write_text(yaml.safe_dump(bench_spec(), sort_keys=False))
    per_day = rows // LOOKBACK
    t0 = time.perf_counter()
    summary = synth.generate(
        work / "data" / "data" / "card_fraud" / "landing", end=AS_OF.date(), days=LOOKBACK, tx_per_day=per_day, seed=7
    )
    return {"generate_s": time.perf_counter() - t0, "rows_generated": summary["rows"], "per_day": per_day}


def run_airflow(work: Path) -> dict[str, Any]:
    env = _env(work, work / "artifacts-airflow")
    db = work / "airflow" / "airflow.db"
    if not db.exists():
        subprocess.run([PY, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [PY, "-m", "airflow", "dags", "test", PROBLEM, AS_OF.date().isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"airflow dags test failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with sqlite3.connect(db) as con:
        run_id = con.execute(
            "SELECT run_id FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1", (PROBLEM,)
        ).fetchone()[0]
        rows = con.execute(
            "SELECT task_id, map_index, start_date, end_date, state FROM task_instance WHERE dag_id=? AND run_id=?",
            (PROBLEM, run_id),
        ).fetchall()
    sections: dict[str, float] = {}
    for task_id, _map, start, end, state in rows:
        if state != "success" or not start or not end:
            continue
        secs = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
        key = next((s for s in SECTIONS if task_id in s.split("|")), task_id)
        sections[key] = sections.get(key, 0.0) + secs
    return {"wall_s": wall, "sections_s": sections, "peak_rss_mb": rss}


def run_plain(work: Path) -> dict[str, Any]:
    """(b) in a fresh interpreter, so its peak RSS is its own."""
    env = _env(work, work / "artifacts-plain")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [PY, str(Path(__file__).resolve()), "--plain-child", str(work)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"plain run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def plain_child(work: Path) -> None:
    """The sections of one round, called directly with the context keys they read."""
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    from ml_lifecycle import sections
    from ml_lifecycle.context import RunContext
    from ml_lifecycle.operators import GlueEtlOperator, ScriptModeTrainingOperator

    t_start = time.perf_counter()
    ctx = {
        "run_id": "bench__plain",
        "data_interval_end": AS_OF,
        "logical_date": AS_OF,
        "params": {"max_rounds": 1, "lookback_days": LOOKBACK, "force_deploy": False, "backend": "local"},
    }
    times: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times[name] = time.perf_counter() - t0
        return out

    timed("formulate_problem", sections.formulate_problem, PROBLEM, **ctx)
    collect = timed("collect_and_label", GlueEtlOperator(task_id="collect_and_label", problem=PROBLEM).execute, ctx)
    timed("evaluate_data", sections.evaluate_data, PROBLEM, **ctx)
    fe = timed("round_1.feature_engineering", sections.feature_engineering, PROBLEM, round_no=1, **ctx)
    trials = timed("round_1.plan_trials", sections.plan_trials, PROBLEM, round_no=1, **ctx)

    def run_trials():
        return [
            ScriptModeTrainingOperator(task_id="tuning_trials", problem=PROBLEM, round_no=1, trial=t).execute(ctx)
            for t in trials
        ]

    results = timed("round_1.tuning_trials", run_trials)
    timed("round_1.train_model", sections.train_model, PROBLEM, round_no=1, trials=results, **ctx)
    timed("round_1.evaluate_model", sections.evaluate_model, PROBLEM, round_no=1, **ctx)
    branch = timed("round_1.meets_business_goal", sections.meets_business_goal, PROBLEM, round_no=1, **ctx)
    end = sections.deploy_model if branch == "deploy_model" else sections.goal_not_met
    timed("deploy_model|goal_not_met", end, PROBLEM, **ctx)
    timed("publish_report", sections.publish_report, PROBLEM, **ctx)
    total = time.perf_counter() - t_start

    # a bare xgboost.train with the trial's parameters on the very same training matrix
    rc = RunContext.from_airflow(PROBLEM, ctx)
    train = pd.read_parquet(rc.problem.path(f"{rc.round_dir(1)}/features/train/part-0.parquet"))
    y = train.pop("__target__").to_numpy()
    X = train[[c for c in train.columns if not c.startswith("__")]].to_numpy(dtype=np.float32)
    pos = max(1, int(y.sum()))
    params = {
        "objective": "binary:logistic",
        "max_depth": XGB_PARAMS["max_depth"],
        "eta": XGB_PARAMS["learning_rate"],
        "subsample": XGB_PARAMS["subsample"],
        "colsample_bytree": XGB_PARAMS["colsample_bytree"],
        "tree_method": "hist",
        "nthread": os.cpu_count() or 1,
        "scale_pos_weight": (len(y) - pos) / pos,
        "seed": 42,
    }
    t0 = time.perf_counter()
    xgb.train(params, xgb.DMatrix(X, label=y, nthread=params["nthread"]), num_boost_round=XGB_PARAMS["n_estimators"])
    bare = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "sections_s": times,
                "total_s": total,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rows_in": collect["rows_in"],
                "dataset_rows": collect["dataset_rows"],
                "feature_rows": fe.get("rows") if isinstance(fe, dict) else None,
                "train_rows": len(y),
                "bare_xgboost_s": bare,
            }
        )
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(line.split()[1]) // 1024**2
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = 0
    return f"{os.cpu_count()} cores ({cpu}), {mem} GB RAM, Python {platform.python_version()}"


def table(results: list[dict[str, Any]]) -> str:
    sizes = [r["rows"] for r in results]
    head = f"{'section (seconds)':34}" + "".join(f"{f'{n:,} a':>13}{f'{n:,} b':>13}" for n in sizes)
    lines = [head, "-" * len(head)]
    for s in SECTIONS:
        cells = "".join(
            f"{r['airflow']['sections_s'].get(s, 0):>13.2f}{r['plain']['sections_s'].get(s, 0):>13.2f}" for r in results
        )
        lines.append(f"{s:34}{cells}")
    lines.append("-" * len(head))

    def row(label: str, fn) -> None:
        lines.append(f"{label:34}" + "".join(f"{fn(r):>26}" for r in results))

    row("total wall (a: dags test, b: plain)", lambda r: f"{r['airflow']['wall_s']:.1f} / {r['plain']['total_s']:.1f}")
    row("overhead a/b", lambda r: f"{r['ratio']:.2f}")
    row("peak RSS MB (a / b)", lambda r: f"{r['airflow']['peak_rss_mb']:.0f} / {r['plain']['peak_rss_mb']:.0f}")
    row("ETL rows/s (b)", lambda r: f"{r['etl_rows_per_s']:,.0f}")
    row("features rows/s (b)", lambda r: f"{r['features_rows_per_s']:,.0f}")
    row("training / bare xgboost (b)", lambda r: f"{r['train_vs_bare']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[250_000, 1_000_000, 4_000_000])
    p.add_argument("--plain-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help="keep the working folders")
    args = p.parse_args(argv)
    if args.plain_child:
        plain_child(args.plain_child)
        return 0
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    results = []
    for n in sorted(args.rows):
        work = Path(tempfile.mkdtemp(prefix=f"bench-lifecycle-{n}-"))
        try:
            print(f"[{n:,} rows] generating data ...", file=sys.stderr, flush=True)
            prep = prepare(work, n)
            print(f"[{n:,} rows] (a) airflow dags test ...", file=sys.stderr, flush=True)
            a = run_airflow(work)
            print(f"[{n:,} rows] (b) plain python ...", file=sys.stderr, flush=True)
            b = run_plain(work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        feat_s = b["sections_s"]["round_1.feature_engineering"]
        results.append(
            {
                "rows": n,
                "prepare": prep,
                "airflow": a,
                "plain": b,
                "ratio": a["wall_s"] / b["total_s"],
                "etl_rows_per_s": b["rows_in"] / b["sections_s"]["collect_and_label"],
                "features_rows_per_s": b["dataset_rows"] / feat_s,
                "train_vs_bare": b["sections_s"]["round_1.tuning_trials"] / b["bare_xgboost_s"],
            }
        )
        print(table(results), flush=True)
    if len(results) > 1:
        by = {r["rows"]: r for r in results}
        if 1_000_000 in by and 4_000_000 in by:
            scale = {
                s: by[4_000_000]["plain"]["sections_s"].get(s, 0)
                / max(by[1_000_000]["plain"]["sections_s"].get(s, 0), 1e-9)
                for s in SECTIONS
            }
            print("time(4M)/time(1M) per section (b): " + ", ".join(f"{k} {v:.2f}" for k, v in scale.items()))
            for r in results:
                r["scaling_4m_over_1m"] = scale
    out = ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2, default=str))
    print(f"machine: {machine()}\nwritten: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
