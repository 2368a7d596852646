"""Tests of section 3, evaluate data: profile, drift, quality gate, plots, report."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from include.lifecycle import evaluate_data as ed
from include.lifecycle.spec import QualitySpec

NUMERIC = ["amount", "age"]
CATEGORICAL = ["channel"]
COLUMNS = ["ts", "amount", "age", "channel", "is_fraud"]


def _small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(
                ["2026-01-01 01:00", "2026-01-01 05:00", "2026-01-02 03:00", "2026-01-02 09:00", "2026-01-03 12:00"]
            ),
            "amount": [10.0, np.nan, 30.0, 0.0, 50.0],
            "age": [20, 30, 40, 50, 60],
            "channel": pd.Series(["pos", "ecom", "pos", None, "ecom"], dtype="str"),
            "is_fraud": [0, 1, 0, 0, 1],
        }
    )


def _frame(n: int = 5000, seed: int = 0, shift: float = 0.0, pos_rate: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_rate).astype(int)
    amount = rng.lognormal(3.0 + shift + y * 0.8, 1.0, n)
    return pd.DataFrame(
        {
            "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10 * 86400, n), unit="s"),
            "amount": amount,
            "age": rng.normal(40 + 10 * shift, 10, n).round(),
            "channel": rng.choice(["pos", "ecom", "contactless", "atm"], n, p=[0.5, 0.3, 0.15, 0.05]),
            "is_fraud": y,
        }
    )


def _profile(df: pd.DataFrame, **kw: object) -> dict:
    return ed.profile(
        df, target="is_fraud", time_column="ts", numeric=NUMERIC, categorical=CATEGORICAL, positive_label=1, **kw
    )


# --- profile ---------------------------------------------------------------------------------
def test_profile_small_mixed_frame() -> None:
    prof = _profile(_small())
    json.dumps(prof, allow_nan=False)  # strictly JSON: no NaN, no numpy types
    assert prof["overall"]["rows"] == 5 and prof["overall"]["columns"] == 5
    assert prof["overall"]["missing_cells_share"] == pytest.approx(2 / 25)
    assert prof["overall"]["time_min"].startswith("2026-01-01T01:00")
    assert prof["overall"]["days"] == 3

    amount = prof["numeric"]["amount"]
    assert amount["count"] == 4 and amount["missing_share"] == pytest.approx(0.2)
    assert amount["mean"] == pytest.approx(22.5) and amount["min"] == 0.0 and amount["max"] == 50.0
    assert amount["zeros_share"] == pytest.approx(0.25)
    assert len(amount["bin_shares"]) == len(amount["bin_edges"]) - 1
    assert sum(amount["bin_shares"]) == pytest.approx(1.0)

    channel = prof["categorical"]["channel"]
    assert channel["count"] == 4 and channel["missing_share"] == pytest.approx(0.2) and channel["n_unique"] == 2
    assert dict(channel["top"]) == {"pos": 0.5, "ecom": 0.5}
    assert dict(channel["target_rate"]) == {"pos": 0.0, "ecom": 1.0}

    tgt = prof["target"]
    assert tgt["type"] == "binary" and tgt["positives"] == 2 and tgt["base_rate"] == pytest.approx(0.4)

    assert prof["correlations"]["age"]["age"] == pytest.approx(1.0)
    assert prof["correlations"]["amount"]["amount"] == pytest.approx(1.0)
    assert "is_fraud" in prof["correlations"]
    assert prof["missingness"] == {"ts": 0.0, "amount": 0.2, "age": 0.0, "channel": 0.2, "is_fraud": 0.0}
    assert prof["dtypes"]["amount"] == "float64"

    by_day = prof["by_day"]
    assert [d["day"] for d in by_day] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert sum(d["rows"] for d in by_day) == 5
    assert sum(d["positives"] for d in by_day) == 2
    assert by_day[0]["rate"] == pytest.approx(0.5)


def test_profile_continuous_target_and_empty_frame() -> None:
    df = _frame(300)
    df["spend"] = df["amount"] * 2 + 1
    prof = ed.profile(df, target="spend", time_column=None, numeric=["age"], categorical=["channel"])
    assert prof["target"]["type"] == "continuous" and prof["target"]["mean"] == pytest.approx(df["spend"].mean())
    assert "target_mean" in prof["categorical"]["channel"]
    assert prof["by_day"] == []
    json.dumps(prof, allow_nan=False)

    empty = _profile(_frame(10).iloc[0:0])
    json.dumps(empty, allow_nan=False)
    assert empty["overall"]["rows"] == 0 and empty["numeric"]["amount"]["count"] == 0


# --- drift -----------------------------------------------------------------------------------
def test_drift_same_data_is_zero() -> None:
    prev = _profile(_frame(seed=1))
    cur = _profile(_frame(seed=1), **ed.reference_bins(prev))
    d = ed.drift(cur, prev, reference_name="the champion's training rows")
    assert d["reference"] == "the champion's training rows"
    assert d["reference_rows"] == d["current_rows"] == 5000
    assert set(d["columns"]) == {"amount", "age", "channel"} == set(d["details"])
    assert d["max_psi"] == pytest.approx(0.0, abs=1e-9)
    assert d["approximate"] == []
    # a fresh sample of the same distribution stays well below the threshold
    d2 = ed.drift(_profile(_frame(seed=2), **ed.reference_bins(prev)), prev)
    assert d2["max_psi"] < 0.05


def test_drift_detects_shift() -> None:
    prev = _profile(_frame(seed=1))
    cur = _profile(_frame(seed=2, shift=1.0), **ed.reference_bins(prev))
    d = ed.drift(cur, prev)
    assert d["columns"]["amount"] > 0.25 and d["max_psi"] > 0.25
    assert d["max_column"] in {"amount", "age"}
    # without reference bins the drift is approximated, and still detected
    approx = ed.drift(_profile(_frame(seed=2, shift=1.0)), prev)
    assert approx["columns"]["amount"] > 0.25 and "amount" in approx["approximate"]
    # a categorical shift
    df = _frame(seed=3)
    df["channel"] = np.where(np.arange(len(df)) % 2 == 0, "atm", df["channel"])
    dc = ed.drift(_profile(df, **ed.reference_bins(prev)), prev)
    assert dc["columns"]["channel"] > 0.25
    json.dumps(dc, allow_nan=False)


def test_drift_without_previous_and_psi_of_bin_shares() -> None:
    assert ed.drift(_profile(_frame(200)), None) == {
        "columns": {},
        "details": {},
        "max_psi": 0.0,
        "max_column": None,
        "approximate": [],
        "reference": None,
    }
    values = np.random.default_rng(0).normal(size=10_000)
    edges = ed.quantile_edges(values, 10)
    shares = ed.bin_shares(values, edges)
    assert ed.psi(shares, ed.bin_shares(values, edges)) == pytest.approx(0.0, abs=1e-12)
    assert ed.psi(shares, ed.bin_shares(values + 1.5, edges)) > 0.25


# --- quality gate ----------------------------------------------------------------------------
QUALITY = QualitySpec(min_rows=1000, min_positives=30, max_missing_share=0.2, max_drift_psi=0.25)


def _gate(prof: dict, *, expected: list[str] | None = None, drift_result: dict | None = None, q: float = 0.0) -> dict:
    return ed.quality_gate(
        prof,
        quality=QUALITY,
        expected_columns=expected if expected is not None else COLUMNS,
        drift_result=drift_result,
        quarantine_share=q,
        max_quarantine_share=0.01,
    )


def _failed(verdict: dict) -> set[str]:
    return {c["name"] for c in verdict["checks"] if not c["passed"]}


def test_gate_fit_data_passes() -> None:
    prev = _profile(_frame(seed=1))
    prof = _profile(_frame(seed=2), **ed.reference_bins(prev))
    verdict = _gate(prof, drift_result=ed.drift(prof, prev))
    assert verdict["passed"] and verdict["verdict"] == "fit", verdict
    names = {c["name"] for c in verdict["checks"]}
    assert names == {
        "min_rows",
        "target_present",
        "min_positives",
        "max_missing_share",
        "schema_columns",
        "quarantine_share",
        "drift",
    }
    json.dumps(verdict, allow_nan=False)
    ed.raise_if_unfit(verdict)  # no exception


def test_gate_empty_and_too_few_rows() -> None:
    assert "min_rows" in _failed(_gate(_profile(_frame().iloc[0:0])))
    assert _failed(_gate(_profile(_frame(500, pos_rate=0.2)))) == {"min_rows"}


def test_gate_missing_target_column() -> None:
    df = _frame().drop(columns=["is_fraud"])
    verdict = _gate(_profile(df))
    assert "target_present" in _failed(verdict)
    all_missing = _frame()
    all_missing["is_fraud"] = np.nan
    assert "target_present" in _failed(_gate(_profile(all_missing)))


def test_gate_too_few_positives() -> None:
    assert _failed(_gate(_profile(_frame(pos_rate=0.002)))) == {"min_positives"}


def test_gate_missing_share_and_schema_columns() -> None:
    df = _frame()
    df.loc[df.index[: len(df) // 2], "age"] = np.nan
    assert _failed(_gate(_profile(df))) == {"max_missing_share"}
    verdict = _gate(_profile(_frame().drop(columns=["channel"])))
    assert _failed(verdict) == {"schema_columns"}
    assert "channel" in next(c["detail"] for c in verdict["checks"] if c["name"] == "schema_columns")
    extra = _frame()
    extra["surprise"] = 1
    assert _failed(_gate(_profile(extra))) == {"schema_columns"}


def test_gate_quarantine_and_drift() -> None:
    assert _failed(_gate(_profile(_frame()), q=0.05)) == {"quarantine_share"}
    prev = _profile(_frame(seed=1))
    prof = _profile(_frame(seed=2, shift=1.0), **ed.reference_bins(prev))
    verdict = _gate(prof, drift_result=ed.drift(prof, prev))
    assert _failed(verdict) == {"drift"}
    with pytest.raises(ed.DataQualityError) as exc:
        ed.raise_if_unfit(verdict)
    assert "drift" in str(exc.value) and "amount" in str(exc.value)


def test_raise_if_unfit_names_every_failed_check() -> None:
    df = _frame(200, pos_rate=0.01).drop(columns=["channel"])
    verdict = _gate(_profile(df), q=0.2)
    assert not verdict["passed"] and verdict["verdict"] == "unfit"
    with pytest.raises(ed.DataQualityError) as exc:
        ed.raise_if_unfit(verdict)
    msg = str(exc.value)
    for name in ("min_rows", "min_positives", "schema_columns", "quarantine_share"):
        assert name in msg
    assert "200 rows (minimum 1,000)" in msg and "20.00% of rows quarantined" in msg
    assert len(msg.splitlines()) == 1 + len(_failed(verdict))


# --- plots and report ------------------------------------------------------------------------
class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.imgs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts[tag] = self.starts.get(tag, 0) + 1
        if tag == "img":
            self.imgs.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        self.ends[tag] = self.ends.get(tag, 0) + 1


def _parse(html: str) -> _Html:
    p = _Html()
    p.feed(html)
    p.close()
    return p


def _kw() -> dict:
    return {"target": "is_fraud", "time_column": "ts", "numeric": NUMERIC, "categorical": CATEGORICAL}


def test_plots_png_names() -> None:
    df = _frame(3000)
    pngs = ed.plots(df, **_kw(), max_rows=1000)
    expected = {
        "dist_amount",
        "dist_age",
        "correlation_heatmap",
        "target_rate_by_channel",
        "time_trend",
        "target_distribution",
    }
    assert expected <= set(pngs)
    for name, png in pngs.items():
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG"), name
    # regression target and no time column
    df["spend"] = df["amount"] * 2
    reg = ed.plots(df, target="spend", time_column=None, numeric=["age"], categorical=["channel"])
    assert {"dist_age", "target_rate_by_channel", "correlation_heatmap"} <= set(reg) and "time_trend" not in reg


def test_eda_html_embeds_every_plot() -> None:
    prev = _profile(_frame(seed=1))
    df = _frame(seed=2)
    prof = _profile(df, **ed.reference_bins(prev))
    dr = ed.drift(prof, prev)
    verdict = _gate(prof, drift_result=dr, q=0.002)
    pngs = ed.plots(df, **_kw())
    etl = {"rows_in": 5010, "curated": 5000, "quarantined": 10, "quarantined_by_rule": {"amount_range": 10}}
    html = ed.render_eda_html("Card fraud <data>", prof, pngs, verdict, dr, etl)
    assert html.startswith("<!DOCTYPE html>") and "Card fraud &lt;data&gt;" in html
    p = _parse(html)
    assert p.starts["html"] == p.ends["html"] == 1
    for tag in ("table", "section", "tr", "figure"):
        assert p.starts[tag] == p.ends[tag], tag
    assert len(p.imgs) == len(pngs)
    assert all(src.startswith("data:image/png;base64,") for src in p.imgs)
    for name in pngs:
        assert f'alt="{name}"' in html
    for text in ("Data is fit", "min_positives", "quarantined_by_rule", "amount_range", "Drift", "5,010"):
        assert text in html, text

    frag = ed.render_eda_section(prof, pngs, verdict, dr, None)
    f = _parse(frag)
    assert "html" not in f.starts and f.starts["div"] >= 1 and len(f.imgs) == len(pngs)
    assert not math.isnan(len(frag))


def test_eda_section_first_run_and_unfit() -> None:
    df = _frame(200)
    prof = _profile(df)
    dr = ed.drift(prof, None)
    verdict = _gate(prof, drift_result=dr)
    frag = ed.render_eda_section(prof, {}, verdict, dr, None)
    assert "Data is unfit" in frag and "no reference: first model" in frag
    _parse(frag)


def test_drift_column_now_all_missing() -> None:
    prev = _profile(_frame(seed=1))
    df = _frame(seed=2)
    df["age"] = np.nan
    df["channel"] = None
    d = ed.drift(_profile(df, **ed.reference_bins(prev)), prev)
    assert d["columns"]["age"] > 1.0 and d["columns"]["channel"] > 1.0
    assert d["columns"]["amount"] < 0.05
    assert ed.drift(_profile(df.iloc[0:0]), prev)["columns"] == {}


# --- drift against the champion's training data ---------------------------------------------------
def test_psi_noise_makes_small_samples_honest() -> None:
    rng = np.random.default_rng(0)
    ref = _frame(5000, seed=1)
    prev = _profile(ref)
    small = _frame(40, seed=2)  # the same population, 40 rows: PSI is large by chance alone
    d = ed.drift(_profile(small, **ed.reference_bins(prev)), prev, seed=0)
    noisy = {c: v for c, v in d["columns"].items() if v > 0.1}
    assert noisy, d["columns"]  # a limit of 0.1 alone would call this drift...
    assert ed.drifted(d, 0.1) == {}  # ...but no column is above its no-drift level
    for col, det in d["details"].items():
        assert det["low"] <= det["psi"] <= det["high"] + 1e-9 or det["psi"] < det["noise"], col
        assert det["noise"] > 0.05
    # the same shift in 40 rows is far above the noise
    shifted = _frame(40, seed=2, shift=1.5)
    d2 = ed.drift(_profile(shifted, **ed.reference_bins(prev)), prev, seed=0)
    assert "amount" in ed.drifted(d2, 0.25)
    # seeded: the same inputs give the same intervals
    assert ed.drift(_profile(small, **ed.reference_bins(prev)), prev, seed=0) == d
    assert ed.psi_noise([0.5, 0.5], [0.5, 0.5], 0, 10, rng) == {"low": None, "high": None, "noise": None}


def _champion_store(tmp_path, dataset: pd.DataFrame, *, train_end: str | None, version_files: bool = True):
    """A problem store whose registry's champion (version 1) trained in run ``r1`` round 1 on
    ``dataset`` (time split ending its training at ``train_end``; None: a random split)."""
    from include.lifecycle.layout import RunLayout
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store
    from tests.registry_store import mlflow_db_in

    store = Store.from_uri((tmp_path / "problem").as_uri())
    rnd = RunLayout("r1").round(1)
    store.write_json(rnd.plan, {"round": 1, "dataset_rel": RunLayout("r1").dataset})
    split = {"kind": "time", "train": {"end": train_end}} if train_end else {"kind": "random", "seed": 3}
    store.write_json(rnd.split, split)
    store.write_parquet(RunLayout("r1").dataset, dataset)
    mlflow_db_in(tmp_path)  # the MLflow store of the artifact root tmp_path
    reg = ModelRegistry(store)
    lineage = {"run_id": "r1", "round": 1} if version_files else {}
    v = reg.register({"lineage.json": json.dumps(lineage).encode()}, {"run_id": "r1", "round": 1})
    reg.promote(v, run_id="r1", expected_champion=None)
    return store


def _days_frame(start: str, days: int, per_day: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * per_day
    df = _frame(n, seed=seed, shift=shift)
    day = np.repeat(np.arange(days), per_day)
    df["ts"] = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(day * 86400 + rng.integers(0, 86400, n), unit="s")
    return df


def test_drift_compares_the_newest_days_with_the_champions_training_rows(tmp_path) -> None:
    # the champion trained on 2026-01-01..2026-01-20 (training rows end 01-14: 6 days of validation/test)
    champion_data = _days_frame("2026-01-01", 20, 200, seed=1)
    store = _champion_store(tmp_path, champion_data, train_end="2026-01-15T00:00:00+00:00")
    ref, info = ed.champion_training_data(store, columns=NUMERIC + CATEGORICAL, time_column="ts")
    assert info["version"] == 1 and info["run_id"] == "r1" and info["round"] == 1
    assert len(ref) == info["rows"] == 14 * 200  # only the training rows, not validation or test
    assert (ref["ts"] < pd.Timestamp("2026-01-15", tz="UTC")).all()
    assert "champion version 1" in info["description"] and "training rows" in info["description"]

    # this window: 2026-01-10..2026-02-08; the newest 7 days have amounts shifted up
    window = pd.concat(
        [_days_frame("2026-01-10", 23, 200, seed=2), _days_frame("2026-02-02", 7, 200, seed=3, shift=1.0)],
        ignore_index=True,
    )
    kw = {"time_column": "ts", "numeric": NUMERIC, "categorical": CATEGORICAL}
    d = ed.drift_against(window, ref, info, **kw, recent_days=7)
    assert d["compared"] == {
        "kind": "newest days",
        "start": "2026-02-02T00:00:00+00:00",
        "end": "2026-02-09T00:00:00+00:00",
        "rows": 1400,
    }
    assert d["current_rows"] == 1400 and d["reference_rows"] == 2800 and d["version"] == 1
    assert d["approximate"] == []  # binned by the reference's own edges: exact
    assert set(ed.drifted(d, 0.25)) == {"amount", "age"}
    assert d["details"]["amount"]["buckets"][0] == "missing" and d["details"]["channel"]["buckets"][-1] == "other"
    verdict = _gate(_profile(window), drift_result=d)
    assert _failed(verdict) == {"drift"}
    check = next(c for c in verdict["checks"] if c["name"] == "drift")
    assert "drifted: " in check["detail"] and "amount" in check["detail"]
    pngs = ed.drift_plots(d, 0.25)
    assert {"drift_psi", "drift_amount", "drift_age"} <= set(pngs) and "drift_channel" not in pngs
    assert all(v.startswith(b"\x89PNG") for v in pngs.values())

    # the same population in the newest days: no drift
    calm = _days_frame("2026-01-10", 30, 200, seed=4)
    d = ed.drift_against(calm, ref, info, **kw, recent_days=7)
    assert d["max_psi"] < 0.05 and ed.drifted(d, 0.25) == {}
    assert "drift" not in _failed(_gate(_profile(calm), drift_result=d))

    # a backfill whose window ends before the champion's training rows do: nothing newer to compare
    old = _days_frame("2026-01-01", 10, 200, seed=5)
    d = ed.drift_against(old, ref, info, **kw, recent_days=7)
    assert d["compared"]["rows"] == 0 and d["columns"] == {} and "drift not measured" in d["why"]
    check = next(c for c in _gate(_profile(old), drift_result=d)["checks"] if c["name"] == "drift")
    assert check["passed"] and "drift not measured" in check["detail"]


def test_drift_reference_without_champion_or_its_data(tmp_path) -> None:
    from include.lifecycle.store import Store

    empty = Store.from_uri((tmp_path / "empty").as_uri())
    ref, info = ed.champion_training_data(empty, columns=NUMERIC, time_column="ts")
    assert ref is None and info == {"why": ed.FIRST_MODEL}
    d = ed.drift_against(_frame(300), ref, info, time_column="ts", numeric=NUMERIC, categorical=[], recent_days=7)
    assert d["reference"] is None and d["why"].startswith("no reference: first model")
    check = next(c for c in _gate(_profile(_frame(300)), drift_result=d)["checks"] if c["name"] == "drift")
    assert check["passed"] and check["detail"] == ed.FIRST_MODEL
    assert "no reference: first model" in ed.render_eda_section(
        _profile(_frame(300)), {}, _gate(_profile(_frame(300))), d, None
    )

    # a random split (a static file): the reference is the champion's whole data set, and every row is compared
    static = _frame(600, seed=1).drop(columns=["ts"])
    store = _champion_store(tmp_path / "static", static, train_end=None)
    ref, info = ed.champion_training_data(store, columns=NUMERIC + CATEGORICAL, time_column=None)
    assert len(ref) == 600 and info["train_end"] is None and "whole data set" in info["description"]
    d = ed.drift_against(static, ref, info, time_column=None, numeric=NUMERIC, categorical=CATEGORICAL, recent_days=7)
    assert d["compared"] == {"kind": "all rows", "rows": 600} and d["max_psi"] == pytest.approx(0.0, abs=1e-9)

    # the champion's data set is gone; a version without lineage
    (tmp_path / "static" / "problem" / "runs" / "r1" / "dataset.parquet").unlink()
    ref, info = ed.champion_training_data(store, columns=NUMERIC, time_column=None)
    assert ref is None and "is gone" in info["why"] and info["version"] == 1
    bare = _champion_store(tmp_path / "bare", static, train_end=None, version_files=False)
    ref, info = ed.champion_training_data(bare, columns=NUMERIC, time_column=None)
    assert ref is None and "no lineage" in info["why"]


# --- completeness and freshness -----------------------------------------------------------------
def _collect_summary(days: list[str], *, start: str = "2026-01-01", n: int = 35, rows: int = 100) -> dict:
    import datetime as dt

    end = (dt.date.fromisoformat(start) + dt.timedelta(days=n)).isoformat()
    return {
        "window": {"start": start, "end": end, "as_of": f"{end}T00:00:00+00:00", "lookback_days": n},
        "partitions": [{"ds": d, "rows_in": rows, "rows_curated": rows} for d in days],
    }


def _all_days(start: str = "2026-01-01", n: int = 35) -> list[str]:
    return [(pd.Timestamp(start) + pd.Timedelta(days=i)).strftime("%Y-%m-%d") for i in range(n)]


def _coverage_failed(cov: dict) -> set[str]:
    verdict = ed.quality_gate(
        _profile(_frame()),
        quality=QUALITY,
        expected_columns=COLUMNS,
        drift_result=None,
        quarantine_share=0.0,
        max_quarantine_share=0.01,
        coverage=cov,
    )
    assert verdict["coverage"] == cov
    return _failed(verdict)


def test_completeness_fails_when_most_days_are_missing() -> None:
    days = _all_days()
    full = ed.coverage(_collect_summary(days))
    assert full["expected_days"] == full["present_days"] == 35 and full["completeness"] == 1.0
    assert full["missing_days"] == [] and full["staleness_days"] == 0 and full["newest"] == "2026-02-04"
    assert _coverage_failed(full) == set()

    ten = ed.coverage(_collect_summary(days[-10:]))  # 10 of 35 days present
    assert ten["present_days"] == 10 and ten["completeness"] == pytest.approx(10 / 35)
    assert ten["missing_days"] == days[:25]
    assert _coverage_failed(ten) == {"completeness"}

    # a day that is there but empty counts as missing; a day far below the median is reported, not failed
    summary = _collect_summary(days)
    summary["partitions"][3]["rows_curated"] = 0
    summary["partitions"][4]["rows_curated"] = 10
    cov = ed.coverage(summary)
    assert cov["missing_days"] == [days[3]] and cov["low_days"] == [{"ds": days[4], "rows": 10}]
    verdict = ed.quality_gate(
        _profile(_frame()),
        quality=QUALITY,
        expected_columns=COLUMNS,
        drift_result=None,
        quarantine_share=0.0,
        max_quarantine_share=0.01,
        coverage=cov,
    )
    check = next(c for c in verdict["checks"] if c["name"] == "completeness")
    assert check["passed"] and days[3] in check["detail"] and f"{days[4]} (10 rows)" in check["detail"]


def test_freshness_fails_when_the_newest_partition_is_old() -> None:
    days = _all_days()
    stale = ed.coverage(_collect_summary(days[:-5]))  # the last 5 days have no partition yet
    assert stale["newest"] == days[-6] and stale["staleness_days"] == 5
    assert _coverage_failed(stale) == {"freshness"}
    late_by_two = ed.coverage(_collect_summary(days[:-2]))
    assert late_by_two["staleness_days"] == 2 and _coverage_failed(late_by_two) == set()  # max_staleness_days 2
    nothing = ed.coverage(_collect_summary([]))
    assert nothing["newest"] is None and _coverage_failed(nothing) == {"completeness", "freshness"}


def test_completeness_and_freshness_do_not_apply_to_a_single_file() -> None:
    cov = ed.coverage({"window": {"start": None, "end": None, "as_of": "2026-01-01T00:00:00+00:00"}, "partitions": []})
    assert cov == {"applicable": False, "why": "a single file has no daily partitions"}
    verdict = ed.quality_gate(
        _profile(_frame()),
        quality=QUALITY,
        expected_columns=COLUMNS,
        drift_result=None,
        quarantine_share=0.0,
        max_quarantine_share=0.01,
        coverage=cov,
    )
    checks = {c["name"]: c for c in verdict["checks"]}
    for name in ("completeness", "freshness"):
        assert checks[name]["passed"] and checks[name]["applicable"] is False
        assert checks[name]["detail"] == "not applicable: a single file has no daily partitions"
    assert ed.completeness_plot(cov) is None
    frag = ed.render_eda_section(_profile(_frame()), {}, verdict, None, None)
    assert "n/a" in frag and "Not applicable: a single file has no daily partitions" in frag


# --- label delay --------------------------------------------------------------------------------
def test_arrival_curve_on_whole_days() -> None:
    # delays 0, 1, 2 days; every row old enough to show any of them: F = empirical CDF
    f = ed.arrival_curve(np.array([0, 1, 1, 2]), np.array([10, 10, 10, 10]))
    assert f.tolist() == pytest.approx([0.25, 0.75, 1.0])
    # a 1-day-old row can show only delays 0 and 1: its label counts toward F(0)/F(1) only
    f = ed.arrival_curve(np.array([0, 1, 2, 2]), np.array([1, 5, 5, 5]))
    assert f[2] == 1.0 and f[1] == pytest.approx(1 - 2 / 3) and f[0] == pytest.approx(f[1] * (1 - 1 / 2))


def test_label_delay_estimates_the_share_of_labels_arrived() -> None:
    import datetime as dt

    rng = np.random.default_rng(0)
    as_of = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    n = 30_000
    ts = pd.Timestamp("2026-01-20", tz="UTC") + pd.to_timedelta(rng.uniform(0, 40 * 86400, n), unit="s")
    delay = pd.to_timedelta(rng.uniform(0, 12 * 86400, n), unit="s")  # labels take 0-12 days
    eventual = rng.random(n) < 0.05
    arrives = ts + delay
    seen = eventual & (arrives < as_of)
    arrived = pd.Series(arrives).where(seen)
    view = ed.label_delay(pd.Series(ts), arrived, as_of=as_of, maturity_days=10)
    truth = seen.sum() / eventual.sum()  # the share of the eventual labels that had arrived
    assert view["labels"] == int(seen.sum()) and view["rows"] == n
    assert view["matured_share"] == pytest.approx(truth, abs=0.02)
    assert view["within_maturity"] == pytest.approx(10 / 12, abs=0.04)
    naive = float(((arrives - ts)[seen] <= pd.Timedelta(days=10)).mean())
    assert naive > view["within_maturity"] + 0.02  # the labels seen alone over-state fast arrival
    assert 5.0 < view["delay_days"]["p50"] < 6.5 and view["delay_days"]["max"] < 12
    assert view["by_day"][0]["arrived_share"] == 1.0 and view["by_day"][-1]["arrived_share"] < 0.2
    json.dumps(view, allow_nan=False)
    png = ed.label_delay_plot(view)
    assert png is not None and png.startswith(b"\x89PNG")
    prof = {**_profile(_frame(300)), "label_delay": view}
    frag = ed.render_eda_section(prof, {"label_delay": png}, _gate(prof), None, None)
    assert "Label delay" in frag and "maturity_days" in frag and 'alt="label_delay"' in frag

    none = ed.label_delay(pd.Series(ts[:10]), pd.Series([pd.NaT] * 10), as_of=as_of, maturity_days=10)
    assert none["labels"] == 0 and none["matured_share"] is None and ed.label_delay_plot(none) is None
