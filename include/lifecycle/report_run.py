"""The run's summary (``run_summary.json``) and its one HTML report (EDA + rounds + decision)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from include.lifecycle import report
from include.lifecycle.spec import Spec

# what a round's evaluation.json explains, copied as it is into run_summary.json's rounds:
# ``intervals`` {metric: {value, low, high, level, method, resamples}}, ``goal_check`` (the goal
# as the business runs it), ``comparison`` (paired, with the champion, on rows it never saw),
# ``leaderboard`` (every trial), ``importance`` (permutation importance in the declared columns),
# ``calibration`` (calibration_check), the champion's score and the round the model came from
_EXPLAINED = (
    "intervals",
    "goal_check",
    "comparison",
    "champion_score",
    "leaderboard",
    "importance",
    "calibration",
    "origin_round",
)


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
                # the evaluation that explains (absent in runs before they existed: None)
                **{k: (r["evaluation"] or {}).get(k) for k in _EXPLAINED},
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
        "trigger": problem_card.get("trigger"),
        "spec_digest": spec.digest(),
        "report_uri": report_uri,
    }


# baselines named for what they are (older runs and evaluations used the short names)
_BASELINE_NAMES = {
    "flag nothing": "flag nothing (no model)",
    "rule of thumb (largest amounts)": "rule of thumb: flag the largest amounts",
    "rule of thumb": "rule of thumb: flag the largest amounts",
}
_SHOWN_TOP = 25


def _n(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _ci(ci: Mapping[str, Any] | None) -> str:
    """``[low, high]`` of an interval record, or ``""``."""
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return ""
    return f"[{_n(ci['low'])}, {_n(ci['high'])}]"


def _with_ci(value: Any, ci: Mapping[str, Any] | None) -> str:
    """A value with its interval: ``0.8123 [0.7512, 0.8650]``."""
    text = _n(value) if isinstance(value, int | float) or value is None else str(value)
    return f"{text} {_ci(ci)}".rstrip()


def _level(intervals: Mapping[str, Any] | None) -> str:
    levels = {c.get("level") for c in (intervals or {}).values() if isinstance(c, Mapping)}
    methods = {c.get("method") for c in (intervals or {}).values() if isinstance(c, Mapping)}
    if len(levels) == 1 and None not in levels:
        return f"{next(iter(levels)):.0%} interval" + (f" ({', '.join(sorted(map(str, methods)))})" if methods else "")
    return "interval"


def _goal_metric_ci(r: Mapping[str, Any], metric: str) -> Mapping[str, Any] | None:
    return ((r.get("intervals") or {}).get(metric)) or (r.get("goal_check") or {}).get("interval")


def _goal_check_table(check: Mapping[str, Any], ci: Mapping[str, Any] | None) -> str:
    rows: dict[str, Any] = {
        "metric": check.get("metric"),
        "value on the test rows": _with_ci(check.get("value"), ci),
        "target": check.get("target"),
    }
    if check.get("max_alert_rate") is not None:
        rate = check.get("alert_rate")
        rate_ci = check.get("alert_rate_interval") or {}
        rows["alert rate at the deployed threshold"] = (
            "n/a"
            if rate is None
            else f"{rate:.3%}"
            + (f" [{rate_ci['low']:.3%}, {rate_ci['high']:.3%}]" if rate_ci.get("low") is not None else "")
        )
        rows["max alert rate (capacity)"] = f"{check['max_alert_rate']:.3%}"
        within = check.get("within_capacity")
        rows["within capacity"] = report.badge(within, None if within is None else ("yes" if within else "no"))
    rows["goal met"] = report.badge(check.get("met"), "met" if check.get("met") else "not met")
    return report.kv_table(rows)


def _comparison_table(c: Mapping[str, Any]) -> str:
    if c.get("champion_version") is None:
        return f'<p class="note">{report.escape(c.get("note") or "no champion yet")}</p>'
    diff = c.get("difference")
    rows: dict[str, Any] = {
        "champion version": c["champion_version"],
        "fair comparison": report.badge(c.get("fair"), "yes" if c.get("fair") else "no"),
        "rows compared (unseen by the champion)": c.get("rows"),
        "which rows": c.get("basis"),
        "candidate": c.get("candidate"),
        "champion": c.get("champion"),
        "difference (candidate - champion, positive = better)": _with_ci(diff.get("value"), diff) if diff else None,
        "champion trained on newer data": c.get("newer_data"),
        "note": c.get("note") or None,
    }
    return report.kv_table({k: v for k, v in rows.items() if v is not None})


def _metrics_table(metrics: Mapping[str, Any], intervals: Mapping[str, Any] | None) -> str:
    """Every test metric with its interval beside it (counts and the threshold have none)."""
    intervals = intervals or {}
    rows = [
        {
            "metric": k,
            "value": v,
            _level(intervals): _ci(intervals.get(k)) or ("" if isinstance(v, int) else "-"),
        }
        for k, v in metrics.items()
    ]
    return report.table(rows)


def _baselines_table(baselines: Mapping[str, Any]) -> str:
    rows = []
    for name, v in baselines.items():
        value, ci = (v.get("value"), v) if isinstance(v, Mapping) else (v, None)
        rows.append({"baseline": _BASELINE_NAMES.get(name, name), "goal metric": _with_ci(value, ci)})
    return report.table(rows)


def _importance_section(importance: list[dict[str, Any]], metric: str | None) -> tuple[str, bool]:
    """The permutation importance (table and chart) as HTML, and whether it was drawn here."""
    from include.lifecycle.evaluate_model import importance_plot

    if not importance or "mean" not in importance[0]:
        return "", False
    shown = importance[:_SHOWN_TOP]
    rows = [
        {
            "column": r["feature"],
            "drop of the goal metric": r["mean"],
            "sd over repeats": r.get("std"),
            "model columns": r.get("columns"),
        }
        for r in shown
    ]
    more = len(importance) - len(shown)
    text = (
        f'<h4>Permutation importance on the test rows</h4><p class="note">How much {report.escape(metric or "the goal metric")}'
        " drops when one declared column (with every feature derived from it) is shuffled across the test rows; "
        "0 or less: the model gains nothing from it."
        + (f" {more} more columns not shown." if more > 0 else "")
        + "</p>"
    )
    png = importance_plot(importance, "Permutation importance on the test rows", top=_SHOWN_TOP)
    return text + report.table(rows) + report.png_to_img(png, "permutation importance"), True


def _calibration_section(cal: Any) -> tuple[str, bool]:
    """Calibration (before / after, Brier, mean predicted vs observed) as HTML, and whether it was drawn here."""
    from include.lifecycle.evaluate_model import calibration_plot

    if not isinstance(cal, Mapping) or "brier_before" not in cal:
        return "", False
    after = cal.get("brier_after") is not None or cal.get("curve_after") is not None
    rows: dict[str, Any] = {
        "calibration": cal.get("method") or "none (the model's scores as they are)",
        "Brier score" + (" before / after" if after else ""): f"{_n(cal.get('brier_before'))}"
        + (f" / {_n(cal.get('brier_after'))}" if after else ""),
        "mean predicted / observed rate": f"{_n(cal.get('mean_predicted'))} / {_n(cal.get('observed_rate'))}",
    }
    for when in ("before", "after"):
        ok = cal.get(f"calibrated_{when}")
        if when == "after" and not after:
            continue
        rows[f"calibrated {when}" if after else "calibrated"] = report.badge(
            ok, "n/a" if ok is None else ("yes" if ok else "no")
        )
    note = cal.get("note")
    text = "<h4>Calibration</h4>" + report.kv_table(rows)
    if note:
        text += f'<p class="note">{report.escape(note)}</p>'
    return text + report.png_to_img(calibration_plot(dict(cal)), "calibration"), True


def _round_section(r: Mapping[str, Any], pngs: Mapping[str, bytes], metric: str | None = None) -> str:
    ci = _goal_metric_ci(r, metric) if metric else None
    origin = r.get("origin_round")
    parts = [
        report.kv_table(
            {
                "plan": "; ".join(r["plan"].get("changes") or []) or r["plan"].get("reason"),
                "feature groups": ", ".join(r["plan"]["feature_groups"]),
                "lookback days": r["plan"]["lookback_days"],
                "resampling": r["plan"]["resample"],
                "best trial": f"{r['best_trial']} ({r['family']})"
                + (f", trained in round {origin}" if origin not in (None, r["round"]) else ""),
                "train / validation / test score": f"{_n(r['train_score'])} / {_n(r['validation_score'])} / "
                f"{_with_ci(r['test_score'], ci)}",
                "decision threshold": r.get("threshold"),
                "verdict": r.get("verdict"),
                "diagnosis": (r.get("diagnosis") or {}).get("reason"),
            }
        )
    ]
    if r.get("goal_check"):
        parts.append("<h4>Goal check (as the business runs it)</h4>" + _goal_check_table(r["goal_check"], ci))
    if r.get("comparison"):
        parts.append("<h4>Against the champion (paired, same rows)</h4>" + _comparison_table(r["comparison"]))
    if r.get("test_metrics"):
        parts.append("<h4>Test metrics</h4>" + _metrics_table(r["test_metrics"], r.get("intervals")))
    if r.get("baselines"):
        parts.append("<h4>Baselines on the same test rows</h4>" + _baselines_table(r["baselines"]))
    importance, drew_importance = _importance_section(r.get("importance") or [], metric)
    calibration, drew_calibration = _calibration_section(r.get("calibration"))
    parts += [importance, calibration]
    drawn = {"feature_importance"} if drew_importance else set()
    drawn |= {"calibration"} if drew_calibration else set()
    parts += [report.png_to_img(png, name) for name, png in sorted(pngs.items()) if name not in drawn]
    return report.join(parts)


def _leaderboard(rounds: list[Mapping[str, Any]], higher_is_better: bool) -> str:
    """Every trial of every round, best validation score first within a round; the selected one marked."""
    rows = []
    for r in rounds:
        trials = list(r.get("leaderboard") or [])
        sign = -1.0 if higher_is_better else 1.0
        trials.sort(key=lambda t: (t.get("validation_score") is None, sign * (t.get("validation_score") or 0.0)))
        for t in trials:
            params = t.get("params") or {}
            rows.append(
                {
                    "round": t.get("round", r["round"]),
                    "trial": t.get("trial_id"),
                    "family": t.get("family"),
                    "params": ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults",
                    "train score": t.get("train_score"),
                    "validation score": t.get("validation_score"),
                    "fit seconds": t.get("fit_seconds"),
                    "selected": report.badge(True, "selected") if t.get("selected") else "",
                }
            )
    if not rows:
        return '<p class="empty">(no trial leaderboard recorded)</p>'
    return '<div class="scroll">' + report.table(rows) + "</div>"


def _rounds_chart(summary: Mapping[str, Any]) -> str:
    from include.lifecycle.evaluate_model import rounds_plot

    goal = summary["goal"]
    points = []
    for r in summary["rounds"]:
        ci = _goal_metric_ci(r, goal["metric"]) or {}
        champion = (r.get("comparison") or {}).get("champion")
        points.append(
            {
                "round": r["round"],
                "value": r.get("test_score"),
                "low": ci.get("low"),
                "high": ci.get("high"),
                "validation": r.get("validation_score"),
                "champion": champion if champion is not None else r.get("champion_score"),
            }
        )
    if not any(p["value"] is not None for p in points):
        return '<p class="empty">(no round was evaluated)</p>'
    png = rounds_plot(points, metric=goal["metric"], target=goal["target"], higher_is_better=goal["higher_is_better"])
    return report.png_to_img(png, "goal metric per round")


def _last_goal_check(rounds: list[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """The goal check of the last evaluated round, in one line, for the decision table."""
    checked = [r for r in rounds if r.get("goal_check")]
    if not checked:
        return {}
    r = checked[-1]
    check = r["goal_check"]
    text = f"{metric} {_with_ci(check.get('value'), _goal_metric_ci(r, metric))}"
    if check.get("alert_rate") is not None:
        text += f", alert rate {check['alert_rate']:.3%}"
        if check.get("within_capacity") is False:
            text += " (above the capacity)"
    text += " - goal met" if check.get("met") else " - goal not met"
    return {f"test rows, round {r['round']}": text}


def _trigger_text(trigger: Mapping[str, Any]) -> str:
    """What started the run, in words: the clock, a person, a backfill, or the monitor's evidence."""
    asked = trigger.get("retrain_requested")
    if asked:
        reasons = "; ".join(asked.get("reasons") or []) or "(no reason recorded)"
        return f"the monitor's retraining request (run {asked.get('monitor_run_id')}): {reasons}"
    return str(trigger.get("run_type") or "unknown")


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
            **({"triggered by": _trigger_text(summary["trigger"])} if summary.get("trigger") else {}),
            "goal": f"{goal['metric']} {op} {goal['target']}"
            + (f" within an alert rate of {goal['max_alert_rate']:.3%}" if goal.get("max_alert_rate") else ""),
            **_last_goal_check(summary["rounds"], goal["metric"]),
            "business goal": goal["statement"],
        }
    )
    ci_column = _level(
        {f"{r['round']}.{k}": v for r in summary["rounds"] for k, v in (r.get("intervals") or {}).items()}
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
                ci_column: _ci(_goal_metric_ci(r, goal["metric"])),
                "alert rate": (r.get("goal_check") or {}).get("alert_rate"),
                "champion": (r.get("comparison") or {}).get("champion", r.get("champion_score")),
                "meets goal": r["meets_goal"],
            }
            for r in summary["rounds"]
        ]
    )
    sections = [
        ("Decision", decision),
        ("Round history", history),
        ("Goal metric per round", _rounds_chart(summary)),
        ("Trial leaderboard", _leaderboard(summary["rounds"], goal["higher_is_better"])),
    ]
    sections += [
        (f"Round {r['round']}", _round_section(r, plots.get(r["round"], {}), goal["metric"])) for r in summary["rounds"]
    ]
    if eda_section:
        sections.append(("Data evaluation", eda_section))
    return report.page(
        f"{summary['problem']}: run {summary['run_id']}",
        sections,
        subtitle=f"as of {summary['as_of']} - {summary['decision']}",
    )
