"""Unit tests of section 5, select and train: include/lifecycle/train.py (trial planning, model
families, safe model files, best trial) and the SageMaker script-mode entry point
include/jobs/train.py, run in-process and as a real subprocess with the SM_* contract."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import average_precision_score

from include.jobs import train as train_job
from include.lifecycle.decide import TUNE, initial_plan, next_plan
from include.lifecycle.evaluate_model import goal_metric
from include.lifecycle.models import (
    AMOUNT_COL,
    TARGET_COL,
    best_trial,
    build_model,
    fit_and_predict,
    fit_model,
    load_model,
    plan_trials,
    predict,
    save_model,
)
from include.lifecycle.spec import PROJECT_ROOT, Spec, load_spec, parse_spec
from include.lifecycle.tuning import WIDE_SEARCH

CARD_FRAUD = PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml"
N_FEATURES = 6


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(CARD_FRAUD)


# --------------------------------------------------------------------------------------
# synthetic, separable data in the channel format of the job
# --------------------------------------------------------------------------------------
def _binary_frame(n: int, seed: int) -> pd.DataFrame:
    """Feature columns, ``__target__`` (about 10% positives, mostly determined by f0 and f1)
    and ``__amount__``, as feature_engineering writes them."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype("float32")
    logit = 3.0 * X[:, 0] + 2.0 * X[:, 1] - 5.0 + rng.normal(scale=0.5, size=n)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(N_FEATURES)])
    df[TARGET_COL] = (logit > 0).astype("int8")
    df[AMOUNT_COL] = rng.gamma(2.0, 50.0, size=n)
    return df


def _regression_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype("float32")
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(N_FEATURES)])
    df[TARGET_COL] = 10.0 * X[:, 0] - 4.0 * X[:, 2] + 100.0 + rng.normal(scale=1.0, size=n)
    return df


def _sm_env(tmp: Path, train: pd.DataFrame, valid: pd.DataFrame, *, parts: int = 1) -> dict[str, str]:
    """Channel folders holding Parquet parts, and empty model/output folders: the SM_* contract."""
    env = {}
    for name, df in (("train", train), ("validation", valid)):
        folder = tmp / "input" / "data" / name
        folder.mkdir(parents=True)
        for k, part in enumerate(np.array_split(np.arange(len(df)), parts)):
            df.iloc[part].to_parquet(folder / f"part-{k}.parquet", index=False)
        env[f"SM_CHANNEL_{name.upper()}"] = str(folder)
    env["SM_MODEL_DIR"] = str(tmp / "model")
    env["SM_OUTPUT_DATA_DIR"] = str(tmp / "output")
    return env


@pytest.fixture(scope="module")
def binary_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _binary_frame(1200, seed=1), _binary_frame(600, seed=2)


# --------------------------------------------------------------------------------------
# plan_trials
# --------------------------------------------------------------------------------------
def test_plan_trials_starts_each_family_with_the_spec_defaults(spec: Spec) -> None:
    trials = plan_trials(spec, families=["logistic", "xgboost"], trials_per_family=2, wide=False, round_no=1)
    assert [t["trial_id"] for t in trials] == ["r1-logistic-0", "r1-xgboost-0", "r1-logistic-1", "r1-xgboost-1"]
    cands = {c.family: c for c in spec.training.candidates}
    for t in trials:
        cand = cands[t["family"]]
        if t["trial_id"].endswith("-0"):
            assert t["params"] == cand.params
        for k, v in t["params"].items():  # every value is a default or from the search grid
            assert v == cand.params.get(k) or v in cand.search.get(k, []), (t, k)
    assert trials[0]["params"] != trials[2]["params"]
    json.dumps(trials)  # small JSON: goes through XCom


def test_plan_trials_is_deterministic_and_varies_by_round(spec: Spec) -> None:
    kw: dict[str, Any] = {"families": ["random_forest", "xgboost"], "trials_per_family": 4, "wide": False}
    a = plan_trials(spec, round_no=2, **kw)
    assert a == plan_trials(spec, round_no=2, **kw)
    others = [plan_trials(spec, round_no=r, **kw) for r in (3, 4, 5)]
    assert any([t["params"] for t in o] != [t["params"] for t in a] for o in others)
    assert all(t["trial_id"].startswith("r2-") for t in a)


def test_plan_trials_params_are_unique_per_family(spec: Spec) -> None:
    trials = plan_trials(spec, families=["logistic"], trials_per_family=10, wide=False, round_no=1)
    # C in {0.1, 1.0, 10.0} with the default C=1.0: only three distinct trials exist.
    assert sorted(t["params"]["C"] for t in trials) == [0.1, 1.0, 10.0]


def test_plan_trials_skips_families_not_asked_for_and_respects_the_limit(spec: Spec) -> None:
    fams = ["logistic", "random_forest", "xgboost"]
    only = plan_trials(spec, families=["xgboost"], trials_per_family=3, wide=False, round_no=1)
    assert {t["family"] for t in only} == {"xgboost"} and len(only) == 3
    assert plan_trials(spec, families=[], trials_per_family=3, wide=False, round_no=1) == []
    trials = plan_trials(spec, families=fams, trials_per_family=6, wide=False, round_no=1)
    assert len(trials) == spec.training.max_trials == 12
    assert len(plan_trials(spec, families=fams, trials_per_family=6, wide=False, round_no=1, max_trials=5)) == 5


@pytest.mark.parametrize("wide", [False, True])
def test_the_trial_limit_never_drops_a_family(spec: Spec, wide: bool) -> None:
    """Tuning doubles the trials per family up to max_trials; the cut to max_trials must still
    leave every family some trials (regression: xgboost, last in the spec, used to get none)."""
    plan = initial_plan(spec, dataset_rel="d.parquet", lookback_days=35)
    for _ in range(3):
        plan = next_plan(spec, plan, TUNE, "close to the goal")
        trials = plan_trials(
            spec,
            families=plan["families"],
            trials_per_family=plan["trials_per_family"],
            wide=wide,
            round_no=plan["round"],
        )
        counts = {f: sum(t["family"] == f for t in trials) for f in plan["families"]}
        assert len(trials) <= spec.training.max_trials
        assert min(counts.values()) >= min(3, plan["trials_per_family"]), counts
        assert max(counts.values()) - min(counts.values()) <= 2, counts
        assert len({t["trial_id"] for t in trials}) == len(trials)


def test_wide_search_draws_from_the_wider_grid(spec: Spec) -> None:
    trials = plan_trials(spec, families=["xgboost"], trials_per_family=12, wide=True, round_no=3, max_trials=50)
    cand = next(c for c in spec.training.candidates if c.family == "xgboost")
    extra_keys = set(WIDE_SEARCH["xgboost"]) - set(cand.search)
    assert any(set(t["params"]) & extra_keys for t in trials)
    for t in trials[1:]:
        for k, v in t["params"].items():
            allowed = {cand.params.get(k), *cand.search.get(k, []), *WIDE_SEARCH["xgboost"].get(k, [])}
            assert v in allowed, (k, v)
    narrow = plan_trials(spec, families=["xgboost"], trials_per_family=12, wide=False, round_no=3, max_trials=50)
    assert not any(set(t["params"]) - set(cand.params) - set(cand.search) for t in narrow)


def test_wide_random_forest_grid_may_hold_none(spec: Spec) -> None:
    # max_depth None (unbounded trees) sorts after numbers instead of failing to compare.
    trials = plan_trials(spec, families=["random_forest"], trials_per_family=40, wide=True, round_no=1, max_trials=40)
    depths = {t["params"]["max_depth"] for t in trials}
    assert None in depths and len(trials) == 40


# --------------------------------------------------------------------------------------
# build_model
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "binary", "cls"),
    [
        ("logistic", True, LogisticRegression),
        ("linear", False, Ridge),
        ("random_forest", True, RandomForestClassifier),
        ("random_forest", False, RandomForestRegressor),
        ("xgboost", True, xgb.XGBClassifier),
        ("xgboost", False, xgb.XGBRegressor),
    ],
)
def test_build_model_for_each_family(family: str, binary: bool, cls: type) -> None:
    model = build_model(family, {}, binary=binary, seed=7, class_weight="balanced", pos_weight=9.0, n_jobs=1)
    assert type(model) is cls
    params = model.get_params()
    assert params["random_state"] == 7


def test_build_model_passes_hyper_parameters_and_class_weights() -> None:
    lr = build_model("logistic", {"C": 0.3}, binary=True, seed=1, class_weight="balanced")
    assert lr.C == 0.3 and lr.class_weight == "balanced"
    assert build_model("logistic", {}, binary=True, seed=1, class_weight="none").class_weight is None
    rf = build_model("random_forest", {"max_depth": 4}, binary=True, seed=1, class_weight="balanced", n_jobs=2)
    assert rf.max_depth == 4 and rf.class_weight == "balanced_subsample" and rf.n_jobs == 2
    xc = build_model("xgboost", {"max_depth": 3}, binary=True, seed=1, class_weight="balanced", pos_weight=19.0)
    assert xc.max_depth == 3 and xc.scale_pos_weight == 19.0 and xc.objective == "binary:logistic"
    unweighted = build_model("xgboost", {}, binary=True, seed=1, class_weight="none", pos_weight=19.0)
    assert unweighted.scale_pos_weight == 1.0
    xr = build_model("xgboost", {}, binary=False, seed=1, class_weight="balanced")
    assert xr.objective == "reg:squarederror"
    assert build_model("linear", {"alpha": 10.0}, binary=False, seed=1, class_weight="none").alpha == 10.0


def test_build_model_refuses_an_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown model family 'svm'"):
        build_model("svm", {}, binary=True, seed=1, class_weight="balanced")


# --------------------------------------------------------------------------------------
# save_model / load_model
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("family", "binary", "params"),
    [
        ("logistic", True, {"C": 1.0}),
        ("random_forest", True, {"n_estimators": 20, "max_depth": 4}),
        ("xgboost", True, {"n_estimators": 30, "max_depth": 3}),
        ("linear", False, {"alpha": 1.0}),
        ("random_forest", False, {"n_estimators": 20, "max_depth": 4}),
        ("xgboost", False, {"n_estimators": 30, "max_depth": 3}),
    ],
)
def test_save_and_load_round_trip(tmp_path: Path, family: str, binary: bool, params: dict[str, Any]) -> None:
    df = _binary_frame(400, seed=3) if binary else _regression_frame(400, seed=3)
    X = df[[f"f{i}" for i in range(N_FEATURES)]].to_numpy(dtype="float32")
    y = df[TARGET_COL].to_numpy()
    model = fit_model(build_model(family, params, binary=binary, seed=5, class_weight="balanced", n_jobs=1), X, y)
    files = save_model(model, family, tmp_path / "model")
    model_file = "model.ubj" if family == "xgboost" else "model.joblib"
    assert files == [model_file, "model_meta.json"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(files)
    meta = json.loads((tmp_path / "model" / "model_meta.json").read_text())
    assert meta == {"family": family, "class": type(model).__name__}
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(model)
    np.testing.assert_allclose(predict(loaded, X, binary=binary), predict(model, X, binary=binary), rtol=1e-6)


@pytest.mark.parametrize(
    ("family", "binary", "params"),
    [
        ("xgboost", True, {"n_estimators": 30, "max_depth": 3, "subsample": 0.8, "colsample_bytree": 0.7}),
        ("xgboost", False, {"n_estimators": 30, "max_depth": 3, "subsample": 0.8}),
        ("logistic", True, {"C": 1.0}),
        ("random_forest", False, {"n_estimators": 10, "max_depth": 4}),
    ],
)
def test_fit_and_predict_gives_the_model_and_scores_of_fit_then_predict(
    tmp_path: Path, family: str, binary: bool, params: dict[str, Any]
) -> None:
    """xgboost's training scores come from its prediction cache: the very numbers (bit for bit) and
    the very model file of fitting and then predicting the training rows again."""
    df = _binary_frame(500, seed=8) if binary else _regression_frame(500, seed=8)
    X = df[[f"f{i}" for i in range(N_FEATURES)]].to_numpy(dtype="float32")
    y = df[TARGET_COL].to_numpy()

    def model() -> Any:  # sklearn's forests sum their trees in thread order: one job keeps them exact
        n_jobs = 2 if family == "xgboost" else 1
        return build_model(
            family, params, binary=binary, seed=3, class_weight="balanced", pos_weight=4.0, n_jobs=n_jobs
        )

    reference = fit_model(model(), X, y)
    fitted = model()
    scores = fit_and_predict(fitted, X, y, binary=binary)
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, predict(reference, X, binary=binary))
    np.testing.assert_array_equal(predict(fitted, X, binary=binary), predict(reference, X, binary=binary))
    save_model(reference, family, tmp_path / "a")
    save_model(fitted, family, tmp_path / "b")
    if family == "xgboost":
        assert (tmp_path / "a" / "model.ubj").read_bytes() == (tmp_path / "b" / "model.ubj").read_bytes()
        # the estimator is left as it was built: no training callback, no patched method
        assert fitted.get_params()["callbacks"] is None
        assert "_create_dmatrix" not in vars(fitted)


def test_fit_and_predict_falls_back_to_predicting_when_xgboost_hides_its_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    df = _binary_frame(300, seed=9)
    X, y = df[[f"f{i}" for i in range(N_FEATURES)]].to_numpy(dtype="float32"), df[TARGET_COL].to_numpy()
    wrap = xgb.sklearn._wrap_evaluation_matrices

    def other_xgboost(**kwargs: Any) -> Any:  # builds its matrices without going through _create_dmatrix
        return wrap(**{**kwargs, "create_dmatrix": lambda ref, **kw: xgb.QuantileDMatrix(ref=ref, **kw)})

    monkeypatch.setattr(xgb.sklearn, "_wrap_evaluation_matrices", other_xgboost)
    model = build_model("xgboost", {"n_estimators": 10}, binary=True, seed=1, class_weight="none", n_jobs=1)
    fits = []
    fit = xgb.XGBClassifier.fit

    def counted_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        fits.append(1)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(xgb.XGBClassifier, "fit", counted_fit)
    scores = fit_and_predict(model, X, y, binary=True)
    assert fits == [1]  # fitted once, then predicted
    np.testing.assert_array_equal(scores, predict(model, X, binary=True))


def test_xgboost_is_saved_in_its_own_format_not_a_pickle(tmp_path: Path) -> None:
    df = _binary_frame(300, seed=4)
    X, y = df.drop(columns=[TARGET_COL, AMOUNT_COL]).to_numpy("float32"), df[TARGET_COL].to_numpy()
    model = fit_model(build_model("xgboost", {"n_estimators": 10}, binary=True, seed=1, class_weight="none"), X, y)
    save_model(model, "xgboost", tmp_path)
    raw = (tmp_path / "model.ubj").read_bytes()
    assert raw[:1] == b"{"  # a UBJSON object
    assert not raw.startswith(b"\x80")  # not a pickle protocol header
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(raw)
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))  # readable by plain xgboost, no Python objects involved
    assert booster.num_features() == N_FEATURES


# --------------------------------------------------------------------------------------
# best_trial
# --------------------------------------------------------------------------------------
def _r(trial_id: str, family: str, score: float | None) -> dict[str, Any]:
    return {"trial_id": trial_id, "family": family, "validation_score": score}


def test_best_trial_higher_and_lower_is_better() -> None:
    results = [_r("a", "xgboost", 0.7), _r("b", "logistic", 0.9), _r("c", "random_forest", 0.8)]
    assert best_trial(results, higher_is_better=True)["trial_id"] == "b"
    assert best_trial(results, higher_is_better=False)["trial_id"] == "a"


def test_best_trial_ties_go_to_the_simpler_family_then_the_id() -> None:
    results = [_r("r1-xgboost-0", "xgboost", 0.8), _r("r1-random_forest-0", "random_forest", 0.8)]
    assert best_trial(results, higher_is_better=True)["family"] == "xgboost"
    results.append(_r("r1-logistic-1", "logistic", 0.8))
    results.append(_r("r1-logistic-0", "logistic", 0.8))
    assert best_trial(results, higher_is_better=True)["trial_id"] == "r1-logistic-0"


def test_best_trial_ignores_failed_trials() -> None:
    results = [_r("a", "logistic", None), _r("b", "xgboost", 0.1), {"trial_id": "c", "family": "logistic"}]
    assert best_trial(results, higher_is_better=True)["trial_id"] == "b"
    with pytest.raises(ValueError, match="no trial produced a validation score"):
        best_trial([_r("a", "logistic", None)], higher_is_better=True)


# --------------------------------------------------------------------------------------
# include/jobs/train.py: the script-mode contract
# --------------------------------------------------------------------------------------
def test_parse_args_splits_fixed_arguments_from_hyper_parameters() -> None:
    args, params = train_job.parse_args(
        [
            "--family", "xgboost", "--trial_id", "r1-xgboost-0", "--max-alert-rate", "0.005",
            "--max_depth", "5", "--learning-rate", "0.1", "--grow_policy", "lossguide",
            "--max_leaves", "null", "--booster", '"gbtree"',
        ]
    )  # fmt: skip
    assert (args.family, args.trial_id, args.max_alert_rate) == ("xgboost", "r1-xgboost-0", 0.005)
    assert (args.seed, args.class_weight, args.resample) == (42, "balanced", "none")
    assert params == {
        "max_depth": 5,
        "learning_rate": 0.1,
        "grow_policy": "lossguide",
        "max_leaves": None,
        "booster": "gbtree",
    }


def test_hyper_parameters_are_not_taken_for_abbreviated_fixed_options() -> None:
    args, params = train_job.parse_args(["--family", "xgboost", "--metr", "0.5", "--max_alert", "3"])
    assert (args.metric, args.max_alert_rate) == ("auprc", None)
    assert params == {"metr": 0.5, "max_alert": 3}


@pytest.mark.parametrize(
    "argv",
    [
        ["--family", "logistic", "--C"],  # a name without a value
        ["--family", "logistic", "C", "1.0"],  # a value without --
    ],
)
def test_parse_args_refuses_malformed_hyper_parameters(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        train_job.parse_args(argv)


def _check_written(env: dict[str, str], result: dict[str, Any], model_file: str) -> None:
    model_dir, out_dir = Path(env["SM_MODEL_DIR"]), Path(env["SM_OUTPUT_DATA_DIR"])
    assert (model_dir / model_file).stat().st_size > 0
    assert json.loads((model_dir / "model_meta.json").read_text())["family"] == result["family"]
    assert result["model_files"] == [model_file, "model_meta.json"]
    written = json.loads((out_dir / "metrics.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert (out_dir / "metrics.json").stat().st_size < 4096  # a small result, not data


@pytest.mark.parametrize(
    ("family", "hyper", "model_file"),
    [
        ("logistic", ["--C", "1.0"], "model.joblib"),
        ("random_forest", ["--n_estimators", "40", "--max_depth", "6", "--min_samples_leaf", "2"], "model.joblib"),
        ("xgboost", ["--n_estimators", "60", "--max_depth", "3", "--learning_rate", "0.2"], "model.ubj"),
    ],
)
def test_main_trains_a_binary_model_better_than_chance(
    tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame], family: str, hyper: list[str], model_file: str
) -> None:
    train, valid = binary_data
    env = _sm_env(tmp_path, train, valid)
    logs: list[str] = []
    argv = ["--family", family, "--trial_id", f"t-{family}", "--metric", "auprc", "--seed", "3", *hyper]
    result = train_job.main(argv, env=env, log=logs.append)

    _check_written(env, result, model_file)
    assert result["trial_id"] == f"t-{family}" and result["family"] == family and result["metric"] == "auprc"
    assert result["params"] == {h[2:]: json.loads(v) for h, v in zip(hyper[::2], hyper[1::2], strict=True)}
    assert (result["n_train"], result["n_validation"], result["n_features"]) == (1200, 600, N_FEATURES)
    assert result["n_fit"] == 1200
    base_rate = float(valid[TARGET_COL].mean())
    assert 0.03 < base_rate < 0.3
    assert result["validation_score"] > max(0.7, 3 * base_rate)  # chance AUPRC is the base rate
    assert result["train_score"] >= result["validation_score"] - 0.1
    assert any("fitting" in m for m in logs) and any("validation auprc=" in m for m in logs)

    # The saved model reproduces the reported validation score.
    model = load_model(env["SM_MODEL_DIR"])
    X_va = valid.drop(columns=[TARGET_COL, AMOUNT_COL]).to_numpy(dtype="float32")
    scores = predict(model, X_va, binary=True)
    assert average_precision_score(valid[TARGET_COL], scores) == pytest.approx(result["validation_score"], abs=1e-9)


def test_main_amount_recall_at_alert_rate(tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, valid = binary_data
    env = _sm_env(tmp_path, train, valid)
    argv = ["--family", "logistic", "--metric", "amount_recall_at_alert_rate", "--max_alert_rate", "0.1"]
    result = train_job.main(argv, env=env, log=lambda _m: None)
    # Flagging 10% of rows at random catches about 10% of the fraud amount.
    assert result["validation_score"] > 0.6
    model = load_model(env["SM_MODEL_DIR"])
    X_va = valid.drop(columns=[TARGET_COL, AMOUNT_COL]).to_numpy(dtype="float32")
    expected = goal_metric(
        "amount_recall_at_alert_rate",
        valid[TARGET_COL].to_numpy(),
        predict(model, X_va, binary=True),
        amount=valid[AMOUNT_COL].to_numpy(),
        max_alert_rate=0.1,
        threshold=0.5,
    )
    assert result["validation_score"] == pytest.approx(expected)


def test_main_oversamples_only_the_training_rows(
    tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, valid = binary_data
    env = _sm_env(tmp_path, train, valid)
    argv = ["--family", "logistic", "--resample", "oversample", "--resample_ratio", "0.5"]
    result = train_job.main(argv, env=env, log=lambda _m: None)
    n_neg = int((train[TARGET_COL] == 0).sum())
    assert result["n_fit"] == n_neg + int(np.ceil(0.5 * n_neg))
    assert result["n_train"] == 1200 and result["n_validation"] == 600
    assert result["resample"] == "oversample"


def test_main_reads_every_part_of_a_channel(tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, valid = binary_data
    env = _sm_env(tmp_path, train, valid, parts=3)
    assert len(list(Path(env["SM_CHANNEL_TRAIN"]).glob("*.parquet"))) == 3
    result = train_job.main(["--family", "logistic"], env=env, log=lambda _m: None)
    assert (result["n_train"], result["n_validation"]) == (1200, 600)


def test_main_regression_beats_predicting_the_mean(tmp_path: Path) -> None:
    train, valid = _regression_frame(800, seed=5), _regression_frame(400, seed=6)
    env = _sm_env(tmp_path, train, valid)
    argv = ["--family", "linear", "--problem_type", "regression", "--metric", "rmse", "--alpha", "1.0"]
    result = train_job.main(argv, env=env, log=lambda _m: None)
    _check_written(env, result, "model.joblib")
    mean_rmse = float(np.sqrt(((valid[TARGET_COL] - train[TARGET_COL].mean()) ** 2).mean()))
    assert result["validation_score"] < 0.2 * mean_rmse
    assert result["n_features"] == N_FEATURES  # no __amount__ column: nothing dropped but the target


def test_main_refuses_an_empty_channel(tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    env = _sm_env(tmp_path, *binary_data)
    for f in Path(env["SM_CHANNEL_VALIDATION"]).glob("*.parquet"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="holds no .parquet files"):
        train_job.main(["--family", "logistic"], env=env, log=lambda _m: None)


def test_job_runs_as_a_subprocess_with_the_sagemaker_contract(
    tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """The real contract: a fresh interpreter, SM_* environment variables, --name value arguments;
    both as ``python -m include.jobs.train`` and as ``python path/to/train.py`` (script mode).
    The two interpreters run side by side, each with its own channels and output folders."""
    script = PROJECT_ROOT / "include" / "jobs" / "train.py"
    runs = {
        "module": (
            [sys.executable, "-m", "include.jobs.train"],
            [
                "--family", "xgboost", "--trial_id", "sm-1", "--problem_type", "binary_classification",
                "--metric", "auprc", "--seed", "11", "--n_estimators", "40", "--max_depth", "3",
                "--learning_rate", "0.2",
            ],
        ),
        "script": ([sys.executable, str(script)], ["--family", "logistic", "--trial_id", "sm-2", "--C", "1.0"]),
    }  # fmt: skip
    procs, envs = {}, {}
    for name, (cmd, argv) in runs.items():
        (tmp_path / name).mkdir()
        envs[name] = _sm_env(tmp_path / name, *binary_data)
        procs[name] = subprocess.Popen(
            [*cmd, *argv],
            cwd=tmp_path / name,  # not the project root: the job must not depend on the working directory
            env={**os.environ, **envs[name], "PYTHONPATH": str(PROJECT_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        outputs = {name: p.communicate(timeout=120) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name][1]

    assert "sm-1: train auprc=" in outputs["module"][0]
    metrics = json.loads((Path(envs["module"]["SM_OUTPUT_DATA_DIR"]) / "metrics.json").read_text())
    assert metrics["trial_id"] == "sm-1" and metrics["family"] == "xgboost"
    assert metrics["params"] == {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.2}
    assert metrics["validation_score"] > 0.7
    assert (Path(envs["module"]["SM_MODEL_DIR"]) / "model.ubj").exists()
    assert isinstance(load_model(envs["module"]["SM_MODEL_DIR"]), xgb.XGBClassifier)

    metrics = json.loads((Path(envs["script"]["SM_OUTPUT_DATA_DIR"]) / "metrics.json").read_text())
    assert metrics["trial_id"] == "sm-2" and metrics["params"] == {"C": 1.0}
    assert metrics["validation_score"] > 0.7
    assert isinstance(load_model(envs["script"]["SM_MODEL_DIR"]), LogisticRegression)


def test_hyper_parameters_built_from_a_spec_trial_are_accepted(
    tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """Trials planned from the spec (including max_depth None from the wide grid), encoded as the
    operator encodes them (json.dumps per value), train without error."""
    d = yaml.safe_load(CARD_FRAUD.read_text())
    for cand in d["training"]["candidates"]:
        if cand["family"] == "random_forest":
            cand["params"] = {"n_estimators": 20, "max_depth": None, "min_samples_leaf": 5}
    spec = parse_spec(d)
    trial = plan_trials(spec, families=["random_forest"], trials_per_family=1, wide=False, round_no=1)[0]
    assert trial["params"]["max_depth"] is None
    argv = ["--family", trial["family"], "--trial_id", trial["trial_id"]]
    for k, v in trial["params"].items():
        argv += [f"--{k}", json.dumps(v)]
    result = train_job.main(argv, env=_sm_env(tmp_path, *binary_data), log=lambda _m: None)
    assert result["params"] == trial["params"]
    assert result["validation_score"] > 0.7
