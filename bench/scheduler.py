"""Benchmark: the flagship run on a real scheduler (LocalExecutor) against the same sections in one
plain Python process (run by `make bench`, never by `make test`).

For each size it generates the flagship's demo data with the project's generator (the spec, data
and one-round, fixed-trial overrides of ``bench/lifecycle.py``), then, per repetition:

  (a) a fresh Airflow on a throwaway ``AIRFLOW_HOME`` (the project's own metadata database: SQLite
      as ``make up`` runs it, or ``--db postgres``, a PostgreSQL 15 cluster on 127.0.0.1), with the
      scheduler (LocalExecutor), dag-processor and api-server as separate processes on loopback;
      once the DAG is parsed, one run is triggered over the REST API and timed from the POST to
      the run's end (its ``end_date`` in the metadata database);
  (b) the plain path of ``bench/lifecycle.py``: the same section functions one after the other
      in a fresh interpreter, start to exit (only the Airflow glue import left out).

Each repetition has its own artifact root (and MLflow store), so no run sees another's champion
or curated partitions. Airflow is started before the clock starts; its start is not counted.

Per task the run is split by the metadata database's times and the task's own log:

  scheduling   the last task that ended before it was queued (or the trigger) -> queued: the
               scheduler's loop
  queue        queued -> start: the executor hands it to a worker, which forks the supervisor,
               which tells the execution API the task runs
  process      start -> the task's first log line: the task process forks and starts up
  parse        -> the end of "Pre Execute": DAG bundle, DAG-file parse (the project's imports),
               the task's context from the execution API
  compute      the task's code (``execute``), up to "Post Execute" in its log
  finish       -> end: XCom push, the state to the execution API

CPU: the scheduler's session (its main process, the executor's workers and every task process
they forked) and the api-server (the execution API) during the run, against the plain process's
CPU: on a shared machine this is steadier than wall time. The load average is recorded with
every run. The execution API is built on the api-server's first request to it (about 3 s, once
per api-server): it is warmed before the clock starts, as on a scheduler that has run anything.

Variants, for what the deployment (not the DAG) can change: ``--airflow-config`` sets Airflow
options of the stack (e.g. ``scheduler.scheduler_idle_sleep_time=0.2``: the scheduler sleeps 1 s
by default when a loop found nothing to do, so a task waits 0.5 s on average to be queued after
its upstream ends; under ``make bench`` the stack gets the Makefile's 0.2 s, as ``make up`` does,
and the value is recorded with each run). The stack imports the project's
``plugins/airflow_local_settings.py``, with which the scheduler imports the libraries the tasks
use at start (the LocalExecutor forks its workers from the scheduler and each task process from
a worker, so a task then starts with pandas, scikit-learn, xgboost and MLflow in memory instead
of importing them: MLflow alone takes 2-3 s here, and several tasks use it); ``--no-preload``
turns that off (``ML_PRELOAD_LIBRARIES=false``).

Trials: every mapped ``train_model`` instance with its threads (``SM_NUM_CPUS``, from its XCom),
wall time and the most trials that ran at once; ``threads x concurrent <= cores`` is checked and
recorded (``--trials N`` runs N trials in the round, which (b) runs one after the other; its
results go under the key ``"scheduler_<N>_trials"``).

The results go under the key ``"scheduler"`` of ``bench/results/<date>.json``, merged with what
``bench/lifecycle.py`` writes there.

    .venv/bin/python bench/scheduler.py                       # 1M and 4M rows, 3 repetitions
    .venv/bin/python bench/scheduler.py --rows 1000000 --label scheduler_no_preload --no-preload
    .venv/bin/python bench/scheduler.py --rows 1000000 --label scheduler_idle_0.2 \
        --airflow-config scheduler.scheduler_idle_sleep_time=0.2
    .venv/bin/python bench/scheduler.py --rows 100000 --reps 1
    .venv/bin/python bench/scheduler.py --rows 200000 --reps 1 --trials 4 --trial-slots 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "plugins")]

import lifecycle  # noqa: E402  (bench/lifecycle.py: spec, data, plain path, section names)

from ml_lifecycle import localstack  # noqa: E402  (plugins/: the loopback Airflow stack)

PY = sys.executable
PROBLEM = lifecycle.PROBLEM
AS_OF = lifecycle.AS_OF
PHASES = ("scheduling", "queue", "process", "parse", "compute", "finish")
WAIT = 1800  # seconds: a safety bound for each wait, not a measurement


def _has_xgboost(pid: int) -> bool:
    """Whether a process has xgboost's native library loaded (plugins/airflow_local_settings.py
    preloads it in the scheduler)."""
    try:
        return "libxgboost" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def _wait(what: str, probe, procs: dict[str, subprocess.Popen], every: float = 0.5) -> Any:
    return localstack.wait_for(what, probe, procs, every=every, timeout=WAIT)


def stack_env(
    work: Path, home: Path, artifacts: Path, db_url: str, port: int, trial_slots: int | None, tune: dict[str, Any]
) -> dict[str, str]:
    env = localstack.stack_env(home, db_url, port, base=lifecycle.airflow_env(work, artifacts))
    env.update(
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",  # only the benchmarked DAG is unpaused
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",  # the task logs carry the compute times
        ML_CODE_VERSION="bench",
        # plugins/airflow_local_settings.py: the scheduler preloads the task libraries (default)
        ML_PRELOAD_LIBRARIES="true" if tune.get("preload", True) else "false",
        OMP_DISPLAY_ENV="VERBOSE",  # libgomp logs its wait policy in the task log when it loads
    )
    if trial_slots:
        env["ML_TRIAL_SLOTS"] = str(trial_slots)
    idle = "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"
    if idle in os.environ:  # what `make up` gives its scheduler (the Makefile exports it: 0.2 s)
        env[idle] = os.environ[idle]
    for key, value in tune.get("config", {}).items():  # --airflow-config section.key=value
        section, _, name = key.partition(".")
        env[f"AIRFLOW__{section.upper()}__{name.upper()}"] = value
    return env


def session_cpu(procs: dict[str, subprocess.Popen]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each component's session (each was started as a
    session of its own): its live processes and the children they reaped. The scheduler's holds
    its executor workers and every task process they forked and reaped (the tasks' own CPU), so
    its main process is also shown alone (``scheduler_main``)."""
    tick = os.sysconf("SC_CLK_TCK")
    sessions = {proc.pid: name for name, proc in procs.items()}
    cpu = dict.fromkeys([*procs, "scheduler_main"], 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = sessions.get(int(fields[3]))  # field 6 of stat: the session id
        if name:
            used = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            cpu[name] += used + (int(fields[13]) + int(fields[14])) / tick  # + reaped children's
            if name == "scheduler" and int(stat.parent.name) == procs["scheduler"].pid:
                cpu["scheduler_main"] += used
    return cpu


def _ts(stamp: str | None) -> float | None:
    if not stamp:
        return None
    t = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _log_lines(path: Path) -> list[tuple[float, str, str]]:
    """(time, logger, event) of a task's JSON-lines log."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "timestamp" in rec:
            out.append((_ts(rec["timestamp"]), str(rec.get("logger", "")), str(rec.get("event", ""))))
    return out


def task_phases(log_file: Path) -> dict[str, float | None]:
    """The task runner's own markers in its log: its first line (the task process is up), the end
    of "Pre Execute" (DAG bundle loaded, DAG file parsed, the task's code begins), the start of
    "Post Execute" (the task's code returned) and the DAG-file parse time it reports."""
    marks: dict[str, Any] = {"first_line": None, "code_start": None, "code_end": None, "parse_ms": None}
    if not log_file.exists():
        return marks
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        t, event = _ts(rec.get("timestamp")), str(rec.get("event", ""))
        if t is None:
            continue
        if marks["first_line"] is None:
            marks["first_line"] = t
        if event == "::endgroup::" and marks["code_start"] is None:
            marks["code_start"] = t
        elif event == "::group::Post Execute":
            marks["code_end"] = t
        elif event == "Worker startup parse complete":
            marks["parse_ms"] = rec.get("dag_file_parse_ms")
        else:
            name, eq, value = event.strip().partition(" = ")
            if eq and name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
                marks.setdefault("openmp", {})[name] = value.strip("'")
    return marks


def run_once(
    work: Path,
    rep: int,
    db: str,
    pg_server: str | None,
    trial_slots: int | None,
    keep_logs: Path | None,
    tune: dict[str, Any],
) -> dict[str, Any]:
    """One run of the DAG on a fresh scheduler; the times of the run and of every task instance."""
    base = work / f"sched-{rep}"
    home, artifacts = base / "home", base / "artifacts"
    home.mkdir(parents=True)
    port = localstack.free_port()
    if db == "postgres":
        db_url = localstack.create_database(pg_server, f"bench_{rep}_{secrets.token_hex(3)}")
    else:
        db_url = f"sqlite:///{home / 'airflow.db'}"
    env = stack_env(work, home, artifacts, db_url, port, trial_slots, tune)
    localstack.migrate(env)
    with localstack.airflow_stack(env) as (api, procs):

        def parsed():
            status, dag = api.call("GET", f"/api/v2/dags/{PROBLEM}")
            return dag if status == 200 else None

        _wait(f"the dag-processor to parse {PROBLEM}", parsed, procs)
        status, body = api.call("PATCH", f"/api/v2/dags/{PROBLEM}", {"is_paused": False})
        if status != 200:
            raise RuntimeError(f"unpause: {status} {body}")
        # the api-server builds its execution API on the first request to it (3 s here): a
        # scheduler that has run anything before has paid that already, so pay it before the clock
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{api.base}/execution/health", timeout=60) as r:
            r.read()
        execution_api_warmup_s = time.perf_counter() - t0
        time.sleep(2)  # the scheduler's next loop sees the DAG unpaused; nothing is running
        load_before = _load()
        cpu_before = session_cpu(procs)
        t_trigger = time.time()
        status, run = api.call(
            "POST", f"/api/v2/dags/{PROBLEM}/dagRuns", {"logical_date": AS_OF.isoformat(), "conf": {}}
        )
        if status != 200:
            raise RuntimeError(f"trigger: {status} {run}")
        run_path = f"/api/v2/dags/{PROBLEM}/dagRuns/{urllib.request.quote(run['dag_run_id'], safe='')}"

        def ended():
            status, r = api.call("GET", run_path)
            return r if status == 200 and r["state"] in ("success", "failed") else None

        # the run's end is its end_date in the database: polling once a second only delays seeing
        # it (poll_lag_s), and spares the api-server's CPU, which the tasks share
        run = _wait(f"run {run['dag_run_id']}", ended, procs, every=1.0)
        t_seen = time.time()
        preloaded = _has_xgboost(procs["scheduler"].pid)
        cpu_after = session_cpu(procs)
        status, tis = api.call("GET", run_path + "/taskInstances?limit=100")
        tis = tis["task_instances"]
        trials = []
        for ti in tis:
            if ti["task_id"].endswith(".train_model") and ti["state"] == "success":
                path = run_path + f"/taskInstances/{ti['task_id']}/xcomEntries/return_value?map_index={ti['map_index']}"
                status, x = api.call("GET", path)
                value = x.get("value") if status == 200 else None
                if isinstance(value, str):
                    value = json.loads(value)
                trials.append((ti, value or {}))
    if run["state"] != "success":
        failed = [ti["task_id"] for ti in tis if ti["state"] == "failed"]
        raise RuntimeError(f"the run failed ({failed}); logs under {home / 'logs'}")
    result = summarise_run(home, run, tis, t_trigger, t_seen)
    # CPU the orchestrator burns while the run goes on, on the same cores as the tasks (the
    # scheduler's figure leaves out the task processes that ended: see session_cpu)
    result["cpu_during_run_s"] = {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_before}
    result["scheduler_idle_sleep_time"] = env.get("AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "1 (default)")
    result["scheduler_preloaded"] = preloaded  # xgboost's library mapped in the scheduler process
    result["execution_api_first_request_s"] = execution_api_warmup_s  # not in the run's time
    result["load_before"] = load_before
    result["load_after"] = _load()
    # with the preload libgomp loads (and shows its settings) in the scheduler, and every task
    # process inherits it by fork; without it, each task's own log shows them
    result["scheduler_openmp"] = openmp_shown(home / "scheduler.log")
    result["trials"] = trial_concurrency(trials, result["task_detail"], inherited=result["scheduler_openmp"])
    if keep_logs:
        shutil.copytree(home / "logs", keep_logs / f"rep{rep}-logs", dirs_exist_ok=True)
        for f in home.glob("*.log"):  # scheduler, dag-processor, api-server
            shutil.copy(f, keep_logs / f"rep{rep}-{f.name}")
    shutil.rmtree(base, ignore_errors=True)
    return result


def _log_path(home: Path, run_id: str, ti: dict[str, Any]) -> Path:
    folder = home / "logs" / f"dag_id={PROBLEM}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
    if ti["map_index"] >= 0:
        folder = folder / f"map_index={ti['map_index']}"
    return folder / f"attempt={ti['try_number'] or 1}.log"


def _section(task_id: str) -> str:
    return next((s for s in lifecycle.SECTIONS if task_id in s.split("|")), task_id)


def summarise_run(home: Path, run: dict[str, Any], tis: list[dict[str, Any]], t_trigger: float, t_seen: float):
    run_end = _ts(run["end_date"])
    tasks = []
    for ti in tis:
        if ti["state"] != "success" or not ti["start_date"]:
            continue
        ph = task_phases(_log_path(home, run["dag_run_id"], ti))
        start, end = _ts(ti["start_date"]), _ts(ti["end_date"])
        queued = _ts(ti.get("queued_when")) or start
        up = ph["first_line"] or start
        first = ph["code_start"] or up
        last = ph["code_end"] or end
        tasks.append(
            {
                "task_id": ti["task_id"],
                "map_index": ti["map_index"],
                "section": _section(ti["task_id"]),
                "queued": queued,
                "start": start,
                "end": end,
                "queue_s": start - queued,
                "process_s": max(0.0, up - start),
                "parse_s": max(0.0, first - up),
                "dag_file_parse_ms": ph["parse_ms"],
                "openmp": ph.get("openmp"),
                "compute_s": max(0.0, last - first),
                "finish_s": max(0.0, end - last),
                "wall_s": end - start,
            }
        )
    tasks.sort(key=lambda t: (t["start"], t["task_id"]))
    # scheduling: the scheduler's delay before queueing a task, after the last task that ended
    # before it was queued (or after the trigger, for the first)
    for t in tasks:
        before = [u["end"] for u in tasks if u["end"] <= t["queued"]]
        t["scheduling_s"] = t["queued"] - max(before, default=t_trigger)
    total = run_end - t_trigger
    busy = _union([(t["start"], t["end"]) for t in tasks])
    sections: dict[str, float] = {}
    for t in tasks:
        sections[t["section"]] = sections.get(t["section"], 0.0) + t["wall_s"]

    def tot(key: str) -> float:
        return sum(t[key] for t in tasks)

    return {
        "run_id": run["dag_run_id"],
        "wall_s": total,
        "trigger_to_first_queued_s": min(t["queued"] for t in tasks) - t_trigger,
        "last_task_end_to_run_end_s": run_end - max(t["end"] for t in tasks),
        "poll_lag_s": t_seen - run_end,
        "no_task_running_s": total - busy,
        "tasks": len(tasks),
        "sections_s": sections,
        "per_task_sum_s": {k: tot(f"{k}_s") for k in PHASES},
        "task_detail": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()} for t in tasks],
    }


def _union(spans: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(spans):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0.0)


def openmp_shown(log_file: Path) -> dict[str, str] | None:
    """The OpenMP wait settings libgomp printed (``OMP_DISPLAY_ENV``) in a process's plain log."""
    shown: dict[str, str] = {}
    for line in log_file.read_text(errors="replace").splitlines() if log_file.exists() else []:
        name, eq, value = line.strip().partition(" = ")
        if eq and name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
            shown[name] = value.strip().strip("'")
    return shown or None


def trial_concurrency(
    trials: list[tuple[dict[str, Any], dict[str, Any]]],
    detail: list[dict[str, Any]],
    inherited: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Per trial: threads, wall time, OpenMP wait (its own log's, or ``inherited``: what libgomp
    showed in the scheduler the trial's process was forked from); the most trials that ran at
    once; threads x that <= cores?; which other tasks ran during a trial."""
    from ml_lifecycle.settings import machine_cores

    by_key = {(t["task_id"], t["map_index"]): t for t in detail}
    rows = []
    for ti, value in trials:
        start, end = _ts(ti["start_date"]), _ts(ti["end_date"])
        rows.append(
            {
                "map_index": ti["map_index"],
                "trial_id": value.get("trial_id"),
                "threads": value.get("threads"),
                "wall_s": end - start,
                "fit_s": (value.get("seconds") or {}).get("fit") if isinstance(value.get("seconds"), dict) else None,
                "openmp": by_key.get((ti["task_id"], ti["map_index"]), {}).get("openmp") or inherited,
                "start": start,
                "end": end,
            }
        )
    events = sorted([(r["start"], 1) for r in rows] + [(r["end"], -1) for r in rows], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, d in events:
        running += d
        peak = max(peak, running)
    for r in rows:  # how many trials overlapped this one at some moment (itself included)
        r["concurrent_max"] = 1 + sum(1 for o in rows if o is not r and o["start"] < r["end"] and r["start"] < o["end"])
    others = sorted(
        {
            t["task_id"]
            for t in detail
            if not t["task_id"].endswith(".train_model")
            and any(t["start"] < r["end"] and r["start"] < t["end"] for r in rows)
        }
    )
    threads = max((r["threads"] or 0 for r in rows), default=0)
    cores = machine_cores()
    return {
        "cores": cores,
        "trials": len(rows),
        "max_concurrent": peak,
        "threads_per_trial": sorted({r["threads"] for r in rows}, key=lambda x: x or 0),
        "threads_x_concurrent": threads * peak,
        "within_cores": threads * peak <= cores,
        "other_tasks_during_trials": others,
        "per_trial": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / statistics.median(values) if values else 0.0,
        "all": values,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_plain(work: Path, rep: int) -> dict[str, Any]:
    artifacts = work / "artifacts-plain"
    shutil.rmtree(artifacts, ignore_errors=True)
    cpu0 = _children_cpu()
    out = lifecycle.run_plain(work)
    out["cpu_s"] = _children_cpu() - cpu0  # the plain process, start to exit
    out["load_after"] = _load()
    return out


def bench_size(
    rows: int,
    reps: int,
    db: str,
    pg_server: str | None,
    trials: int,
    slots: int | None,
    keep: bool,
    tune: dict[str, Any],
):
    work = Path(tempfile.mkdtemp(prefix=f"bench-scheduler-{rows}-"))
    try:
        print(f"[{rows:,} rows] generating data ... (load {_load()})", file=sys.stderr, flush=True)
        prep = lifecycle.prepare(work, rows, trials=trials)
        sched, plain = [], []
        for rep in range(reps):
            print(f"[{rows:,} rows] rep {rep + 1}/{reps}: real scheduler ... (load {_load()})", file=sys.stderr)
            sched.append(run_once(work, rep, db, pg_server, slots, work if keep else None, tune))
            s = sched[-1]
            print(
                f"  scheduler {s['wall_s']:.1f} s, tasks {s['per_task_sum_s']}, load {s['load_after']}",
                file=sys.stderr,
                flush=True,
            )
            print(f"[{rows:,} rows] rep {rep + 1}/{reps}: plain python ... (load {_load()})", file=sys.stderr)
            plain.append(run_plain(work, rep))
            print(f"  plain {plain[-1]['fair_total_s']:.1f} s", file=sys.stderr, flush=True)
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    # CPU: the task processes, executor workers and scheduler (its session) and the api-server
    # (execution API) against the plain process: less noisy than wall time on a shared machine
    cpu_a = [s["cpu_during_run_s"]["scheduler"] + s["cpu_during_run_s"]["api-server"] for s in sched]
    cpu_b = [p["cpu_s"] for p in plain]
    a = _stats([s["wall_s"] for s in sched])
    b = _stats([p["fair_total_s"] for p in plain])
    per_task = {k: _stats([s["per_task_sum_s"][k] for s in sched]) for k in PHASES}
    tasks = sched[0]["tasks"]
    return {
        "rows": rows,
        "trials": trials,
        "trial_slots_env": slots,
        "reps": reps,
        "db": db,
        "tune": tune,
        "prepare": prep,
        "scheduler_wall_s": a,
        "plain_wall_s": b,
        "ratio_median": a["median"] / b["median"],
        "ratios": [x / y for x, y in zip(a["all"], b["all"], strict=True)],
        "cpu_s": {"scheduler_and_api": _stats(cpu_a), "plain": _stats(cpu_b)},
        "cpu_ratio_median": statistics.median(cpu_a) / statistics.median(cpu_b),
        "tasks_per_run": tasks,
        "per_task_sum_s": per_task,
        "per_task_mean_s": {k: v["median"] / tasks for k, v in per_task.items()},
        "no_task_running_s": _stats([s["no_task_running_s"] for s in sched]),
        "trials_concurrency": [s["trials"] for s in sched],
        "scheduler_runs": sched,
        "plain_runs": plain,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        a, b = r["scheduler_wall_s"], r["plain_wall_s"]
        lines.append(
            f"{r['rows']:,} rows, {r['trials']} trial(s), {r['reps']} rep(s), {r['db']}: real scheduler "
            f"{a['median']:.1f} s (min {a['min']:.1f}, max {a['max']:.1f}) vs plain {b['median']:.1f} s "
            f"(min {b['min']:.1f}, max {b['max']:.1f}): ratio {r['ratio_median']:.2f}"
        )
        ca, cb = r["cpu_s"]["scheduler_and_api"]["median"], r["cpu_s"]["plain"]["median"]
        lines.append(
            f"  CPU s (median): scheduler+tasks+api-server {ca:.1f} vs plain {cb:.1f}: {r['cpu_ratio_median']:.2f}"
        )
        loads = [s["load_before"] for s in r["scheduler_runs"]]
        lines.append(f"  load average before each scheduler run: {'; '.join(loads)}")
        lines.append(f"  {r['tasks_per_run']} task instances; summed over them (median of reps), seconds:")
        for k, v in r["per_task_sum_s"].items():
            lines.append(f"    {k:11} {v['median']:7.2f}  ({v['median'] / r['tasks_per_run']:.2f} per task)")
        lines.append(f"  no task running: {r['no_task_running_s']['median']:.2f} s")
        for c in r["trials_concurrency"]:
            lines.append(
                f"  trials: {c['trials']}, at most {c['max_concurrent']} at once x {c['threads_per_trial']} thread(s) "
                f"on {c['cores']} cores: within cores {c['within_cores']}; walls "
                + ", ".join(f"{t['wall_s']:.1f}" for t in c["per_trial"])
            )
        sec_a = r["scheduler_runs"][0]["sections_s"]
        sec_b = r["plain_runs"][0]["sections_s"]
        lines.append(f"  {'section (rep 1)':34}{'scheduler':>10}{'plain':>10}")
        for s in lifecycle.SECTIONS:
            lines.append(f"  {s:34}{sec_a.get(s, 0):>10.2f}{sec_b.get(s, 0):>10.2f}")
    return "\n".join(lines)


def merge_results(out: Path, key: str, payload: Any) -> None:
    """Write ``payload`` under ``key`` of the day's results file, keeping what else is there."""
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = payload
    data.setdefault("machine", lifecycle.machine())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 4_000_000])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--trials", type=int, default=1, help="xgboost trials in the round (1: the ratio's setting)")
    p.add_argument("--trial-slots", type=int, default=None, help="ML_TRIAL_SLOTS for the scheduler (default: its own)")
    p.add_argument(
        "--airflow-config",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="an Airflow setting for the stack, e.g. scheduler.scheduler_idle_sleep_time=0.1 (repeatable)",
    )
    p.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        help="ML_PRELOAD_LIBRARIES=false: the scheduler does not import the task libraries at start",
    )
    p.add_argument("--label", default=None, help="results key (default scheduler, scheduler_<N>_trials)")
    p.add_argument("--keep", action="store_true", help="keep the working folders and the task logs")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results/<date>.json)")
    args = p.parse_args(argv)
    tune = {"config": dict(kv.split("=", 1) for kv in args.airflow_config), "preload": args.preload}
    results = []
    with localstack.postgres_cluster("bench-sched-pg-") if args.db == "postgres" else _nothing() as pg_server:
        for n in sorted(args.rows):
            results.append(bench_size(n, args.reps, args.db, pg_server, args.trials, args.trial_slots, args.keep, tune))
            print(table(results), flush=True)
    out = args.out or ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}.json"
    key = args.label or ("scheduler" if args.trials == 1 else f"scheduler_{args.trials}_trials")
    merge_results(out, key, {"machine": lifecycle.machine(), "results": results})
    print(f"machine: {lifecycle.machine()}\nwritten: {out} (key {key!r})")
    return 0


@contextmanager
def _nothing() -> Generator[None]:
    yield None


if __name__ == "__main__":
    raise SystemExit(main())
