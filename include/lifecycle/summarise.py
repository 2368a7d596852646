"""Print what the last run of a problem did (used by `make run`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from include.lifecycle.store import Store


def summarise(problem: Store, run: str) -> str:
    rd = f"runs/{run}"
    lines = [f"run {run}"]
    collect = problem.read_json_or(f"{rd}/collect_summary.json")
    if collect:
        lines.append(
            f"  data: {collect['rows_in']} rows in = {collect['rows_curated']} curated + "
            f"{collect['rows_quarantined']} quarantined {collect['by_rule']}; "
            f"{collect['dataset_rows']} rows in the labelled data set, {collect.get('positives')} positives"
        )
    verdict = problem.read_json_or(f"{rd}/eda/verdict.json")
    if verdict:
        failed = [c["name"] for c in verdict["checks"] if not c["passed"]]
        lines.append(f"  data quality: {verdict['verdict']}" + (f" (failed: {', '.join(failed)})" if failed else ""))
        lines.append(f"  EDA report: {problem.uri(rd, 'eda/eda_report.html')}")
    summary = problem.read_json_or(f"{rd}/run_summary.json")
    if summary:
        g = summary["goal"]
        op = ">=" if g["higher_is_better"] else "<="
        lines.append(f"  goal: {g['metric']} {op} {g['target']}")
        for r in summary["rounds"]:
            remedy = r["plan"].get("remedy") or "initial"
            lines.append(
                f"  round {r['round']} ({remedy}; features {', '.join(r['plan']['feature_groups'])}): "
                f"best {r['best_trial']}, train {r['train_score']:.4f}, validation {r['validation_score']:.4f}, "
                f"test {r['test_score']:.4f} -> {'meets' if r['meets_goal'] else 'misses'} the goal"
            )
            if r.get("diagnosis"):
                lines.append(f"    diagnosis: {r['diagnosis']['remedy']} - {r['diagnosis']['reason']}")
        lines.append(
            f"  DECISION: {summary['decision']} (model version {summary['model_version']}; champion "
            f"{summary['champion_before']} -> {summary['champion_after']})"
        )
        lines.append(f"  reason: {summary['reason']}")
        lines.append(f"  report: {summary['report_uri']}")
        lines.append(f"  summary: {problem.uri(rd, 'run_summary.json')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--artifact-root", required=True)
    p.add_argument("--problem", required=True)
    p.add_argument("--run-date", default=None, help="pick the latest run for this logical date (YYYY-MM-DD)")
    args = p.parse_args(argv)
    root = args.artifact_root if "://" in args.artifact_root else Path(args.artifact_root).resolve().as_uri()
    problem = Store.from_uri(f"{root.rstrip('/')}/{args.problem}")
    runs = problem.ls("runs")
    if args.run_date:
        # run ids of manual runs carry the wall-clock time; the problem card records the data date
        runs = [
            r
            for r in runs
            if str((problem.read_json_or(f"runs/{r}/problem_card.json") or {}).get("as_of", "")).startswith(
                args.run_date
            )
        ]
    if not runs:
        print(f"no runs of {args.problem} under {problem.uri()}")
        return 1
    best = max(runs, key=lambda r: problem.fs.modified(problem.path("runs", r)).timestamp())
    print(summarise(problem, best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
