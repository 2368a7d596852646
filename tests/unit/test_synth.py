"""Tests for the synthetic card-transaction generator (include/lifecycle/synth.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from include.lifecycle import synth

END = dt.date(2026, 11, 1)
DAYS = 20
PER_DAY = 3000


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(root: Path, dataset: str) -> pd.DataFrame:
    parts = []
    for p in sorted((root / dataset).glob("ds=*/part-0.parquet")):
        df = pd.read_parquet(p)
        df["ds"] = p.parent.name.removeprefix("ds=")
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str]]:
    root = tmp_path_factory.mktemp("landing")
    messages: list[str] = []
    summary = synth.generate(root, end=END, days=DAYS, tx_per_day=PER_DAY, seed=7, log=messages.append)
    return root, summary, messages


@pytest.fixture(scope="module")
def frames(landing: tuple[Path, dict, list[str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    root, _, _ = landing
    return _read(root, "transactions"), _read(root, "chargebacks")


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sa = synth.generate(a, end=END, days=4, tx_per_day=1500, seed=11, defect_rate=0.005)
    sb = synth.generate(b, end=END, days=4, tx_per_day=1500, seed=11, defect_rate=0.005)
    synth.generate(c, end=END, days=4, tx_per_day=1500, seed=12, defect_rate=0.005)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert sa == sb
    assert len(fa) == 8  # 4 transaction + 4 chargeback partitions
    assert fa == fb
    assert fa.keys() == fc.keys()
    tx_keys = [k for k in fa if k.startswith("transactions")]
    assert all(fa[k] != fc[k] for k in tx_keys)
    # no temp files left behind
    assert not [p for p in a.rglob("*") if p.name.startswith(".")]


def test_partition_does_not_depend_on_window(tmp_path: Path) -> None:
    long, short = tmp_path / "long", tmp_path / "short"
    synth.generate(long, end=END, days=5, tx_per_day=1000, seed=3)
    synth.generate(short, end=END - dt.timedelta(days=1), days=2, tx_per_day=1000, seed=3)
    for day in ("2026-10-29", "2026-10-30"):
        rel = Path("transactions") / f"ds={day}" / "part-0.parquet"
        assert (long / rel).read_bytes() == (short / rel).read_bytes()


def test_extending_a_window_gives_the_files_of_the_longer_window(tmp_path: Path) -> None:
    grown, once = tmp_path / "grown", tmp_path / "once"
    start = END - dt.timedelta(days=20)
    args = {"tx_per_day": 1500, "seed": 5}
    first = synth.ensure(grown, start=start, end=END, **args)
    assert first["action"] == "generated"
    assert synth.ensure(grown, start=start, end=END, **args)["action"] == "up_to_date"
    later = END + dt.timedelta(days=12)
    ext = synth.ensure(grown, start=start, end=later, **args)
    assert ext["action"] == "extended"
    assert ext["days"] == 12
    assert (ext["start"], ext["end"]) == (END.isoformat(), later.isoformat())
    synth.generate(once, end=later, days=32, **args)
    fg, fo = _files(grown), _files(once)
    assert json.loads(fg.pop(synth.STAMP))["end"] == later.isoformat()
    assert fg.keys() == fo.keys()
    assert len(fg) == 2 * 32
    assert [k for k in fg if fg[k] != fo[k]] == []
    # the extension added the chargebacks of older transactions that fell due after END
    cb = _read(grown, "chargebacks")
    late = cb[cb["ds"] >= END.isoformat()]
    assert (late["transaction_id"].str[2:10] < END.strftime("%Y%m%d")).any()


def test_ensure_checks_its_stamp_cheaply_and_starts_over_on_other_arguments(tmp_path: Path) -> None:
    start = END - dt.timedelta(days=4)
    synth.ensure(tmp_path, start=start, end=END, tx_per_day=500, seed=5)
    part = tmp_path / "transactions" / f"ds={start.isoformat()}" / "part-0.parquet"
    mtime = part.stat().st_mtime_ns
    assert synth.ensure(tmp_path, start=start, end=END - dt.timedelta(days=1), tx_per_day=500, seed=5) == {
        "action": "up_to_date",
        "start": start.isoformat(),
        "end": END.isoformat(),
    }
    assert part.stat().st_mtime_ns == mtime
    # other arguments: the window is generated again and partitions outside it go
    later = start + dt.timedelta(days=2)
    out = synth.ensure(tmp_path, start=later, end=END, tx_per_day=600, seed=5)
    assert out["action"] == "generated"
    for dataset in ("transactions", "chargebacks"):
        assert sorted(p.name for p in (tmp_path / dataset).iterdir()) == [
            f"ds={(later + dt.timedelta(days=i)).isoformat()}" for i in range(2)
        ]
    # a removed partition is noticed: everything is generated again
    (tmp_path / "transactions" / f"ds={later.isoformat()}" / "part-0.parquet").unlink()
    assert synth.ensure(tmp_path, start=later, end=END, tx_per_day=600, seed=5)["action"] == "generated"


def test_demo_end_reaches_today() -> None:
    run_date = dt.date(2026, 11, 1)
    assert synth.demo_end(run_date, today=dt.date(2026, 11, 26)) == dt.date(2026, 11, 27)
    assert synth.demo_end(run_date, today=dt.date(2026, 10, 1)) == run_date
    assert synth.demo_end(run_date, today=dt.date(2026, 10, 31)) == run_date


# --------------------------------------------------------------------------- #
# schema & layout
# --------------------------------------------------------------------------- #


def test_layout_summary_and_progress(landing: tuple[Path, dict, list[str]]) -> None:
    root, summary, messages = landing
    start = END - dt.timedelta(days=DAYS)
    expected = [(start + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]
    for dataset in ("transactions", "chargebacks"):
        dirs = sorted(p.name.removeprefix("ds=") for p in (root / dataset).iterdir())
        assert dirs == expected
        assert all((root / dataset / f"ds={d}" / "part-0.parquet").is_file() for d in dirs)
    assert set(summary) == {"days", "rows", "frauds", "fraud_rate", "chargebacks_written", "defects", "start", "end"}
    assert summary["days"] == DAYS
    assert summary["rows"] == DAYS * PER_DAY
    assert summary["start"] == start.isoformat()
    assert summary["end"] == END.isoformat()
    assert summary["fraud_rate"] == pytest.approx(summary["frauds"] / summary["rows"], abs=1e-6)
    assert "wrote 10/20 partitions, 30000 rows" in messages
    assert "wrote 20/20 partitions, 60000 rows" in messages


def test_transaction_schema(landing: tuple[Path, dict, list[str]], frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    root, _, _ = landing
    tx, _ = frames
    first = next((root / "transactions").glob("ds=*/part-0.parquet"))
    assert pq.read_schema(first).remove_metadata().equals(synth.TRANSACTION_SCHEMA)
    df = pd.read_parquet(first)
    assert list(df.columns) == [
        "transaction_id",
        "ts",
        "card_number",
        "merchant_id",
        "merchant_category",
        "amount",
        "channel",
        "country",
    ]
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    assert df["amount"].dtype == np.float64
    for col in ("transaction_id", "card_number", "merchant_id", "merchant_category", "channel", "country"):
        assert pd.api.types.is_string_dtype(df[col]), col

    # values
    assert tx["transaction_id"].str.fullmatch(r"tx\d{8}-\d{6}").all()
    assert (tx["transaction_id"].str[2:10] == tx["ds"].str.replace("-", "")).all()
    assert (tx["ts"].dt.strftime("%Y-%m-%d") == tx["ds"]).all()
    assert tx["card_number"].str.fullmatch(r"\d{16}").all()
    assert all(_luhn_ok(n) for n in tx["card_number"].unique()[:2000])
    assert tx["merchant_id"].dropna().str.fullmatch(r"m\d{5}").all()
    assert set(tx["merchant_category"]) == set(synth.CATEGORIES)
    assert len(synth.CATEGORIES) == 12
    assert tx["country"].str.fullmatch(r"[A-Z]{2}").all()
    assert tx["country"].value_counts(normalize=True).index[0] == "DE"
    ok = tx[tx["amount"] > 0]
    assert (ok["amount"] == ok["amount"].round(2)).all()
    assert set(tx["channel"]) - {"fax"} == set(synth.CHANNELS)
    # realistic daily profile: busiest hours during the day, quiet at night
    hours = tx["ts"].dt.hour.value_counts(normalize=True)
    assert hours.loc[[12, 13, 17, 18]].min() > 3 * hours.loc[[2, 3, 4]].max()


def test_chargeback_schema(landing: tuple[Path, dict, list[str]]) -> None:
    root, _, _ = landing
    files = sorted((root / "chargebacks").glob("ds=*/part-0.parquet"))
    for f in files:
        assert pq.read_schema(f).remove_metadata().equals(synth.CHARGEBACK_SCHEMA)
    df = pd.read_parquet(files[-1])
    assert list(df.columns) == ["transaction_id", "reported_at", "reason"]
    assert str(df["reported_at"].dtype) == "datetime64[us, UTC]"
    assert set(df["reason"]) == {"fraud"}


# --------------------------------------------------------------------------- #
# defects
# --------------------------------------------------------------------------- #


def _count_defects(tx: pd.DataFrame) -> tuple[int, dict[str, int]]:
    cols = [c for c in tx.columns if c != "ds"]
    kinds = {
        "bad_amount": int((tx["amount"] <= 0).sum()),
        "bad_channel": int((~tx["channel"].isin(synth.CHANNELS)).sum()),
        "null_merchant": int(tx["merchant_id"].isna().sum()),
        "duplicate": int(tx.duplicated(subset=cols).sum()),
    }
    return sum(kinds.values()), kinds


def test_defects_are_counted_and_never_fraud(tmp_path: Path) -> None:
    summary = synth.generate(tmp_path, end=END, days=5, tx_per_day=2000, seed=5, defect_rate=0.01)
    tx, cb = _read(tmp_path, "transactions"), _read(tmp_path, "chargebacks")
    total, kinds = _count_defects(tx)
    assert total == summary["defects"]
    assert 50 < total < 200
    assert all(v > 0 for v in kinds.values()), kinds
    # duplicates are exact copies: ids repeat exactly as often as whole rows do
    assert tx["transaction_id"].duplicated().sum() == kinds["duplicate"]
    assert tx["transaction_id"].nunique() == len(tx) - kinds["duplicate"]
    # defective rows never carry a chargeback (duplicates copy legit rows)
    bad = (tx["amount"] <= 0) | ~tx["channel"].isin(synth.CHANNELS) | tx["merchant_id"].isna()
    dup_ids = tx.loc[tx["transaction_id"].duplicated(), "transaction_id"]
    assert not cb["transaction_id"].isin(tx.loc[bad, "transaction_id"]).any()
    assert not cb["transaction_id"].isin(dup_ids).any()


def test_default_defect_rate(landing: tuple[Path, dict, list[str]], frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, summary, _ = landing
    tx, _ = frames
    total, _ = _count_defects(tx)
    assert total == summary["defects"]
    assert summary["defects"] <= 0.002 * summary["rows"]


def test_no_defects_when_rate_is_zero(tmp_path: Path) -> None:
    summary = synth.generate(tmp_path, end=END, days=3, tx_per_day=2000, seed=9, defect_rate=0.0)
    tx = _read(tmp_path, "transactions")
    assert summary["defects"] == 0
    assert tx["transaction_id"].is_unique
    assert (tx["amount"] > 0).all()
    assert tx["channel"].isin(synth.CHANNELS).all()
    assert tx["merchant_id"].notna().all()


# --------------------------------------------------------------------------- #
# fraud patterns
# --------------------------------------------------------------------------- #


def test_fraud_rate(landing: tuple[Path, dict, list[str]]) -> None:
    _, summary, _ = landing
    assert 0.001 < summary["fraud_rate"] < 0.01
    assert summary["frauds"] > 0


def test_frauds_come_in_bursts(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tx, cb = frames
    fraud = tx[tx["transaction_id"].isin(cb["transaction_id"])]
    per_card = fraud.groupby("card_number").size()
    assert per_card.mean() > 2.5
    # a burst is tight in time: most fraud rows follow another fraud on the same card within 3 hours
    gap = fraud.sort_values("ts").groupby("card_number")["ts"].diff()
    assert (gap < pd.Timedelta(hours=3)).sum() > 0.5 * len(fraud)
    # card testing: tiny amounts are far more common among frauds than among legit rows
    legit = tx[~tx["transaction_id"].isin(cb["transaction_id"])]

    def tiny(df: pd.DataFrame) -> float:
        return ((df["amount"] >= 0.5) & (df["amount"] <= 3.0)).mean()

    assert tiny(fraud) > 2 * tiny(legit)
    # fraud skews to night, abroad and ecom, but legit rows also have all of these
    for mask in (
        lambda df: df["ts"].dt.hour < 6,
        lambda df: df["channel"] == "ecom",
        lambda df: df["country"] != "DE",
        lambda df: df["amount"] > 300,
    ):
        assert mask(fraud).mean() > mask(legit).mean() > 0.01


def test_risky_merchants_have_higher_fraud_rate(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tx, cb = frames
    pop = synth.make_population(seed=7, n_cards=synth.default_n_cards(PER_DAY), n_merchants=2000)
    risky = {pop.merchant_ids[int(i)].as_py() for i in pop.risky_idx}
    assert 10 <= len(risky) <= 40  # ~1-2% of 2000 merchants
    is_fraud = tx["transaction_id"].isin(cb["transaction_id"])
    at_risky = tx["merchant_id"].isin(risky)
    assert is_fraud[at_risky].mean() > 3 * is_fraud[~at_risky].mean()
    # but most fraud is elsewhere: the merchant alone does not give it away
    assert at_risky[is_fraud].mean() < 0.5


# --------------------------------------------------------------------------- #
# late labels
# --------------------------------------------------------------------------- #


def test_chargebacks_arrive_late(
    landing: tuple[Path, dict, list[str]], frames: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, summary, _ = landing
    tx, cb = frames
    assert len(cb) == summary["chargebacks_written"]
    assert cb["transaction_id"].is_unique
    assert (cb["ds"] < END.isoformat()).all()
    assert (cb["reported_at"].dt.strftime("%Y-%m-%d") == cb["ds"]).all()
    joined = cb.merge(tx.drop_duplicates("transaction_id"), on="transaction_id", how="left", validate="1:1")
    assert joined["ts"].notna().all()
    delay = joined["reported_at"] - joined["ts"]
    assert (delay >= pd.Timedelta(days=1)).all()
    assert (delay <= pd.Timedelta(days=30)).all()
    share_2_10 = ((delay >= pd.Timedelta(days=2)) & (delay <= pd.Timedelta(days=10))).mean()
    assert share_2_10 > 0.6
    # some frauds have not been reported yet, and none of the last day's can have been
    assert summary["frauds"] > summary["chargebacks_written"]
    last_day = (END - dt.timedelta(days=1)).isoformat()
    assert not cb["transaction_id"].isin(tx.loc[tx["ds"] == last_day, "transaction_id"]).any()


def test_every_fraud_gets_exactly_one_chargeback_eventually(tmp_path: Path) -> None:
    now, later = tmp_path / "now", tmp_path / "later"
    s_now = synth.generate(now, end=END, days=10, tx_per_day=2000, seed=4)
    # same start, 30 more days: every fraud of the first 10 days has been reported by then
    synth.generate(later, end=END + dt.timedelta(days=30), days=40, tx_per_day=2000, seed=4)
    tx_now = _read(now, "transactions")
    cb_now, cb_later = _read(now, "chargebacks"), _read(later, "chargebacks")
    for day in tx_now["ds"].unique():
        rel = Path("transactions") / f"ds={day}" / "part-0.parquet"
        assert (now / rel).read_bytes() == (later / rel).read_bytes()
    cb_later = cb_later[cb_later["transaction_id"].isin(tx_now["transaction_id"])]
    assert cb_later["transaction_id"].is_unique
    assert len(cb_later) == s_now["frauds"]
    assert set(cb_now["transaction_id"]) < set(cb_later["transaction_id"])
    pending = tx_now[tx_now["transaction_id"].isin(set(cb_later["transaction_id"]) - set(cb_now["transaction_id"]))]
    assert len(pending) > 0
    assert len(pending) == s_now["frauds"] - s_now["chargebacks_written"]
    assert pending["ts"].min() > pd.Timestamp(END - dt.timedelta(days=30), tz="UTC")


# --------------------------------------------------------------------------- #
# CLI & isolation
# --------------------------------------------------------------------------- #


def test_cli_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = synth.main(
        ["--root", str(tmp_path), "--end", "2026-11-01", "--days", "2", "--per-day", "500", "--seed", "7", "--quiet"]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 1000
    assert summary["start"] == "2026-10-30"
    assert (tmp_path / "transactions" / "ds=2026-10-31" / "part-0.parquet").is_file()


def test_cli_to_today_incremental(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an end far in the future is later than today, so the window is [end - days, end)
    argv = ["--root", str(tmp_path), "--end", "2099-01-03", "--days", "2", "--per-day", "300"]
    assert synth.main([*argv, "--to-today", "--incremental", "--quiet"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["action"], first["start"], first["end"]) == ("generated", "2099-01-01", "2099-01-03")
    assert synth.main([*argv, "--to-today", "--incremental", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "up_to_date"
    assert json.loads((tmp_path / synth.STAMP).read_text())["end"] == "2099-01-03"


def test_module_does_not_import_airflow() -> None:
    code = "import sys, include.lifecycle.synth; sys.exit('airflow' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        synth.generate(tmp_path, end=END, days=0)
    with pytest.raises(ValueError):
        synth.generate(tmp_path, end=END, days=1, defect_rate=-0.1)


def test_the_drift_scenario_changes_fraud_from_its_day_on(tmp_path: Path) -> None:
    """drift_from: the days before it are the usual files byte for byte; from it on, fraud is the
    new pattern (contactless fill-ups at home, by day) and about as frequent as before."""
    end, drift_day = dt.date(2026, 3, 31), dt.date(2026, 3, 11)
    plain, drifted = tmp_path / "plain", tmp_path / "drift"
    synth.generate(plain, end=end, days=30, tx_per_day=2000, seed=5)
    synth.generate(drifted, end=end, days=30, tx_per_day=2000, seed=5, drift_from=drift_day)
    for day in (dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(30)):
        rel = Path("transactions") / f"ds={day.isoformat()}" / "part-0.parquet"
        same = (plain / rel).read_bytes() == (drifted / rel).read_bytes()
        assert same == (day < drift_day), day
    tx = pd.concat(pd.read_parquet(p) for p in sorted((drifted / "transactions").glob("ds=*/part-0.parquet")))
    cb = pd.concat(pd.read_parquet(p) for p in sorted((drifted / "chargebacks").glob("ds=*/part-0.parquet")))
    fraud = tx[tx["transaction_id"].isin(cb["transaction_id"])]
    new = fraud[fraud["ts"].dt.date >= drift_day]
    old = fraud[fraud["ts"].dt.date < drift_day]
    assert len(new) > 20 and len(old) > 20
    assert (new["merchant_category"] == "fuel").all() and (new["channel"] == "contactless").all()
    assert (old["merchant_category"] != "fuel").mean() > 0.9
    assert new["ts"].dt.hour.between(8, 21).all()


def test_days_whose_ids_pyarrow_converts_in_chunks_still_give_their_chargebacks(tmp_path: Path, monkeypatch) -> None:
    """From about 0.9M transactions a day pyarrow converts a day's ids in chunks (a ChunkedArray);
    the chargebacks, gathered over all days, failed there (bench/largest_window.py at 48M rows):
    here every day's fraud ids come chunked, and the files are those of plain arrays."""
    import dataclasses

    import pyarrow as pa

    plain = tmp_path / "plain"
    synth.generate(plain, end=END, days=DAYS, tx_per_day=PER_DAY, seed=7)
    day = synth._generate_day

    def chunked(*args, **kwargs):
        out = day(*args, **kwargs)
        ids = out.fraud_ids
        half = len(ids) // 2
        return dataclasses.replace(out, fraud_ids=pa.chunked_array([ids[:half], ids[half:]], type=ids.type))

    monkeypatch.setattr(synth, "_generate_day", chunked)
    root = tmp_path / "chunked"
    synth.generate(root, end=END, days=DAYS, tx_per_day=PER_DAY, seed=7)
    assert _files(root) == _files(plain)
    assert len(_read(root, "chargebacks")) > 0
