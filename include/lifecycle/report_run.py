"""The run's summary (``run_summary.json``) and its one HTML report (EDA + rounds + decision)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from include.lifecycle import report
from include.lifecycle.spec import Spec


def run_summary(
    *,
    spec: Spec,
    run_id: str,
    as_of: str,
    outcome: dict[str, Any],
    rounds: list[dict[str, Any]],
    problem_card: dict[str, Any] | None,
    collect: dict[str, Any] | None,
    eda: dict[str, Any] | None,
    champion_after: dict[str, Any] | None,
    report_uri: str,
) -> dict[str, Any]:
    """Machine-readable account of one run: decision, reason, every round, metrics vs goal.

    A failed run has ``outcome = {"decision": "failed", "failed_task": ..., "error": ...}`` and may
    lack the problem card, the collect summary or any round: whatever exists is reported."""
    goal = spec.goal
    problem_card, collect = problem_card or {}, collect or {}
    first_eval = next((r["evaluation"] for r in rounds if r["evaluation"]), None)
    champion_before = first_eval["champion_version"] if first_eval else None
    failure = {k: outcome[k] for k in ("failed_task", "error", "failures") if k in outcome}
    return {
        "problem": spec.name,
        "run_id": run_id,
        "as_of": as_of,
        "decision": outcome["decision"],
        "reason": outcome["reason"],
        **failure,
        "model_version": outcome.get("version"),
        "goal": {
            "statement": goal.statement,
            "metric": goal.metric,
            "target": goal.target,
            "higher_is_better": goal.higher_is_better,
            "max_alert_rate": goal.max_alert_rate,
        },
        "rounds": [
            {
                "round": r["round"],
                "plan": {
                    k: r["plan"].get(k)
                    for k in (
                        "feature_groups",
                        "lookback_days",
                        "resample",
                        "families",
                        "trials_per_family",
                        "wide_search",
                        "remedy",
                        "reason",
                        "changes",
                    )
                },
                "best_trial": (r["evaluation"] or {}).get("trial_id"),
                "family": (r["evaluation"] or {}).get("family"),
                "train_score": (r["evaluation"] or {}).get("train_score"),
                "validation_score": (r["evaluation"] or {}).get("validation_score"),
                "test_score": (r["evaluation"] or {}).get("test_score"),
                "threshold": (r["evaluation"] or {}).get("threshold"),
                "test_metrics": (r["evaluation"] or {}).get("test_metrics"),
                "baselines": (r["evaluation"] or {}).get("baselines"),
                "verdict": ((r["evaluation"] or {}).get("decision") or {}).get("reason"),
                "meets_goal": ((r["evaluation"] or {}).get("decision") or {}).get("meets_goal"),
                "diagnosis": r.get("diagnosis"),
            }
            for r in rounds
        ],
        "champion_before": champion_before,
        "champion_after": champion_after["version"] if champion_after else None,
        "data": {
            k: collect.get(k)
            for k in ("rows_in", "rows_curated", "rows_quarantined", "by_rule", "dataset_rows", "window", "positives")
        },
        "splits": {str(r["round"]): r["splits"] for r in rounds if r.get("splits")},
        "data_quality": (eda or {}).get("verdict"),
        "problem_card": {
            k: problem_card.get(k) for k in ("business_goal", "framing", "success_criterion", "baselines")
        },
        "spec_digest": spec.digest(),
        "report_uri": report_uri,
    }


def _round_section(r: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    parts = [
        report.kv_table(
            {
                "plan": "; ".join(r["plan"].get("changes") or []) or r["plan"].get("reason"),
                "feature groups": ", ".join(r["plan"]["feature_groups"]),
                "lookback days": r["plan"]["lookback_days"],
                "resampling": r["plan"]["resample"],
                "best trial": f"{r['best_trial']} ({r['family']})",
                "train / validation / test score": f"{_n(r['train_score'])} / {_n(r['validation_score'])} / "
                f"{_n(r['test_score'])}",
                "decision threshold": r.get("threshold"),
                "verdict": r.get("verdict"),
                "diagnosis": (r.get("diagnosis") or {}).get("reason"),
            }
        )
    ]
    if r.get("test_metrics"):
        parts.append("<h4>Test metrics</h4>" + report.kv_table(r["test_metrics"]))
    if r.get("baselines"):
        parts.append("<h4>Baselines on the same test rows</h4>" + report.kv_table(r["baselines"]))
    parts += [report.png_to_img(png, name) for name, png in sorted(pngs.items())]
    return "\n".join(parts)


def _n(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def render_run_report(summary: Mapping[str, Any], eda_section: str, plots: Mapping[int, Mapping[str, bytes]]) -> str:
    goal = summary["goal"]
    op = ">=" if goal["higher_is_better"] else "<="
    decision = report.kv_table(
        {
            "decision": summary["decision"],
            "reason": summary["reason"],
            **(
                {"failed task": summary["failed_task"], "error": summary["error"]} if summary.get("failed_task") else {}
            ),
            "model version": summary["model_version"],
            "champion before / after": f"{summary['champion_before']} / {summary['champion_after']}",
            "goal": f"{goal['metric']} {op} {goal['target']}",
            "business goal": goal["statement"],
        }
    )
    history = report.table(
        [
            {
                "round": r["round"],
                "remedy": r["plan"].get("remedy") or "-",
                "feature groups": ", ".join(r["plan"]["feature_groups"]),
                "best": r["best_trial"],
                "train": r["train_score"],
                "validation": r["validation_score"],
                "test": r["test_score"],
                "meets goal": r["meets_goal"],
            }
            for r in summary["rounds"]
        ]
    )
    sections = [("Decision", decision), ("Round history", history)]
    sections += [(f"Round {r['round']}", _round_section(r, plots.get(r["round"], {}))) for r in summary["rounds"]]
    if eda_section:
        sections.append(("Data evaluation", eda_section))
    return report.page(
        f"{summary['problem']}: run {summary['run_id']}",
        sections,
        subtitle=f"as of {summary['as_of']} - {summary['decision']}",
    )
