"""Print what one run of a problem did (used by `make run`), or why it failed."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from include.lifecycle.layout import RUNS, RunLayout
from include.lifecycle.store import Store, safe_run_id

# the last line of a traceback: `ValueError: ...`, `airflow.sdk.exceptions.AirflowFailException: ...`
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b.*")
# a log record of level error: `2026-11-26T14:45:11.266793Z [error    ] message [logger] loc=...`
_ERROR_RECORD = re.compile(r"^\S+ \[error\s*\] +(.*?)(?: +\[[\w.]+\])?(?: +loc=\S+.*)?$")


def _score(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, int | float) else "-"


def task_error_lines(log_text: str, task_id: str, map_index: int = -1, limit: int = 6) -> list[str]:
    """The error lines of a task's last try in the output of ``airflow dags test``.

    ``dags test`` writes every task's log into one stream between ``[DAG TEST] starting
    task_id=<id> map_index=<i>`` and ``[DAG TEST] end task task_id=<id> map_index=<i>``;
    the lines kept are exception lines (the last line of each traceback) and error records.
    """
    start = f"[DAG TEST] starting task_id={task_id} map_index={map_index}"
    end = f"[DAG TEST] end task task_id={task_id} map_index={map_index}"
    lines = log_text.splitlines()
    begins = [i for i, ln in enumerate(lines) if start in ln]
    if not begins:
        return []
    block: list[str] = []
    for ln in lines[begins[-1] + 1 :]:
        if end in ln:
            break
        block.append(ln)
    out: list[str] = []
    for ln in block:
        m = _ERROR_RECORD.match(ln)
        text = m.group(1).strip() if m else ln.rstrip() if _EXCEPTION_LINE.match(ln) else ""
        if text and text not in out and text != "Task failed with exception":
            out.append(text)
    return out[-limit:]


def last_error_lines(log_text: str, limit: int = 5) -> list[str]:
    """The last distinct exception lines of a log (why ``airflow dags test`` ended before a run)."""
    out: list[str] = []
    for ln in reversed(log_text.splitlines()):
        ln = ln.rstrip()
        if _EXCEPTION_LINE.match(ln) and ln not in out:
            out.append(ln)
            if len(out) == limit:
                break
    return out[::-1]


def summarise(
    problem: Store,
    run: str,
    *,
    state: str | None = None,
    failed: list[tuple[str, int]] | None = None,
    log_text: str | None = None,
) -> str:
    """The run's data, rounds and decision from its artifacts (``runs/<run>/``).

    ``state``/``failed``/``log_text`` (from Airflow, when known) add why a run failed: the
    failed task and its error from ``run_summary.json`` when ``publish_report`` wrote one with
    decision ``failed``, else each failed task with its error lines from the log.
    """
    layout = RunLayout(run)
    lines = [f"run {run}"]
    collect = problem.read_json_or(layout.collect_summary)
    if collect:
        positives = collect.get("positives")  # none for a regression
        lines.append(
            f"  data: {collect['rows_in']} rows in = {collect['rows_curated']} curated + "
            f"{collect['rows_quarantined']} quarantined {collect['by_rule']}; "
            f"{collect['dataset_rows']} rows in the labelled data set"
            + (f", {positives} positives" if positives is not None else "")
        )
    verdict = problem.read_json_or(layout.eda_verdict)
    if verdict:
        failed_checks = [c["name"] for c in verdict["checks"] if not c["passed"]]
        lines.append(
            f"  data quality: {verdict['verdict']}"
            + (f" (failed: {', '.join(failed_checks)})" if failed_checks else "")
        )
        lines.append(f"  EDA report: {problem.uri(layout.eda_report)}")
    summary = problem.read_json_or(layout.run_summary)
    reported_failure = False
    if summary:
        g = summary.get("goal") or {}
        if g:
            op = ">=" if g.get("higher_is_better", True) else "<="
            lines.append(f"  goal: {g['metric']} {op} {g['target']}")
        for r in summary.get("rounds") or []:
            plan = r.get("plan") or {}
            remedy = plan.get("remedy") or "initial"
            head = f"  round {r['round']} ({remedy}; features {', '.join(plan.get('feature_groups') or [])}): "
            if r.get("meets_goal") is None and r.get("test_score") is None:
                lines.append(head + "did not finish")  # the round's evaluation never happened
            else:
                lines.append(
                    head + f"best {r.get('best_trial')}, train {_score(r.get('train_score'))}, "
                    f"validation {_score(r.get('validation_score'))}, test {_score(r.get('test_score'))} -> "
                    f"{'meets' if r.get('meets_goal') else 'misses'} the goal"
                )
            if r.get("diagnosis"):
                lines.append(f"    diagnosis: {r['diagnosis']['remedy']} - {r['diagnosis']['reason']}")
        if summary.get("decision") == "failed":
            reported_failure = True
            task = summary.get("failed_task")
            lines.append(f"  DECISION: failed ({f'task {task} failed' if task else 'a task failed'})")
            lines.append(f"  error: {summary.get('error') or summary.get('reason')}")
            others = {
                f["task_id"]: f.get("error")
                for f in summary.get("failures") or []
                if isinstance(f, dict) and f.get("task_id") and f.get("task_id") != task
            }
            for other, error in others.items():
                lines.append(f"  also failed: {other}: {error}")
        else:
            lines.append(
                f"  DECISION: {summary.get('decision')} (model version {summary.get('model_version')}; champion "
                f"{summary.get('champion_before')} -> {summary.get('champion_after')})"
            )
            lines.append(f"  reason: {summary.get('reason')}")
        if summary.get("report_uri"):
            lines.append(f"  report: {summary['report_uri']}")
        lines.append(f"  summary: {problem.uri(layout.run_summary)}")
    if state is not None and state != "success":
        # what run_summary.json does not say: the tasks that failed and their errors from the log
        said = set()
        if reported_failure:  # publish_report fails such a run on purpose once it has written the summary
            said = {"publish_report", summary.get("failed_task")}
            said |= {f.get("task_id") for f in summary.get("failures") or [] if isinstance(f, dict)}
        tasks = [t for t in failed or [] if t[0] not in said]
        for task_id, map_index in tasks:
            name = task_id if map_index < 0 else f"{task_id}[{map_index}]"
            lines.append(f"  FAILED: task {name}")
            for err in task_error_lines(log_text or "", task_id, map_index) or ["(no error lines in the log)"]:
                lines.append(f"    {err[:400]}")
        if not summary:
            lines.append("  (no run_summary.json: publish_report did not write one)")
        lines.append(f"  run state: {state}")
    return "\n".join(lines)


def problem_store(artifact_root: str, problem: str) -> Store:
    """The artifact store of one problem under ``artifact_root`` (a path or a URI)."""
    root = artifact_root if "://" in artifact_root else Path(artifact_root).resolve().as_uri()
    return Store.from_uri(f"{root.rstrip('/')}/{problem}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--artifact-root", required=True)
    p.add_argument("--problem", required=True)
    p.add_argument("--run-id", default=None, help="this run (Airflow run id or its folder name under runs/)")
    p.add_argument("--run-date", default=None, help="else the latest run for this logical date (YYYY-MM-DD)")
    p.add_argument("--log", type=Path, default=None, help="output of airflow dags test: error lines of failed tasks")
    args = p.parse_args(argv)
    problem = problem_store(args.artifact_root, args.problem)
    log_text = args.log.read_text(errors="replace") if args.log and args.log.is_file() else None
    if args.run_id:
        run = safe_run_id(args.run_id)
        if not problem.exists(RunLayout(run).dir):
            print(f"run {args.run_id} of {args.problem}: no artifacts under {problem.uri(RunLayout(run).dir)}")
            return 1
        print(summarise(problem, run, log_text=log_text))
        return 0
    runs = problem.ls(RUNS)
    if args.run_date:
        # run ids of manual runs carry the wall-clock time; the problem card records the data date
        runs = [
            r
            for r in runs
            if str((problem.read_json_or(RunLayout(r).problem_card) or {}).get("as_of", "")).startswith(args.run_date)
        ]
    if not runs:
        print(f"no runs of {args.problem} under {problem.uri()}")
        return 1
    best = max(runs, key=lambda r: problem.fs.modified(problem.path(RunLayout(r).dir)).timestamp())
    print(summarise(problem, best, log_text=log_text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
