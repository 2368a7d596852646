"""Tests of the tiny HTML toolkit and of the run report / run_summary.json built with it."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.figure import Figure

from include.lifecycle import report
from include.lifecycle.evaluate_model import calibration_check
from include.lifecycle.report_run import render_run_report, run_summary
from include.lifecycle.spec import load_spec, spec_path


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts[tag] = self.starts.get(tag, 0) + 1
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img":
            self.imgs.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        self.ends[tag] = self.ends.get(tag, 0) + 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    return p


def _png() -> bytes:
    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1])
    return report.fig_to_png(fig)


def test_fig_to_png_and_img() -> None:
    png = _png()
    assert png.startswith(b"\x89PNG")
    img = report.png_to_img(png, 'a "quoted" <alt>')
    p = _parse(img)
    assert p.imgs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(p.imgs[0].split(",", 1)[1]) == png
    assert "&quot;quoted&quot; &lt;alt&gt;" in img


def test_table_escapes_and_formats() -> None:
    html = report.table(
        [{"name": "<script>", "value": 0.123456789, "n": 12345, "missing": None}, {"name": "b", "extra": True}],
        ["name", "value", "n", "missing"],
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "0.1235" in html and "12,345" in html
    p = _parse(html)
    assert p.starts["tr"] == 3 and p.starts["th"] == 4 and p.starts["td"] == 8
    assert p.starts == p.ends
    assert report.table([]) == '<p class="empty">(no rows)</p>'
    # columns default to the union of keys, raw markup is kept
    html = report.table([{"a": report.raw("<b>x</b>")}, {"b": 1}])
    assert "<b>x</b>" in html and "<th>b</th>" in html


def test_kv_table_nested() -> None:
    html = report.kv_table({"rows": 10, "by rule": {"amount_range": 3, "<bad>": 1}, "float": float("nan")})
    p = _parse(html)
    assert p.starts["table"] == 2
    assert "&lt;bad&gt;" in html


def test_page_is_standalone_document() -> None:
    png = _png()
    html = report.page(
        "Report <1>",
        [("Summary", report.kv_table({"a": 1})), ("Plots", report.png_to_img(png, "p")), ("Summary", "<p>again</p>")],
        subtitle="sub & title",
    )
    assert html.startswith("<!DOCTYPE html>")
    p = _parse(html)
    for tag in ("html", "head", "body", "title", "style", "nav", "section"):
        assert p.starts.get(tag, 0) >= 1
        assert p.starts[tag] == p.ends.get(tag, 0), tag
    assert p.starts["section"] == 3
    assert "Report &lt;1&gt;" in html and "sub &amp; title" in html
    assert p.ids.count("summary") == 1 and "summary-2" in p.ids and "plots" in p.ids
    for anchor in ("#summary", "#summary-2", "#plots"):
        assert anchor in p.hrefs
    assert len(p.imgs) == 1 and p.imgs[0].startswith("data:image/png;base64,")


# --------------------------------------------------------------------------------------
# the run report and run_summary.json (include/lifecycle/report_run.py)
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fraud_spec():
    return load_spec(spec_path("card_fraud"))


def _plan(k: int, remedy: str | None = None) -> dict:
    return {
        "round": k,
        "feature_groups": ["transaction"] + (["card_velocity"] if k > 1 else []),
        "lookback_days": 35,
        "resample": "none",
        "families": ["logistic", "xgboost"],
        "trials_per_family": 2,
        "wide_search": False,
        "remedy": remedy,
        "reason": "first round" if k == 1 else "both scores low: add features",
    }


def _ci(value: float, low: float, high: float) -> dict:
    return {"value": value, "low": low, "high": high, "level": 0.95, "method": "bootstrap", "resamples": 1000}


def _evaluation(k: int, *, value: float, met: bool) -> dict:
    rng = np.random.default_rng(k)
    y = (rng.uniform(size=2000) < 0.05).astype(int)
    scores = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.1, 2000), 0, 1)  # balanced weights: far too high
    return {
        "round": k,
        "origin_round": 1 if k == 2 else k,
        "trial_id": f"r{k}-xgboost-1",
        "family": "xgboost",
        "params": {"max_depth": 5},
        "metric": "amount_recall_at_alert_rate",
        "train_score": value + 0.05,
        "validation_score": value + 0.01,
        "test_score": value,
        "threshold": 0.81,
        "test_metrics": {"roc_auc": 0.93, "auprc": 0.41, "alert_rate": 0.0046, "tp": 40, "n": 2000},
        "intervals": {
            "amount_recall_at_alert_rate": _ci(value, value - 0.0611, value + 0.0522),
            "roc_auc": _ci(0.93, 0.9012, 0.9533),
            "auprc": _ci(0.41, 0.3301, 0.4907),
            "alert_rate": _ci(0.0046, 0.0031, 0.0062),
        },
        "goal_check": {
            "metric": "amount_recall_at_alert_rate",
            "value": value,
            "interval": _ci(value, value - 0.0611, value + 0.0522),
            "target": 0.75,
            "alert_rate": 0.0046,
            "alert_rate_interval": _ci(0.0046, 0.0031, 0.0062),
            "max_alert_rate": 0.005,
            "within_capacity": True,
            "met": met,
        },
        "comparison": {
            "champion_version": 3,
            "fair": True,
            "rows": 1800,
            "basis": "rows from 2026-10-27 on, after the champion's data window",
            "newer_data": False,
            "candidate": value,
            "champion": 0.7123,
            "difference": {"value": value - 0.7123, "low": value - 0.79, "high": value - 0.64},
            "note": "",
        },
        "champion_version": 3,
        "champion_score": 0.7123,
        "leaderboard": [
            {
                "round": k,
                "trial_id": f"r{k}-logistic-0",
                "family": "logistic",
                "params": {"C": 0.1},
                "train_score": 0.55,
                "validation_score": 0.52,
                "fit_seconds": 1.25,
                "selected": False,
            },
            {
                "round": k,
                "trial_id": f"r{k}-xgboost-1",
                "family": "xgboost",
                "params": {"max_depth": 5, "learning_rate": 0.1},
                "train_score": value + 0.05,
                "validation_score": value + 0.01,
                "fit_seconds": 7.5,
                "selected": True,
            },
        ],
        "importance": [
            {"feature": "card_number", "mean": 0.2113, "std": 0.0123, "columns": 7},
            {"feature": "amount", "mean": 0.1502, "std": 0.0101, "columns": 4},
            {"feature": "country", "mean": -0.0021, "std": 0.003, "columns": 21},
        ],
        "calibration": calibration_check(y, scores),
        "baselines": {"flag nothing": 0.0, "rule of thumb (largest amounts)": 0.2391},
        "decision": {"meets_goal": met, "reason": f"round {k} verdict", "deploy": met},
        "plots": ["pr_curve", "feature_importance", "calibration"],
    }


def _rounds() -> list[dict]:
    return [
        {
            "round": 1,
            "plan": _plan(1),
            "evaluation": _evaluation(1, value=0.61, met=False),
            "diagnosis": {"remedy": "augment_features", "reason": "both scores low"},
            "splits": {"train": 100, "validation": 20, "test": 20},
        },
        {"round": 2, "plan": _plan(2, "augment_features"), "evaluation": _evaluation(2, value=0.83, met=True)},
    ]


def _summary(spec, rounds, decision="deployed") -> dict:
    return run_summary(
        spec=spec,
        run_id="manual__2026-11-01",
        as_of="2026-11-01T00:00:00+00:00",
        outcome={"decision": decision, "reason": "goal met, no worse than the champion", "version": 4},
        rounds=rounds,
        problem_card=None,
        collect=None,
        eda=None,
        champion_after={"version": 4},
        report_uri="file:///tmp/report.html",
    )


def test_run_summary_holds_intervals_goal_check_comparison_and_leaderboard_per_round(fraud_spec):
    rounds = _rounds()
    s = _summary(fraud_spec, rounds)
    json.dumps(s)  # JSON-ready
    assert (s["decision"], s["model_version"], s["champion_before"], s["champion_after"]) == ("deployed", 4, 3, 4)
    for r, source in zip(s["rounds"], rounds, strict=True):
        ev = source["evaluation"]
        for key in ("intervals", "goal_check", "comparison", "leaderboard", "importance", "calibration"):
            assert r[key] == ev[key], key
        assert r["champion_score"] == 0.7123 and r["origin_round"] == ev["origin_round"]
        assert r["test_score"] == ev["test_score"] and r["meets_goal"] == ev["decision"]["meets_goal"]
    assert set(s["rounds"][0]["intervals"]) >= {"amount_recall_at_alert_rate", "roc_auc"}


def _tagged_png(tag: str) -> bytes:
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title(tag)
    return report.fig_to_png(fig)


def test_run_report_shows_leaderboard_rounds_chart_intervals_importance_and_calibration(fraud_spec):
    s = _summary(fraud_spec, _rounds())
    stored = {
        k: {"pr_curve": _tagged_png("pr"), "feature_importance": _tagged_png("coef"), "calibration": _tagged_png("c")}
        for k in (1, 2)
    }
    html = render_run_report(s, "", stored)
    p = _parse(html)
    text = " ".join(p.text)
    assert p.starts == {**p.starts, **{t: p.ends.get(t, 0) for t in ("table", "section", "tr")}}
    for heading in ("Goal metric per round", "Trial leaderboard", "Round 1", "Round 2"):
        assert heading in text
    # the leaderboard: every trial with family, params, scores, fit time; the selected one marked
    for trial in ("r1-logistic-0", "r1-xgboost-1", "r2-logistic-0", "r2-xgboost-1"):
        assert trial in text
    assert "C=0.1" in text and "learning_rate=0.1, max_depth=5" in text and "7.5" in text
    assert text.count("selected") >= 2
    # intervals beside the goal metric and every test metric that has one
    assert "0.8300 [0.7689, 0.8822]" in text
    assert "[0.9012, 0.9533]" in text and "[0.3301, 0.4907]" in text
    assert "95% interval (bootstrap)" in text
    # the goal as the business runs it, the paired comparison
    assert "alert rate at the deployed threshold" in text and "0.460% [0.310%, 0.620%]" in text
    assert "within capacity" in text and "goal met" in text
    assert "test rows, round 2" in text and "amount_recall_at_alert_rate 0.8300 [0.7689, 0.8822]" in text
    assert "rows compared (unseen by the champion)" in text and "1,800" in text
    assert "after the champion's data window" in text
    assert "difference (candidate - champion, positive = better)" in text
    assert "trained in round 1" in text  # round 2 re-evaluated round 1's model
    # permutation importance in the declared columns, calibration with its verdict in words
    assert "Permutation importance on the test rows" in text
    for column in ("card_number", "amount", "country"):
        assert column in text
    assert "Brier score" in text and "mean predicted / observed rate" in text
    assert "scores are not calibrated probabilities" in text
    # baselines named for what they are
    assert "flag nothing (no model)" in text and "rule of thumb: flag the largest amounts" in text
    # charts: rounds + per round (importance and calibration drawn from the data, the stored pr curve);
    # the stored |coef| and calibration PNGs are replaced, not shown twice
    assert len(p.imgs) == 1 + 2 * 3
    alts = re.findall(r'alt="([^"]+)"', html)
    assert alts.count("goal metric per round") == 1 and alts.count("permutation importance") == 2
    assert "feature_importance" not in alts and alts.count("pr_curve") == 2


def test_run_report_survives_old_and_unfinished_rounds_and_failed_runs(fraud_spec):
    old = _evaluation(1, value=0.61, met=False)
    for key in ("intervals", "goal_check", "comparison", "champion_score", "leaderboard", "origin_round"):
        del old[key]
    old["champion_version"] = None
    old["importance"] = [{"feature": "amount", "importance": 0.7}]  # |coef| of older runs
    old["calibration"] = [{"bin": 0, "mean_predicted": 0.1, "observed_rate": 0.05, "count": 10}]
    rounds = [
        {"round": 1, "plan": _plan(1), "evaluation": old, "diagnosis": None},
        {"round": 2, "plan": _plan(2, "augment_features"), "evaluation": None, "diagnosis": None},
    ]
    s = _summary(fraud_spec, rounds, decision="goal_not_met")
    assert s["rounds"][0]["intervals"] is None and s["rounds"][1]["leaderboard"] is None
    json.dumps(s)
    stored = {1: {"feature_importance": _tagged_png("coef"), "calibration": _tagged_png("c")}}
    html = render_run_report(s, "<p>eda</p>", stored)
    p = _parse(html)
    text = " ".join(p.text)
    assert "(no trial leaderboard recorded)" in text
    assert "flag nothing (no model)" in text
    assert "Permutation importance on the test rows" not in text
    alts = re.findall(r'alt="([^"]+)"', html)
    assert sorted(alts) == ["calibration", "feature_importance", "goal metric per round"]  # stored PNGs kept
    # a failed run with no round at all
    failed = run_summary(
        spec=fraud_spec,
        run_id="r",
        as_of="2026-11-01",
        outcome={"decision": "failed", "reason": "task x failed", "failed_task": "x", "error": "boom"},
        rounds=[],
        problem_card=None,
        collect=None,
        eda=None,
        champion_after=None,
        report_uri="u",
    )
    text = " ".join(_parse(render_run_report(failed, "", {})).text)
    assert "(no round was evaluated)" in text and "boom" in text


def test_run_report_of_a_regression_without_calibration_or_alert_rate():
    diabetes = load_spec(spec_path("diabetes"))
    spec = diabetes.model_copy(update={"goal": diabetes.goal.model_copy(update={"metric": "rmse", "target": 50.0})})
    assert not spec.goal.higher_is_better
    ev = {
        "round": 1,
        "trial_id": "r1-ridge-0",
        "family": "ridge",
        "params": {},
        "train_score": 50.0,
        "validation_score": 55.0,
        "test_score": 54.0,
        "threshold": None,
        "test_metrics": {"rmse": 54.0, "mae": 44.0, "r2": 0.45, "n": 89},
        "intervals": {spec.goal.metric: _ci(54.0, 49.1, 59.3), "rmse": _ci(54.0, 49.1, 59.3)},
        "goal_check": {
            "metric": spec.goal.metric,
            "value": 54.0,
            "target": spec.goal.target,
            "alert_rate": None,
            "max_alert_rate": None,
            "within_capacity": None,
            "met": False,
        },
        "comparison": {"champion_version": None, "fair": None, "rows": 0, "note": "no champion yet"},
        "champion_version": None,
        "leaderboard": [
            {"trial_id": "r1-ridge-0", "family": "ridge", "params": {}, "validation_score": 55.0, "selected": True},
            {"trial_id": "r1-ridge-1", "family": "ridge", "params": {"alpha": 10}, "validation_score": 53.0},
        ],
        "importance": [{"feature": "bmi", "mean": 6.1, "std": 0.4, "columns": 1}],
        "calibration": None,
        "baselines": {"predict the training mean": 77.0},
        "decision": {"meets_goal": False, "reason": "misses"},
        "plots": [],
    }
    s = run_summary(
        spec=spec,
        run_id="r",
        as_of="2026-11-01",
        outcome={"decision": "goal_not_met", "reason": "misses"},
        rounds=[{"round": 1, "plan": _plan(1), "evaluation": ev, "diagnosis": None}],
        problem_card=None,
        collect=None,
        eda=None,
        champion_after=None,
        report_uri="u",
    )
    html = render_run_report(s, "", {})
    text = " ".join(_parse(html).text)
    assert "no champion yet" in text and "predict the training mean" in text and "defaults" in text
    assert "alert rate at the deployed threshold" not in text and "Calibration" not in text
    # lower is better: the leaderboard lists the smaller validation error first
    board = html[html.index('<section id="trial-leaderboard">') :]
    assert board.index("r1-ridge-1") < board.index("r1-ridge-0")
    assert "54.0000 [49.1000, 59.3000]" in text
