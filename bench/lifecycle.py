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

What the two totals hold, so that the ratio is fair in both directions:

- (a) the wall time of the ``airflow dags test`` process, start to exit; the table splits it into
  the sections (task start to end in the metadata database) and what lies outside the tasks:
  before the first task (interpreter, Airflow import, CLI, DAG-file parse and sync, the in-process
  execution API), between tasks, after the last task (interpreter exit).
- (b) the wall time of a plain Python process that runs the same section functions, start to
  exit: interpreter start, the libraries the sections' modules import (numpy, pandas, pyarrow,
  fsspec), the sections, interpreter exit. Only the import of the Airflow glue the plain run calls
  the sections through (``ml_lifecycle`` imports ``airflow.sdk``) is left out: that is orchestration;
  it is measured and shown. (Until 2026-11 (b) counted the sections only, leaving out the
  interpreter start, imports and exit that any plain run pays.)

The training step is compared in a process of its own: the script-mode step
(``include/jobs/train.py``, reading its channels, fitting, scoring the training and validation rows,
writing the model and metrics) against a bare ``xgboost.train`` with the very parameters
``XGBClassifier.fit`` passes it (``get_xgb_params()``: same thread count, seed, objective...) on the
same matrix, on both a ``QuantileDMatrix`` (what the step builds) and a ``DMatrix``, taking the
faster as the baseline. The runs alternate and repeat (``--train-reps``); the minimum of each counts,
as the machine may be shared. The bare models are checked to be the step's model, tree for tree.

    .venv/bin/python bench/lifecycle.py                      # 250k, 1M, 4M
    .venv/bin/python bench/lifecycle.py --rows 250000
    .venv/bin/python bench/lifecycle.py --rows 1000000 --train-reps 5
"""

from __future__ import annotations

import argparse
import contextlib
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
    "round_1.train_model",
    "round_1.select_model",
    "round_1.evaluate_model",
    "round_1.meets_business_goal",
    "deploy_model|goal_not_met",
    "publish_report",
    "log_to_mlflow|model_deployed",  # model_deployed is skipped (not counted) when nothing was deployed
]


def bench_spec(trials: int = 1) -> dict[str, Any]:
    """The flagship spec, one round, one xgboost trial (or ``trials``, over a small grid around the
    same parameters), every feature group switched on."""
    import yaml

    spec = yaml.safe_load((ROOT / "include" / "problems" / "card_fraud.yaml").read_text())
    spec["name"] = PROBLEM
    spec["schedule"] = None
    spec["max_rounds"] = 1
    spec["data"].update(lookback_days=LOOKBACK, max_lookback_days=LOOKBACK)
    spec["features"]["initial"] = [g["name"] for g in spec["features"]["groups"]]
    spec["training"].update(
        initial_candidates=["xgboost"],
        trials_per_candidate=trials,
        max_trials=max(trials, spec["training"].get("max_trials", 1)),
        candidates=[{"family": "xgboost", "params": XGB_PARAMS}],
    )
    if trials > 1:
        spec["training"]["candidates"][0]["search"] = {"max_depth": [4, 6, 8], "learning_rate": [0.05, 0.1, 0.2]}
    return spec


def airflow_env(work: Path, artifacts: Path, problems: Path | None = None) -> dict[str, str]:
    """The environment of an ``airflow dags test`` / plain-Python run of the project under ``work``:
    its own Airflow home, data, artifacts and problems folder (default ``<work>/problems``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ML_"))}
    env.update(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        AIRFLOW_VAR_ML_PII_HASH_KEY="bench-only-key",
        ML_PROBLEMS_DIR=str(problems or work / "problems"),
        ML_DATA_ROOT=str(work / "data"),
        ML_ARTIFACT_ROOT=str(artifacts),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
    )
    return env


def prepare(work: Path, rows: int, trials: int = 1) -> dict[str, Any]:
    import yaml

    from include.lifecycle import synth

    (work / "problems").mkdir(parents=True, exist_ok=True)
    (work / "problems" / f"{PROBLEM}.yaml").write_text(yaml.safe_dump(bench_spec(trials), sort_keys=False))
    per_day = rows // LOOKBACK
    t0 = time.perf_counter()
    summary = synth.generate(
        work / "data" / "data" / "card_fraud" / "landing", end=AS_OF.date(), days=LOOKBACK, tx_per_day=per_day, seed=7
    )
    return {"generate_s": time.perf_counter() - t0, "rows_generated": summary["rows"], "per_day": per_day}


def run_airflow(work: Path) -> dict[str, Any]:
    env = airflow_env(work, work / "artifacts-airflow")
    db = work / "airflow" / "airflow.db"
    if not db.exists():
        subprocess.run([PY, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    t_spawn = time.time()
    proc = subprocess.run(
        [PY, "-m", "airflow", "dags", "test", PROBLEM, AS_OF.date().isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    t_exit = time.time()
    wall = t_exit - t_spawn
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
    spans: list[tuple[float, float]] = []
    for task_id, _map, start, end, state in rows:
        if state != "success" or not start or not end:
            continue
        spans.append((_epoch(start), _epoch(end)))
        key = next((s for s in SECTIONS if task_id in s.split("|")), task_id)
        sections[key] = sections.get(key, 0.0) + spans[-1][1] - spans[-1][0]
    spans.sort()
    outside = {
        "before_first_task": spans[0][0] - t_spawn,
        "between_tasks": sum(max(0.0, b[0] - a[1]) for a, b in zip(spans, spans[1:], strict=False)),
        "after_last_task": t_exit - max(e for _, e in spans),
    }
    return {"wall_s": wall, "sections_s": sections, "outside_tasks_s": outside, "peak_rss_mb": rss}


def _epoch(stamp: str) -> float:
    """A task's start or end date from the metadata database (UTC) as seconds since the epoch."""
    t = dt.datetime.fromisoformat(stamp)
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def run_plain(work: Path) -> dict[str, Any]:
    """(b) in a fresh interpreter, so its peak RSS is its own; timed from spawn to exit."""
    env = airflow_env(work, work / "artifacts-plain")
    t_spawn = time.time()
    proc = subprocess.run(
        [PY, str(Path(__file__).resolve()), "--plain-child", str(work), "--spawned-at", repr(t_spawn)],
        env=env,
        capture_output=True,
        text=True,
    )
    t_exit = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"plain run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = t_exit - t_spawn
    out["exit_s"] = t_exit - out.pop("t_end")
    # everything the computation needs in a plain process; only the Airflow glue import is left out
    out["fair_total_s"] = out["process_wall_s"] - out["airflow_glue_import_s"]
    return out


def _plain_context() -> dict[str, Any]:
    return {
        "run_id": "bench__plain",
        "data_interval_end": AS_OF,
        "logical_date": AS_OF,
        "params": {"max_rounds": 1, "lookback_days": LOOKBACK, "force_deploy": False, "backend": "local"},
    }


def plain_child(work: Path, spawned_at: float, progress: Path | None = None) -> None:
    """The sections of one round, called directly with the context keys they read.

    With ``progress``, one JSON line is appended there when each section starts and ends (flushed
    at once), so that a run killed part-way (bench/largest_window.py) still tells which section it
    was in and how long the finished ones took."""
    t_entry = time.time()
    # the same exit as the Airflow processes' (plugins/airflow_local_settings.py): the interpreter's
    # last garbage collection is left out on both sides, so neither pays it (1.4-1.7 s here)
    import atexit
    import gc

    atexit.register(gc.freeze)
    t0 = time.perf_counter()
    # what the sections' own modules import at module level (the rest they import when called)
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from include.lifecycle import spec, store  # noqa: F401

    imports_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # orchestration: the plain run reaches the sections through the plugin, which imports airflow.sdk
    from ml_lifecycle import sections
    from ml_lifecycle.operators import CollectAndLabelOperator, TrainingTrialOperator

    glue_s = time.perf_counter() - t0

    t_start = time.perf_counter()
    ctx = _plain_context()
    times: dict[str, float] = {}

    def mark(**event: Any) -> None:
        if progress is not None:
            with progress.open("a") as f:
                f.write(json.dumps(event | {"t": time.time()}) + "\n")

    def timed(name: str, fn, *args, **kwargs):
        mark(start=name)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times[name] = time.perf_counter() - t0
        mark(end=name, s=times[name])
        return out

    timed("formulate_problem", sections.formulate_problem, PROBLEM, **ctx)
    collect = timed(
        "collect_and_label", CollectAndLabelOperator(task_id="collect_and_label", problem=PROBLEM).execute, ctx
    )
    timed("evaluate_data", sections.evaluate_data, PROBLEM, **ctx)
    fe = timed("round_1.feature_engineering", sections.feature_engineering, PROBLEM, round_no=1, **ctx)
    trials = timed("round_1.plan_trials", sections.plan_trials, PROBLEM, round_no=1, **ctx)

    def run_trials():
        return [
            TrainingTrialOperator(task_id="train_model", problem=PROBLEM, round_no=1, trial=t).execute(ctx)
            for t in trials
        ]

    results = timed("round_1.train_model", run_trials)
    timed("round_1.select_model", sections.select_model, PROBLEM, round_no=1, trials=results, **ctx)
    timed("round_1.evaluate_model", sections.evaluate_model, PROBLEM, round_no=1, **ctx)
    branch = timed("round_1.meets_business_goal", sections.meets_business_goal, PROBLEM, round_no=1, **ctx)
    end = sections.deploy_model if branch == "deploy_model" else sections.goal_not_met
    timed("deploy_model|goal_not_met", end, PROBLEM, **ctx)
    timed("publish_report", sections.publish_report, PROBLEM, **ctx)

    def track_and_say() -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        sections.log_to_mlflow(PROBLEM, **ctx)
        with contextlib.suppress(AirflowSkipException):  # nothing deployed: skipped, as in the DAG
            sections.model_deployed(PROBLEM, **ctx)

    timed("log_to_mlflow|model_deployed", track_and_say)
    total = time.perf_counter() - t_start
    (work / "bench_trial.json").write_text(json.dumps(trials[0]))  # for the training comparison
    floor_s = etl_file_floor(work, collect["dataset_rows"])
    print(
        json.dumps(
            {
                "sections_s": times,
                "total_s": total,
                "startup_s": t_entry - spawned_at,
                "imports_s": imports_s,
                "airflow_glue_import_s": glue_s,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rows_in": collect["rows_in"],
                "dataset_rows": collect["dataset_rows"],
                "feature_rows": fe.get("rows") if isinstance(fe, dict) else None,
                "etl_file_floor_s": floor_s,
                "t_end": time.time(),
            }
        ),
        flush=True,
    )


def etl_file_floor(work: Path, dataset_rows: int) -> float:
    """Seconds the ETL's file work alone takes, as a floor under collect_and_label's time.

    Reads the window's transaction files (Arrow, as the ETL reads them), writes each back as a
    partition and the first ``dataset_rows`` rows as one data set, with the project's Parquet
    options (``Store.write_parquet``: zstd, dictionary pages), one after the other; no validation,
    tokens, sorting or labels. Run after the sections, with the files in the page cache as the ETL
    had them. The ETL cannot be faster than this on the same machine without writing less.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.lifecycle.store import Store

    source = work / "data" / "data" / "card_fraud" / "landing" / "transactions"
    out = Store.from_uri((work / "etl-floor").as_uri())
    t0 = time.perf_counter()
    tables = []
    for day in sorted(source.glob("ds=*")):
        table = pa.concat_tables([pq.read_table(f) for f in sorted(day.glob("*.parquet"))])
        out.write_parquet(f"curated/{day.name}/part-0.parquet", table)
        tables.append(table)
    out.write_parquet("dataset.parquet", pa.concat_tables(tables).slice(0, dataset_rows))
    seconds = time.perf_counter() - t0
    shutil.rmtree(work / "etl-floor", ignore_errors=True)
    return seconds


def run_train_comparison(work: Path, reps: int) -> dict[str, Any]:
    """The training step against bare ``xgboost.train``, in a fresh interpreter of its own."""
    env = airflow_env(work, work / "artifacts-plain")
    proc = subprocess.run(
        [PY, str(Path(__file__).resolve()), "--train-child", str(work), "--train-reps", str(reps)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"training comparison failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_child(work: Path, reps: int) -> None:
    """Alternate the script-mode step and bare ``xgboost.train`` on the trial (b) ran; minimum of each."""
    import numpy as np
    import xgboost as xgb

    from include.jobs import train as train_job
    from include.jobs.train import hyperparameter_args
    from include.lifecycle.models import build_model
    from ml_lifecycle.context import RunContext

    rc = RunContext.from_airflow(PROBLEM, _plain_context())
    trial = json.loads((work / "bench_trial.json").read_text())
    argv = hyperparameter_args(rc.spec, rc.store.read_json(rc.layout.round(1).plan), trial)
    channels = {split: rc.store.path(rc.layout.round(1).channel(split)) for split in ("train", "validation")}

    # the step's training matrix and estimator, built the way the step builds them
    args, params = train_job.parse_args(argv)
    if args.family != "xgboost" or args.problem_type != "binary_classification" or args.resample != "none":
        raise SystemExit(f"the comparison needs an xgboost binary trial without resampling, got {argv}")
    X, y, _ = train_job._xy(train_job.read_channel(channels["train"]))
    y = y.astype("int8")
    n_pos = max(int(y.sum()), 1)
    model = build_model(
        args.family,
        params,
        binary=True,
        seed=args.seed,
        class_weight=args.class_weight,
        pos_weight=(len(y) - n_pos) / n_pos,
    )
    xgb_params = model.get_xgb_params()  # exactly what XGBClassifier.fit hands to xgboost.train
    rounds = model.get_num_boosting_rounds()
    nthread = xgb_params["n_jobs"]

    def step() -> tuple[float, float, Any, dict[str, float]]:
        with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
            env = {
                "SM_CHANNEL_TRAIN": channels["train"],
                "SM_CHANNEL_VALIDATION": channels["validation"],
                "SM_MODEL_DIR": f"{tmp}/model",
                "SM_OUTPUT_DATA_DIR": f"{tmp}/output",
            }
            t0, c0 = time.perf_counter(), time.process_time()
            result = train_job.main(argv, env=env, log=lambda _msg: None)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            booster = xgb.Booster(model_file=f"{tmp}/model/model.ubj")
        return wall, cpu, booster, result["seconds"]

    def bare(matrix: type) -> tuple[float, float, Any, None]:
        t0, c0 = time.perf_counter(), time.process_time()
        booster = xgb.train(xgb_params, matrix(X, label=y, nthread=nthread), num_boost_round=rounds)
        return time.perf_counter() - t0, time.process_time() - c0, booster, None

    runs = {
        "step": step,
        "bare_quantile_dmatrix": lambda: bare(xgb.QuantileDMatrix),
        "bare_dmatrix": lambda: bare(xgb.DMatrix),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    dumps: dict[str, list[str]] = {}
    step_seconds = []
    for r in range(reps):
        order = list(runs)[r % 3 :] + list(runs)[: r % 3]  # rotate, so no variant always goes first
        for name in order:
            wall, cpu_s, booster, seconds = runs[name]()
            times[name].append(wall)
            cpu[name].append(cpu_s)
            dumps[name] = booster.get_dump()
            if seconds:
                step_seconds.append(seconds)
    best = {k: min(v) for k, v in times.items()}
    baseline = min(best["bare_quantile_dmatrix"], best["bare_dmatrix"])
    print(
        json.dumps(
            {
                "reps": reps,
                "train_rows": len(y),
                "features": int(X.shape[1]),
                "nthread": nthread,
                "params": {k: v for k, v in xgb_params.items() if v is not None} | {"num_boost_round": rounds},
                "min_s": best,
                "all_s": times,
                "noise": {k: (max(v) - min(v)) / min(v) for k, v in times.items()},
                "cpu_min_s": {k: min(v) for k, v in cpu.items()},
                "step_seconds_fastest": min(step_seconds, key=lambda s: s["total"]),
                "same_model": {k: dumps[k] == dumps["step"] for k in dumps if k != "step"},
                "bare_s": baseline,
                "train_vs_bare": best["step"] / baseline,
                "numpy": np.__version__,
                "xgboost": xgb.__version__,
            }
        ),
        flush=True,
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

    row(
        "sections, sum (a / b)",
        lambda r: f"{sum(r['airflow']['sections_s'].values()):.1f} / {r['plain']['total_s']:.1f}",
    )
    out = "outside_tasks_s"
    row("a: before first task", lambda r: f"{r['airflow'][out]['before_first_task']:.2f}")
    row("a: between tasks", lambda r: f"{r['airflow'][out]['between_tasks']:.2f}")
    row("a: after last task (exit)", lambda r: f"{r['airflow'][out]['after_last_task']:.2f}")
    row("b: start / imports / exit", lambda r: "{startup_s:.2f} / {imports_s:.2f} / {exit_s:.2f}".format(**r["plain"]))
    row("b: airflow glue import (left out)", lambda r: f"{r['plain']['airflow_glue_import_s']:.2f}")
    row(
        "total wall (a: dags test, b: plain)",
        lambda r: f"{r['airflow']['wall_s']:.1f} / {r['plain']['fair_total_s']:.1f}",
    )
    row("overhead a/b", lambda r: f"{r['ratio']:.2f}")
    row("  (a / b's sections only, as before)", lambda r: f"{r['ratio_sections_only']:.2f}")
    row("peak RSS MB (a / b)", lambda r: f"{r['airflow']['peak_rss_mb']:.0f} / {r['plain']['peak_rss_mb']:.0f}")
    row("ETL rows/s (b)", lambda r: f"{r['etl_rows_per_s']:,.0f}")
    row("  its file work alone (floor)", lambda r: f"{r.get('etl_file_floor_rows_per_s', 0):,.0f}")
    row("features rows/s (b)", lambda r: f"{r['features_rows_per_s']:,.0f}")
    row(
        "training step / bare (min of reps)",
        lambda r: "{:.2f} / {:.2f} s".format(r["train"]["min_s"]["step"], r["train"]["bare_s"]),
    )
    row("training / bare xgboost", lambda r: f"{r['train_vs_bare']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[250_000, 1_000_000, 4_000_000])
    p.add_argument("--train-reps", type=int, default=3, help="alternating runs of the training step and bare xgboost")
    p.add_argument("--plain-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--spawned-at", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--progress", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--train-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--keep", action="store_true", help="keep the working folders")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results/<date>.json)")
    args = p.parse_args(argv)
    if args.plain_child:
        plain_child(args.plain_child, args.spawned_at or time.time(), args.progress)
        return 0
    if args.train_child:
        train_child(args.train_child, args.train_reps)
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
            print(f"[{n:,} rows] training step against bare xgboost ...", file=sys.stderr, flush=True)
            train = run_train_comparison(work, args.train_reps)
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
                "train": train,
                "ratio": a["wall_s"] / b["fair_total_s"],
                "ratio_sections_only": a["wall_s"] / b["total_s"],
                "etl_rows_per_s": b["rows_in"] / b["sections_s"]["collect_and_label"],
                "etl_file_floor_rows_per_s": b["rows_in"] / b["etl_file_floor_s"],
                "features_rows_per_s": b["dataset_rows"] / feat_s,
                "train_vs_bare": train["train_vs_bare"],
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
    out = args.out or ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}.json"
    # merged into the day's file: bench/scheduler.py keeps its figures there under "scheduler"
    data = json.loads(out.read_text()) if out.exists() else {}
    data.update(machine=machine(), results=results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json.tmp").write_text(json.dumps(data, indent=2, default=str))
    out.with_suffix(".json.tmp").replace(out)
    print(f"machine: {machine()}\nwritten: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
