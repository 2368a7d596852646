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
    d = ed.drift(cur, prev)
    assert d["reference"] == "previous run"
    assert set(d["columns"]) == {"amount", "age", "channel"}
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
    assert "Data is unfit" in frag and "No previous run" in frag
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
