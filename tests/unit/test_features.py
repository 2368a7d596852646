"""Unit tests of include/lifecycle/features.py: leakage-free per-card features, raw split,
interactions, the preprocessor and oversampling."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from include.lifecycle import features as F
from include.lifecycle.features import (
    NO_PREVIOUS_SECONDS,
    FeatureColumns,
    apply_resampling,
    engineer,
    make_preprocessor,
)
from include.lifecycle.spec import FeatureGroupSpec, load_spec

T0 = pd.Timestamp("2024-03-01 00:00", tz="UTC")
VELOCITY = FeatureGroupSpec(
    name="card_velocity", kind="velocity", columns=["amount"], params={"windows": ["1h", "24h"]}
)
HISTORY = FeatureGroupSpec(name="card_history", kind="history", columns=["amount", "country", "merchant_id"])
PER_CARD = [VELOCITY, HISTORY]
WINDOWS = {"1h": pd.Timedelta("1h"), "24h": pd.Timedelta("24h")}


def _tx(rows: list[tuple[str, str, float, str, str]], index: list | None = None) -> pd.DataFrame:
    """Transactions from (card, offset from T0, amount, country, merchant) tuples."""
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(rows))],
            "ts": pd.Series([T0 + pd.Timedelta(r[1]) for r in rows]).astype("datetime64[us, UTC]").to_numpy(),
            "card_number": pd.Series([r[0] for r in rows], dtype="str").to_numpy(),
            "amount": [float(r[2]) for r in rows],
            "country": pd.Categorical([r[3] for r in rows]),
            "merchant_id": pd.Series([r[4] for r in rows], dtype="str").to_numpy(),
            "is_fraud": [0] * len(rows),
        },
        index=index,
    ).astype({"ts": "datetime64[us, UTC]", "card_number": "str", "merchant_id": "str"})


def _per_card(df: pd.DataFrame) -> pd.DataFrame:
    out, _ = engineer(
        df,
        PER_CARD,
        time_column="ts",
        entity_column="card_number",
        exclude={"transaction_id", "card_number", "is_fraud"},
    )
    return out


def _brute_force(df: pd.DataFrame) -> pd.DataFrame:
    """Per-row reference computed from the rows of the same card strictly before t only."""
    records = []
    for _, row in df.iterrows():
        prior = df[(df.card_number == row.card_number) & (df.ts < row.ts)]
        rec: dict[str, float] = {}
        for label, w in WINDOWS.items():
            in_window = prior[prior.ts >= row.ts - w]
            rec[f"vel_cnt_{label}"] = float(len(in_window))
            rec[f"vel_sum_{label}"] = float(in_window.amount.sum())
        gap = (row.ts - prior.ts.max()).total_seconds() if len(prior) else NO_PREVIOUS_SECONDS
        rec["vel_log_secs_since_prev"] = float(np.log1p(gap))
        rec["hist_n_prior"] = float(len(prior))
        rec["hist_amount_ratio"] = row.amount / prior.amount.mean() if len(prior) else np.nan
        rec["hist_new_country"] = float(row.country not in set(prior.country))
        rec["hist_new_merchant_id"] = float(row.merchant_id not in set(prior.merchant_id))
        records.append(rec)
    return pd.DataFrame(records, index=df.index)


EDGE_ROWS = [
    # card A: a tie at 10:00, rows exactly 1h and 24h before later rows
    ("A", "0h", 10.0, "DE", "m1"),
    ("A", "10h", 20.0, "DE", "m2"),
    ("A", "10h", 30.0, "FR", "m1"),  # same card, same ts as the row above: they must not see each other
    ("A", "11h", 40.0, "FR", "m3"),  # exactly 1h after the 10:00 pair: both inside [t-1h, t)
    ("A", "24h", 50.0, "US", "m1"),  # exactly 24h after the first row: inside [t-24h, t)
    ("A", "34h", 60.0, "DE", "m2"),  # exactly 24h after the 10:00 pair
    ("A", "34h 0.5s", 70.0, "DE", "m2"),  # half a second later is strictly later
    # card B interleaved with A, sharing timestamps with A (must not mix)
    ("B", "10h", 100.0, "DE", "m1"),
    ("B", "10h 59min 59s", 200.0, "DE", "m1"),
    ("B", "11h", 300.0, "GB", "m9"),
    ("B", "35h", 400.0, "GB", "m9"),
    # card C: a single row
    ("C", "11h", 5.0, "DE", "m1"),
]


@pytest.fixture(params=["fast_keys", "rank_compressed_keys"])
def key_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run per-card tests on both key encodings (the second is used for huge entity x time ranges)."""
    if request.param == "rank_compressed_keys":
        monkeypatch.setattr(F, "_KEY_LIMIT", 1)
    return request.param


def test_no_leakage_against_brute_force_on_edges(key_path: str) -> None:
    rng = np.random.default_rng(3)
    df = _tx(EDGE_ROWS).sample(frac=1.0, random_state=7)  # shuffled rows, non-monotonic index
    df.index = rng.permutation(len(df)) * 10 + 5
    got = _per_card(df)
    want = _brute_force(df)
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=False, rtol=1e-9, atol=1e-9)


def test_edge_values_by_hand(key_path: str) -> None:
    got = _per_card(_tx(EDGE_ROWS))
    # the two 10:00 rows of card A see only the 00:00 row, not each other
    assert got.loc[[1, 2], "hist_n_prior"].tolist() == [1.0, 1.0]
    assert got.loc[[1, 2], "vel_cnt_1h"].tolist() == [0.0, 0.0]
    assert got.loc[[1, 2], "vel_cnt_24h"].tolist() == [1.0, 1.0]
    # 11:00 sees both 10:00 rows (exactly 1h earlier: the window [t-1h, t) is closed on the left)
    assert got.loc[3, "vel_cnt_1h"] == 2.0 and got.loc[3, "vel_sum_1h"] == 50.0
    # 24:00 sees the 00:00 row, exactly 24h earlier
    assert got.loc[4, "vel_cnt_24h"] == 4.0 and got.loc[4, "vel_sum_24h"] == 100.0
    # 34:00 sees 10:00 (x2, exactly 24h earlier), 11:00 and 24:00; 34:00.5 no longer sees the 10:00 pair
    # but sees the 34:00 row half a second earlier
    assert got.loc[5, "vel_cnt_24h"] == 4.0 and got.loc[5, "vel_sum_24h"] == 140.0
    assert got.loc[6, "vel_cnt_24h"] == 3.0 and got.loc[6, "vel_sum_24h"] == 150.0
    assert got.loc[6, "vel_log_secs_since_prev"] == pytest.approx(np.log1p(0.5))
    # card B shares timestamps with A but never counts A's rows
    assert got.loc[7, "hist_n_prior"] == 0.0 and got.loc[9, "vel_cnt_1h"] == 2.0 and got.loc[9, "vel_sum_1h"] == 300.0
    # a card's first row: no history
    assert got.loc[11, "hist_n_prior"] == 0.0 and np.isnan(got.loc[11, "hist_amount_ratio"])
    assert got.loc[11, "vel_log_secs_since_prev"] == pytest.approx(np.log1p(NO_PREVIOUS_SECONDS))


def test_no_leakage_random_frame_with_many_ties(key_path: str) -> None:
    rng = np.random.default_rng(11)
    n = 300
    rows = [
        (
            f"c{rng.integers(0, 6)}",
            f"{int(rng.integers(0, 80)) * 30}min",  # a coarse grid: many ties and rows exactly on window edges
            float(rng.integers(1, 500)),
            str(rng.choice(["DE", "FR", "US"])),
            f"m{rng.integers(0, 8)}",
        )
        for _ in range(n)
    ]
    df = _tx(rows)
    got = _per_card(df)
    want = _brute_force(df)
    pd.testing.assert_frame_equal(got[want.columns], want, check_exact=False, rtol=1e-9, atol=1e-9)


def test_features_are_invariant_to_later_rows(key_path: str) -> None:
    rng = np.random.default_rng(5)
    rows = [
        (f"c{rng.integers(0, 4)}", f"{int(rng.integers(0, 200)) * 15}min", float(rng.integers(1, 99)), "DE", "m1")
        for _ in range(150)
    ]
    df = _tx(rows)
    cutoff = T0 + pd.Timedelta("25h")
    past = df[df.ts <= cutoff]
    future = df[df.ts > cutoff]
    # rows after the cutoff (of the same cards and of a new card), appended and interleaved
    extra = _tx([("c0", "25h 1s", 999.0, "US", "m7"), ("zz", "26h", 1.0, "DE", "m1")], index=[1000, 1001])
    everything = pd.concat([future, past, extra]).sample(frac=1.0, random_state=1)
    alone = _per_card(past)
    together = _per_card(everything).loc[past.index]
    pd.testing.assert_frame_equal(alone, together)


def test_velocity_three_rows_by_hand() -> None:
    df = _tx([("A", "0min", 10.0, "DE", "m1"), ("A", "30min", 20.0, "DE", "m1"), ("A", "90min", 40.0, "DE", "m1")])
    out, cols = engineer(
        df,
        [FeatureGroupSpec(name="v", kind="velocity", columns=["amount"], params={"windows": ["1h", "2h"]})],
        time_column="ts",
        entity_column="card_number",
        exclude=set(),
    )
    assert out["vel_cnt_1h"].tolist() == [0.0, 1.0, 1.0]  # at 90min the 30min row is exactly 1h earlier: counted
    assert out["vel_sum_1h"].tolist() == [0.0, 10.0, 20.0]
    assert out["vel_sum_2h"].tolist() == [0.0, 10.0, 30.0]
    assert out["vel_cnt_2h"].tolist() == [0.0, 1.0, 2.0]
    assert out["vel_log_secs_since_prev"].tolist() == pytest.approx(
        [np.log1p(NO_PREVIOUS_SECONDS), np.log1p(1800), np.log1p(3600)]
    )
    assert cols.numeric == [
        "vel_cnt_1h",
        "vel_sum_1h",
        "vel_cnt_2h",
        "vel_sum_2h",
        "vel_log_secs_since_prev",
    ]


def test_velocity_window_edge_is_inclusive_and_default_windows() -> None:
    df = _tx([("A", "0min", 10.0, "DE", "m1"), ("A", "60min", 20.0, "DE", "m1"), ("A", "168h", 5.0, "DE", "m1")])
    out, cols = engineer(
        df,
        [FeatureGroupSpec(name="v", kind="velocity", columns=["amount"])],
        time_column="ts",
        entity_column="card_number",
        exclude=set(),
    )
    assert out["vel_cnt_1h"].tolist() == [0.0, 1.0, 0.0]  # exactly 1h earlier counts
    assert out["vel_cnt_7d"].tolist() == [0.0, 1.0, 2.0]  # exactly 7d earlier counts
    assert {"vel_cnt_1h", "vel_cnt_24h", "vel_cnt_7d", "vel_sum_7d"} <= set(cols.numeric)


def test_window_parsing() -> None:
    assert F._window_ticks("30min", 1) == 1800 and F._window_ticks("1.5h", 1) == 5400
    assert F._window_ticks("7d", 1_000_000) == 7 * 86400 * 1_000_000 and F._window_ticks(90, 1) == 90
    assert F._window_ticks("2 days", 1) == 2 * 86400 and F._window_label("30 min") == "30min"
    for bad in ("0h", "-1h", "soon"):
        with pytest.raises(ValueError, match="velocity window"):
            F._window_ticks(bad, 1)


def test_history_new_country_and_ratio() -> None:
    df = _tx(
        [
            ("A", "0h", 100.0, "DE", "m1"),
            ("A", "1h", 300.0, "DE", "m2"),
            ("A", "2h", 400.0, "FR", "m1"),
            ("A", "3h", 80.0, "FR", "m1"),
            ("B", "3h", 50.0, "FR", "m1"),  # another card: its own history
        ]
    )
    out, _ = engineer(df, [HISTORY], time_column="ts", entity_column="card_number", exclude=set())
    assert out["hist_n_prior"].tolist() == [0.0, 1.0, 2.0, 3.0, 0.0]
    assert out["hist_new_country"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert out["hist_new_merchant_id"].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    ratio = out["hist_amount_ratio"].to_numpy()
    assert np.isnan(ratio[0]) and np.isnan(ratio[4])
    assert ratio[1:4] == pytest.approx([300 / 100, 400 / 200, 80 / (800 / 3)])


def test_missing_entity_or_time_gives_nan_and_is_ignored() -> None:
    df = _tx([("A", "0h", 10.0, "DE", "m1"), ("A", "1h", 20.0, "DE", "m1"), ("A", "2h", 30.0, "DE", "m1")])
    df["card_number"] = pd.Series(["A", None, "A"], dtype="str").to_numpy()
    df.loc[0, "merchant_id"] = np.nan
    out = _per_card(df)
    assert np.isnan(out.loc[1, "hist_n_prior"]) and np.isnan(out.loc[1, "vel_cnt_24h"])
    assert out.loc[2, "hist_n_prior"] == 1.0 and out.loc[2, "vel_sum_24h"] == 10.0
    assert np.isnan(out.loc[0, "hist_new_merchant_id"]) and out.loc[2, "hist_new_merchant_id"] == 1.0


def test_output_keeps_index_and_order_and_does_not_modify_input() -> None:
    spec = load_spec("include/problems/card_fraud.yaml")
    df = _tx(EDGE_ROWS, index=[f"row{i}" for i in range(len(EDGE_ROWS))]).iloc[::-1]
    df["merchant_category"] = pd.Categorical(["fuel", "grocery"] * 6)
    df["channel"] = pd.Categorical(["pos", None] * 6)
    before = df.copy(deep=True)
    out, cols = engineer(
        df,
        spec.features.groups,
        time_column="ts",
        entity_column="card_number",
        exclude={"transaction_id", "ts", "card_number", "is_fraud"},
    )
    pd.testing.assert_frame_equal(df, before)
    assert out.index.equals(df.index)
    assert list(out.columns) == list(dict.fromkeys(out.columns))  # unique
    assert sorted(out.columns) == sorted(cols.all())
    assert cols.categorical == ["merchant_category", "channel", "country"]
    assert cols.target_encoded == ["te_merchant_id"]
    assert out["amount"].tolist() == df["amount"].tolist()
    assert out["te_merchant_id"].tolist() == df["merchant_id"].tolist()
    assert out.loc["row0", "time_is_night"] == 1.0 and out.loc["row0", "time_hour_cos"] == pytest.approx(1.0)
    assert out.loc["row11", "time_is_night"] == 0.0 and out.loc["row0", "time_hour_sin"] == pytest.approx(0.0)
    # T0 (2024-03-01) is a Friday
    assert out.loc["row0", "time_day_of_week"] == 4.0
    assert out.loc["row4", "time_day_of_week"] == 5.0 and out.loc["row4", "time_is_night"] == 1.0
    assert out.loc["row3", "time_is_night"] == 0.0
    # features of a row do not depend on where it sits in the frame
    again, _ = engineer(
        df.sample(frac=1.0, random_state=3),
        spec.features.groups,
        time_column="ts",
        entity_column="card_number",
        exclude={"transaction_id", "ts", "card_number", "is_fraud"},
    )
    pd.testing.assert_frame_equal(again.loc[out.index], out)


def test_raw_splits_numeric_and_categorical_with_missing_values() -> None:
    df = pd.DataFrame(
        {
            "age": [31, 45, 22, 60],
            "income": [1.5, np.nan, 3.0, 2.0],
            "member": [True, False, True, False],
            "opt_in": pd.array([True, None, False, True], dtype="boolean"),
            "grade": ["a", None, "b", "a"],
            "city": pd.Categorical(["x", "y", None, "x"]),
            "code": pd.Categorical([1, 2, 1, None]),
            "signup": pd.date_range("2024-01-01", periods=4, tz="UTC"),
            "target": [0, 1, 0, 1],
        },
        index=[10, 20, 30, 40],
    )
    logs: list[str] = []
    out, cols = engineer(
        df,
        [FeatureGroupSpec(name="all", kind="raw")],
        time_column=None,
        entity_column=None,
        exclude={"target"},
        log=logs.append,
    )
    assert cols.numeric == ["age", "income", "member", "opt_in"]
    assert cols.categorical == ["grade", "city", "code"]
    assert cols.target_encoded == []
    assert "signup" not in out.columns and any("signup" in m for m in logs)
    assert out["member"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert out["opt_in"].isna().tolist() == [False, True, False, False]
    assert all(out[c].dtype == np.float64 for c in cols.numeric)
    assert out["grade"].isna().tolist() == [False, True, False, False]
    assert out["city"].tolist()[:2] == ["x", "y"] and pd.isna(out["city"].iloc[2])
    assert out["code"].tolist()[:3] == ["1", "2", "1"] and pd.isna(out["code"].iloc[3])
    assert all(pd.api.types.is_string_dtype(out[c].dtype) for c in cols.categorical)
    assert out.index.tolist() == [10, 20, 30, 40]

    picked, cols2 = engineer(
        df,
        [FeatureGroupSpec(name="some", kind="raw", columns=["grade", "income"])],
        time_column=None,
        entity_column=None,
        exclude={"target"},
    )
    assert list(picked.columns) == ["grade", "income"] and cols2.numeric == ["income"]
    with pytest.raises(ValueError, match="excluded"):
        engineer(df, [FeatureGroupSpec(name="bad", kind="raw", columns=["target"])], time_column=None,
                 entity_column=None, exclude={"target"})  # fmt: skip
    with pytest.raises(ValueError, match="not in the data"):
        engineer(df, [FeatureGroupSpec(name="bad", kind="raw", columns=["nope"])], time_column=None,
                 entity_column=None, exclude=())  # fmt: skip


def test_interactions_names_and_values() -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b"],
            "x": [1.0, 2.0],
            "y": [3, 4],
            "z": [0.5, np.nan],
            "w": [1, 1],
            "v": [2, 2],
            "u": [9, 9],
            "t": [7, 7],
        }
    )
    out, cols = engineer(
        df,
        [FeatureGroupSpec(name="ix", kind="interactions", columns=["x", "y", "z"])],
        time_column=None,
        entity_column=None,
        exclude=(),
    )
    assert cols.numeric == ["x_x_y", "x_x_z", "y_x_z"]
    assert out["x_x_y"].tolist() == [3.0, 8.0]
    assert out["y_x_z"].iloc[0] == 1.5 and np.isnan(out["y_x_z"].iloc[1])
    # no columns: the first five numeric columns not excluded, in column order
    auto, auto_cols = engineer(
        df, [FeatureGroupSpec(name="ix", kind="interactions")], time_column=None, entity_column=None, exclude={"y"}
    )
    assert auto_cols.numeric[:4] == ["x_x_z", "x_x_w", "x_x_v", "x_x_u"] and len(auto_cols.numeric) == 10
    assert not any(n.endswith("_x_t") or n.startswith("t_x_") for n in auto_cols.numeric)
    assert auto["w_x_u"].tolist() == [9.0, 9.0]
    with pytest.raises(ValueError, match="not numeric"):
        engineer(df, [FeatureGroupSpec(name="ix", kind="interactions", columns=["id", "x"])], time_column=None,
                 entity_column=None, exclude=())  # fmt: skip


def test_feature_columns_round_trip() -> None:
    cols = FeatureColumns(numeric=["a", "b"], categorical=["c"], target_encoded=["te_d"])
    assert cols.all() == ["a", "b", "c", "te_d"]
    assert FeatureColumns.from_dict(cols.to_dict()) == cols
    assert FeatureColumns.from_dict({"numeric": ["a"]}) == FeatureColumns(
        numeric=["a"], categorical=[], target_encoded=[]
    )


def test_duplicate_feature_names_are_refused() -> None:
    df = pd.DataFrame({"vel_cnt_1h": [1.0], "card": ["a"], "ts": [T0]})
    groups = [
        FeatureGroupSpec(name="raw", kind="raw", columns=["vel_cnt_1h"]),
        FeatureGroupSpec(name="v", kind="velocity", params={"windows": ["1h"]}),
    ]
    with pytest.raises(ValueError, match="produced twice"):
        engineer(df, groups, time_column="ts", entity_column="card", exclude=())
    with pytest.raises(ValueError, match="time_column"):
        engineer(df, groups[1:], time_column=None, entity_column="card", exclude=())


def _train_test() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 400
    merchants = rng.choice([f"m{i}" for i in range(12)], n)
    y = pd.Series((rng.random(n) < np.where(np.isin(merchants, ["m1", "m2"]), 0.6, 0.05)).astype(int))
    X = pd.DataFrame(
        {
            "amount": rng.gamma(2, 30, n),
            "vel_cnt_1h": rng.integers(0, 3, n).astype(float),
            "channel": pd.Series(rng.choice(["pos", "ecom", "atm"], n), dtype="str"),
            "te_merchant_id": pd.Series(merchants, dtype="str"),
        }
    )
    X.loc[::17, "amount"] = np.nan
    X.loc[::13, "channel"] = np.nan
    X.loc[::19, "te_merchant_id"] = np.nan
    test = pd.DataFrame(
        {
            "amount": [np.nan, 10.0, 20.0],
            "vel_cnt_1h": [1.0, np.nan, 0.0],
            "channel": pd.Series(["pos", "never_seen", None], dtype="str"),
            "te_merchant_id": pd.Series(["m1", "brand_new", None], dtype="str"),
        }
    )
    return X, y, test


def test_preprocessor_fit_transform_then_transform() -> None:
    X, y, test = _train_test()
    cols = FeatureColumns(numeric=["amount", "vel_cnt_1h"], categorical=["channel"], target_encoded=["te_merchant_id"])
    pre = make_preprocessor(cols, problem_type="binary_classification", seed=1)
    Xt = pre.fit_transform(X, y)
    Xs = pre.transform(test)
    names = list(pre.get_feature_names_out())
    assert Xt.dtype == np.float32 and Xs.dtype == np.float32
    assert Xt.shape == (len(X), len(names)) and Xs.shape == (3, len(names))
    assert names[:2] == ["amount", "vel_cnt_1h"] and names[-1] == "te_merchant_id"
    assert any(n.startswith("channel_") for n in names)
    assert np.isfinite(Xt).all() and np.isfinite(Xs).all()
    # scaled numeric training columns
    assert Xt[:, 0].mean() == pytest.approx(0.0, abs=1e-5) and Xt[:, 0].std() == pytest.approx(1.0, abs=1e-3)
    # an unseen merchant gets the global target mean
    te = pre.named_transformers_["target_encoded"].named_steps["target"]
    assert Xs[1, -1] == pytest.approx(te.target_mean_, rel=1e-6)
    # the encoding separates risky merchants
    assert Xs[0, -1] > te.target_mean_
    # picklable (the float32 cast is a module-level function)
    again = pickle.loads(pickle.dumps(pre))
    np.testing.assert_array_equal(again.transform(test), Xs)


def test_target_encoder_is_out_of_fold_on_train() -> None:
    X, y, _ = _train_test()
    cols = FeatureColumns(numeric=[], categorical=[], target_encoded=["te_merchant_id"])
    oof = make_preprocessor(cols, problem_type="binary_classification", seed=3).fit_transform(X, y)
    full = make_preprocessor(cols, problem_type="binary_classification", seed=3).fit(X, y).transform(X)
    assert oof.shape == full.shape == (len(X), 1)
    assert not np.allclose(oof, full)
    # deterministic per seed
    again = make_preprocessor(cols, problem_type="binary_classification", seed=3).fit_transform(X, y)
    np.testing.assert_array_equal(oof, again)


def test_preprocessor_regression_and_single_type() -> None:
    X, _, test = _train_test()
    y = pd.Series(np.random.default_rng(2).normal(size=len(X)))
    cols = FeatureColumns(numeric=["amount"], categorical=[], target_encoded=["te_merchant_id"])
    pre = make_preprocessor(cols, problem_type="regression", scale=False)
    Xt = pre.fit_transform(X, y)
    assert Xt.dtype == np.float32 and list(pre.get_feature_names_out()) == ["amount", "te_merchant_id"]
    assert pre.transform(test).shape == (3, 2)
    only_cat = make_preprocessor(FeatureColumns([], ["channel"], []), problem_type="binary_classification")
    out = only_cat.fit_transform(X, (X.index % 2).to_numpy())
    assert out.dtype == np.float32 and set(np.unique(out)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="at least one"):
        make_preprocessor(FeatureColumns([], [], []), problem_type="regression")
    with pytest.raises(ValueError, match="problem_type"):
        make_preprocessor(cols, problem_type="ranking")


def test_engineered_fraud_frame_goes_through_preprocessor() -> None:
    spec = load_spec("include/problems/card_fraud.yaml")
    rng = np.random.default_rng(4)
    n = 600
    df = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "ts": (T0 + pd.to_timedelta(np.sort(rng.integers(0, 10 * 86400, n)), unit="s")).astype(
                "datetime64[us, UTC]"
            ),
            "card_number": pd.Series(rng.choice([f"{i:08x}" for i in range(60)], n), dtype="str"),
            "merchant_id": pd.Series(rng.choice([f"m{i}" for i in range(30)], n), dtype="str"),
            "merchant_category": pd.Categorical(rng.choice(["fuel", "grocery", "travel"], n)),
            "amount": rng.gamma(2, 30, n),
            "channel": pd.Categorical(rng.choice(["pos", "ecom"], n)),
            "country": pd.Categorical(rng.choice(["DE", "FR", "US"], n)),
            "is_fraud": (rng.random(n) < 0.1).astype(int),
        }
    )
    out, cols = engineer(
        df,
        spec.features.groups,
        time_column="ts",
        entity_column="card_number",
        exclude={"transaction_id", "ts", "card_number", "is_fraud"},
    )
    pre = make_preprocessor(cols, problem_type=spec.problem.type, seed=spec.training.seed)
    train, test = out.iloc[:500], out.iloc[500:]
    Xt = pre.fit_transform(train, df.is_fraud.iloc[:500])
    Xs = pre.transform(test)
    assert Xt.dtype == np.float32 and Xs.shape[1] == Xt.shape[1] == len(pre.get_feature_names_out())
    assert np.isfinite(Xt).all() and np.isfinite(Xs).all()


def _sklearn_reference(columns: FeatureColumns, *, problem_type: str, seed: int, min_frequency, max_categories):
    """The preprocessor as plain sklearn builds it (SimpleImputer + OneHotEncoder on strings): the
    vectorised steps of make_preprocessor must give exactly its output and names."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler, TargetEncoder

    fill = ("impute", SimpleImputer(strategy="constant", fill_value="missing"))
    onehot = OneHotEncoder(
        handle_unknown="infrequent_if_exist",
        min_frequency=min_frequency,
        max_categories=max_categories,
        sparse_output=False,
        dtype=np.float32,
    )
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return ColumnTransformer(
        [
            (
                "numeric",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                columns.numeric,
            ),
            ("categorical", Pipeline([fill, ("onehot", onehot)]), columns.categorical),
            (
                "target_encoded",
                Pipeline([fill, ("target", TargetEncoder(target_type="binary", cv=cv))]),
                columns.target_encoded,
            ),
        ],
        remainder="drop",
        sparse_threshold=0.0,
        verbose_feature_names_out=False,
    )


@pytest.mark.parametrize(("min_frequency", "max_categories"), [(20, 30), (5, 4), (0.05, 30), (1, 2)])
def test_preprocessor_equals_plain_sklearn_on_strings(min_frequency, max_categories) -> None:
    rng = np.random.default_rng(min_frequency if isinstance(min_frequency, int) else 99)
    n = 3000
    # skewed categories: frequent ones, rare ones (infrequent), the literal "missing", NaN
    cities = np.array(["Berlin", "Köln", "Zürich", "amsterdam", "missing", "Ōsaka", "rare1", "rare2", "Paris"])
    weights = np.array([30, 20, 15, 10, 3, 5, 0.2, 0.1, 16.7])
    X = pd.DataFrame(
        {
            "amount": rng.gamma(2, 30, n),
            "empty": np.full(n, np.nan),  # all missing: imputed with 0
            "ties": rng.integers(0, 4, n).astype(float),  # medians of even counts average two values
            "city": pd.Series(rng.choice(cities, n, p=weights / weights.sum()), dtype="str"),
            "channel": pd.Series(rng.choice(["pos", "ecom", "atm", " pos"], n), dtype="str"),
            "te_merchant_id": pd.Series(rng.choice([f"m{i}" for i in range(80)], n), dtype="str"),
        }
    )
    X.loc[rng.random(n) < 0.1, "amount"] = np.nan
    X.loc[rng.random(n) < 0.05, "city"] = np.nan
    X.loc[rng.random(n) < 0.05, "te_merchant_id"] = np.nan
    y = (rng.random(n) < 0.1).astype(int)
    test = X.sample(500, random_state=1).reset_index(drop=True)
    test.loc[:20, "city"] = "never_seen"
    test.loc[21:40, "te_merchant_id"] = "brand_new"
    test.loc[41:60, "channel"] = np.nan  # "missing" was not a training category: unknown
    cols = FeatureColumns(
        numeric=["amount", "empty", "ties"], categorical=["city", "channel"], target_encoded=["te_merchant_id"]
    )
    ours = make_preprocessor(
        cols, problem_type="binary_classification", seed=5, min_frequency=min_frequency, max_categories=max_categories
    )
    ref = _sklearn_reference(
        cols, problem_type="binary_classification", seed=5, min_frequency=min_frequency, max_categories=max_categories
    )
    np.testing.assert_array_equal(ours.fit_transform(X, y), ref.fit_transform(X, y).astype(np.float32))
    np.testing.assert_array_equal(ours.transform(test), ref.transform(test).astype(np.float32))
    assert list(ours.get_feature_names_out()) == list(ref.get_feature_names_out())
    again = pickle.loads(pickle.dumps(ours))
    np.testing.assert_array_equal(again.transform(test), ours.transform(test))


def test_median_imputer_is_simple_imputers_median() -> None:
    from sklearn.impute import SimpleImputer

    X = pd.DataFrame({"a": [1.0, np.nan, 3.0, 10.0], "b": [np.nan] * 4, "c": [2.0, 2.0, np.nan, 5.0]})
    imputer = F._MedianImputer().fit(X)
    np.testing.assert_array_equal(imputer.statistics_, [3.0, 0.0, 2.0])
    ref = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
    np.testing.assert_array_equal(imputer.transform(X), ref.transform(X))
    assert list(imputer.get_feature_names_out()) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="infinity"):
        F._MedianImputer().fit(X.assign(a=[1.0, np.inf, 2.0, 3.0]))
    with pytest.raises(ValueError, match="features"):
        imputer.transform(X[["a", "b"]])


@pytest.mark.parametrize("n", [0, 1, 2, 50, 1000])
def test_run_starts_equal_searchsorted_left(n: int) -> None:
    a = np.sort(np.random.default_rng(n).integers(0, 9, n))
    np.testing.assert_array_equal(F._run_starts(a), np.searchsorted(a, a, side="left"))


def test_category_codes_follow_sorted_training_values() -> None:
    X = pd.DataFrame({"c": pd.Series(["b", None, "a", "b"], dtype="str")})
    codes = F._CategoryCodes("missing")
    np.testing.assert_array_equal(codes.fit_transform(X)[:, 0], [1, 2, 0, 1])  # a, b, missing
    assert codes.categories_[0].tolist() == ["a", "b", "missing"]
    test = pd.DataFrame({"c": pd.Series(["a", "zz", None], dtype="str")})
    np.testing.assert_array_equal(codes.transform(test)[:, 0], [0, -1, 2])  # unseen -> -1
    np.testing.assert_array_equal(F._CategoryCodes("missing").fit(X).transform(X), codes.transform(X))


def test_apply_resampling_oversamples_minority_deterministically() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3)).astype(np.float32)
    y = (np.arange(1000) < 20).astype(int)  # 2% positives
    X2, y2 = apply_resampling(X, y, method="oversample", seed=7, ratio=0.1)
    assert y2.sum() == 98 and (y2 == 0).sum() == 980  # ceil(0.1 * 980) positives, negatives untouched
    assert len(y2) > len(y) and y2.mean() > y.mean()
    np.testing.assert_array_equal(X2[:1000], X)  # originals first, in order
    np.testing.assert_array_equal(y2[:1000], y)
    pos_rows = {tuple(r) for r in X[y == 1]}
    assert all(tuple(r) in pos_rows for r in X2[1000:])  # duplicates of minority rows only
    X3, y3 = apply_resampling(X, y, method="oversample", seed=7, ratio=0.1)
    np.testing.assert_array_equal(X2, X3)
    np.testing.assert_array_equal(y2, y3)
    X4, _ = apply_resampling(X, y, method="oversample", seed=8, ratio=0.1)
    assert not np.array_equal(X2, X4)
    # never shrinks: already balanced enough -> unchanged
    Xb, yb = apply_resampling(X, y, method="oversample", seed=7, ratio=0.01)
    assert Xb is X and yb is y
    Xn, yn = apply_resampling(X, y, method="none", seed=7)
    assert Xn is X and yn is y
    with pytest.raises(ValueError, match="method"):
        apply_resampling(X, y, method="smote", seed=7)
    with pytest.raises(ValueError, match="continuous"):
        apply_resampling(X, rng.normal(size=1000), method="oversample", seed=7)


def test_computing_features_does_not_import_sklearn_and_old_pickle_names_resolve() -> None:
    """engineer() runs without sklearn loaded (the preprocessor lives in include.lifecycle.preprocess);
    preprocessors pickled when the classes lived in ``features`` still load."""
    import subprocess
    import sys

    from include.lifecycle import preprocess
    from include.lifecycle.spec import PROJECT_ROOT

    code = (
        "import sys; import include.lifecycle.features as F; "
        "assert 'sklearn' not in sys.modules, 'features imported sklearn'; "
        "F.make_preprocessor; assert 'sklearn' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True, timeout=120)
    for name in ("_MedianImputer", "_CategoryCodes", "_OneHot", "make_preprocessor", "_to_float32"):
        old = pickle.loads(f"cinclude.lifecycle.features\n{name}\n.".encode())  # a global as old pickles name it
        assert old is getattr(preprocess, name)
    with pytest.raises(AttributeError):
        F.no_such_name  # noqa: B018


@pytest.mark.parametrize(("min_frequency", "max_categories"), [(20, 30), (5, 4), (0.05, 30), (1, 2)])
def test_one_hot_direct_encoding_equals_sklearn_encoder(min_frequency, max_categories) -> None:
    """Values all seen in training take the direct path; it must be the encoder's own output."""
    rng = np.random.default_rng(3)
    n = 4000
    values = np.array(["a", "b", "c", "d", "e", "rare1", "rare2", "rare3"])
    weights = np.array([40, 25, 15, 10, 9, 0.5, 0.3, 0.2])
    X = pd.DataFrame(
        {
            "x": pd.Series(rng.choice(values, n, p=weights / weights.sum()), dtype="str"),
            "y": pd.Series(rng.choice(["p", "q", "r"], n), dtype="str"),
            "z": pd.Series(rng.choice(["only"], n), dtype="str"),
        }
    )
    X.loc[rng.random(n) < 0.03, "x"] = np.nan
    onehot = F._OneHot(min_frequency=min_frequency, max_categories=max_categories)
    fitted = onehot.fit_transform(X)
    codes = onehot.codes_.transform(X)
    assert onehot._positions() is not None
    np.testing.assert_array_equal(fitted, onehot.encoder_.transform(codes))
    assert fitted.dtype == np.float32 and fitted.flags.c_contiguous
    test = X.sample(700, random_state=2).reset_index(drop=True)
    np.testing.assert_array_equal(onehot.transform(test), onehot.encoder_.transform(onehot.codes_.transform(test)))
    np.testing.assert_array_equal(
        F._OneHot(min_frequency=min_frequency, max_categories=max_categories).fit(X).transform(X), fitted
    )
    unseen = test.assign(x=test["x"].where(test.index > 10, "never_seen"))  # sklearn's own path
    np.testing.assert_array_equal(onehot.transform(unseen), onehot.encoder_.transform(onehot.codes_.transform(unseen)))


def test_median_imputer_fit_transform_equals_fit_then_transform() -> None:
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"a": rng.normal(size=500), "b": np.nan, "c": rng.integers(0, 3, 500).astype(float)})
    X.loc[rng.random(500) < 0.2, "a"] = np.nan
    one = F._MedianImputer()
    np.testing.assert_array_equal(one.fit_transform(X), F._MedianImputer().fit(X).transform(X))
    np.testing.assert_array_equal(one.statistics_, F._MedianImputer().fit(X).statistics_)
    with pytest.raises(ValueError, match="infinity"):
        F._MedianImputer().fit_transform(X.assign(a=np.inf))


def test_engineered_frame_shares_no_memory_with_the_input() -> None:
    df = pd.DataFrame(
        {
            "amount": np.array([1.0, 2.5, np.nan, 4.0]),
            "city": pd.Series(["a", "b", None, "a"], dtype="str"),
            "n": np.array([1, 2, 3, 4]),
        }
    )
    before = df.copy()
    feats, cols = engineer(
        df, [FeatureGroupSpec(name="raw", kind="raw")], time_column=None, entity_column=None, exclude=()
    )
    assert cols.numeric == ["amount", "n"] and cols.categorical == ["city"]
    assert not np.shares_memory(feats["amount"].to_numpy(), df["amount"].to_numpy())
    feats.loc[0, "amount"] = 99.0
    feats.loc[0, "city"] = "zz"
    pd.testing.assert_frame_equal(df, before)


# --- per-entity features computed by another engine (the Spark collect job) ---------------------------
def _precomputed(df: pd.DataFrame, frame: pd.DataFrame, groups=PER_CARD, **kw) -> F.EntityFeatures:
    """``frame`` as a file of precomputed features would carry it, read back through Parquet."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    kw = {"time_column": "ts", "entity_column": "card_number", "rows": len(frame), "engine": "test engine"} | kw
    table = pa.Table.from_pandas(frame, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(F.EntityFeatures.metadata(groups, **kw)), buf)
    return F.EntityFeatures.from_arrow(pq.read_table(io.BytesIO(buf.getvalue())))


def _engineer(df: pd.DataFrame, groups, precomputed=None, log=None):
    return engineer(
        df,
        groups,
        time_column="ts",
        entity_column="card_number",
        exclude={"transaction_id", "card_number", "is_fraud"},
        precomputed=precomputed,
        log=log,
    )


def test_precomputed_per_entity_groups_are_taken_and_the_others_computed() -> None:
    """A group found in the precomputed file (same definition, same time and entity columns) is
    taken from it, column for column in features.py's order; the others are computed here."""
    df = _tx(EDGE_ROWS)
    raw = FeatureGroupSpec(name="raw", kind="raw", columns=["amount"])
    groups = [raw, *PER_CARD]
    own, own_cols = _engineer(df, groups)
    per_entity = own.drop(columns=["amount"])
    marked = per_entity + 1000.0  # values no computation here gives: they must come through
    lines: list[str] = []
    out, cols = _engineer(df, groups, _precomputed(df, marked[per_entity.columns[::-1]]), lines.append)
    assert list(out.columns) == list(own.columns) and cols.to_dict() == own_cols.to_dict()
    pd.testing.assert_frame_equal(out[per_entity.columns], marked, check_names=False)
    pd.testing.assert_series_equal(out["amount"], own["amount"])
    assert sum("taken as computed by test engine" in line for line in lines) == 2
    # only the velocity group precomputed: history is computed here
    velocity_only = _precomputed(df, marked[[c for c in marked.columns if c.startswith("vel_")]], [VELOCITY])
    out, _ = _engineer(df, groups, velocity_only)
    hist = [c for c in own.columns if c.startswith("hist_")]
    pd.testing.assert_frame_equal(out[hist], own[hist])
    assert (out["vel_cnt_1h"] == own["vel_cnt_1h"] + 1000.0).all()
    assert velocity_only.taken(df, groups, "ts", "card_number") == {"card_velocity": F.per_entity_names(df, VELOCITY)}


@pytest.mark.parametrize(
    "change",
    ["other windows", "other entity column", "other time column", "a column missing"],
)
def test_precomputed_features_of_another_definition_are_not_taken(change: str) -> None:
    """Features computed for another group definition, entity or time column are ignored: the group
    is computed here (the file's features would silently be other features)."""
    df = _tx(EDGE_ROWS)
    own, _ = _engineer(df, PER_CARD)
    groups, kw, frame = PER_CARD, {}, own + 1000.0
    if change == "other windows":
        groups = [VELOCITY.model_copy(update={"params": {"windows": ["1h", "7d"]}}), HISTORY]
    elif change == "other entity column":
        kw = {"entity_column": "merchant_id"}
    elif change == "other time column":
        kw = {"time_column": "booked_at"}
    else:
        frame = frame.drop(columns=["hist_new_country"])
    pre = _precomputed(df, frame, groups, **kw)
    out, _ = _engineer(df, PER_CARD, pre)
    if change in ("other windows", "a column missing"):  # the other group still matches
        same = HISTORY if change == "other windows" else VELOCITY
        taken = F.per_entity_names(df, same)
        pd.testing.assert_frame_equal(out[taken], own[taken] + 1000.0)
        computed = [c for c in own.columns if c not in taken]
        pd.testing.assert_frame_equal(out[computed], own[computed])
    else:
        pd.testing.assert_frame_equal(out, own)


def test_precomputed_features_of_other_rows_are_refused() -> None:
    """A file with another number of rows is not this data set's: a clear error, never a misaligned
    feature; a file without the metadata is not a file of precomputed features."""
    import pyarrow as pa

    df = _tx(EDGE_ROWS)
    own, _ = _engineer(df, PER_CARD)
    pre = _precomputed(df.iloc[:-1], own.iloc[:-1])
    with pytest.raises(ValueError, match=r"have 11 rows, the data set 12: they are not this data set's"):
        _engineer(df, PER_CARD, pre)
    with pytest.raises(ValueError, match="not a file of precomputed per-entity features"):
        F.EntityFeatures.from_arrow(pa.Table.from_pandas(own))
    table = pa.Table.from_pandas(own, preserve_index=False)
    meta = F.EntityFeatures.metadata(PER_CARD, time_column="ts", entity_column="card_number", rows=99, engine="x")
    with pytest.raises(ValueError, match="12 rows, the file says 99"):
        F.EntityFeatures.from_arrow(table.replace_schema_metadata(meta))
