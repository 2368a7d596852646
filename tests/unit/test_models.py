"""Unit tests of section 5, select and train: include/lifecycle/train.py (trial planning, model
families, safe model files, best trial) and the SageMaker script-mode entry point
include/jobs/train.py, run in-process and as a real subprocess with the SM_* contract."""

from __future__ import annotations

import json
import os
import pickle
import re
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
from include.lifecycle.dataset import TargetTransformError
from include.lifecycle.decide import TUNE, initial_plan, next_plan
from include.lifecycle.evaluate_model import goal_metric
from include.lifecycle.models import (
    AMOUNT_COL,
    TARGET_COL,
    TargetTransformed,
    best_trial,
    build_model,
    choose_selection,
    cv_splits,
    data_kind,
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


# --------------------------------------------------------------------------------------
# ties broken by a smooth metric, never by trial order
# --------------------------------------------------------------------------------------
def _scored(trial_id: str, family: str, score: float, **smooth: float | None) -> dict[str, Any]:
    return {**_r(trial_id, family, score), **{f"validation_{k}": v for k, v in smooth.items()}}


def test_best_trial_breaks_goal_ties_by_auprc_then_log_loss() -> None:
    """24 trials tying on a goal metric that counts a few caught positives: the one whose scores
    rank the validation rows best wins, not the first planned (the default parameters)."""
    results = [
        _scored("r1-logistic-0", "logistic", 0.75, auprc=0.40, log_loss=0.20),
        _scored("r1-xgboost-3", "xgboost", 0.75, auprc=0.52, log_loss=0.31),
        _scored("r1-xgboost-1", "xgboost", 0.75, auprc=0.52, log_loss=0.12),
        _scored("r1-random_forest-0", "random_forest", 0.70, auprc=0.90, log_loss=0.01),
    ]
    assert best_trial(results, higher_is_better=True)["trial_id"] == "r1-xgboost-1"
    # a goal metric computed in another summation order still ties
    results[0]["validation_score"] = 0.75 + 1e-15
    assert best_trial(results, higher_is_better=True)["trial_id"] == "r1-xgboost-1"
    # a trial without smooth metrics (failed to compute, older result) ranks after those with them
    results.append(_scored("r1-logistic-1", "logistic", 0.75, auprc=None, log_loss=None))
    assert best_trial(results, higher_is_better=True)["trial_id"] == "r1-xgboost-1"
    # only exact ties of both go to the simpler family, then the id
    results.append(_scored("r1-logistic-2", "logistic", 0.75, auprc=0.52, log_loss=0.12))
    assert best_trial(results, higher_is_better=True)["trial_id"] == "r1-logistic-2"


def test_best_trial_breaks_regression_ties_by_rmse() -> None:
    results = [
        _scored("r1-linear-0", "linear", 0.50, rmse=3.0, mae=2.0),
        _scored("r1-xgboost-0", "xgboost", 0.50, rmse=2.5, mae=2.4),
        _scored("r1-xgboost-1", "xgboost", 0.49, rmse=1.0, mae=0.5),
    ]
    assert best_trial(results, higher_is_better=True)["trial_id"] == "r1-xgboost-0"
    assert best_trial(results, higher_is_better=False)["trial_id"] == "r1-xgboost-1"


def test_main_writes_the_smooth_metrics_next_to_the_goal_metric(
    tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """recall at a 10% alert rate ties between two logistic models with different C; AUPRC and
    log-loss of the same validation rows tell them apart, and the job reports exactly those."""
    train, valid = binary_data
    results = []
    for k, c in enumerate((1.0, 0.001)):
        env = _sm_env(tmp_path / str(k), train, valid)
        argv = ["--family", "logistic", "--trial_id", f"r1-logistic-{k}", "--metric", "recall_at_alert_rate"]
        results.append(train_job.main([*argv, "--max_alert_rate", "0.2", "--C", str(c)], env=env, log=lambda _m: None))
        model = load_model(env["SM_MODEL_DIR"])
        X_va = valid.drop(columns=[TARGET_COL, AMOUNT_COL]).to_numpy(dtype="float32")
        s = predict(model, X_va, binary=True)
        y = valid[TARGET_COL].to_numpy()
        assert results[-1]["validation_auprc"] == pytest.approx(average_precision_score(y, s))
        p = np.clip(s, 1e-15, 1 - 1e-15)
        assert results[-1]["validation_log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        assert results[-1]["selection"] == "holdout"  # a bare call scores the validation channel
    a, b = results
    assert a["validation_score"] == b["validation_score"] == 1.0  # every positive is in the top 20%
    assert a["validation_auprc"] != b["validation_auprc"]
    better = a if a["validation_auprc"] > b["validation_auprc"] else b
    assert best_trial([b, a], higher_is_better=True)["trial_id"] == better["trial_id"]
    assert best_trial([a, b], higher_is_better=True)["trial_id"] == better["trial_id"]


# --------------------------------------------------------------------------------------
# model selection fit for the data size: k-fold cross-validation or the forward holdout
# --------------------------------------------------------------------------------------
BREAST_CANCER = PROJECT_ROOT / "include" / "problems" / "breast_cancer.yaml"


def test_choose_selection_follows_the_data() -> None:
    y = np.array([0] * 90 + [1] * 30)
    kw: dict[str, Any] = {"y": y, "binary": True, "folds": 5, "max_rows": 1000}
    static = choose_selection("auto", kind="static", **kw)
    assert (static.name, static.folds) == ("cv-5", 5) and "static" in static.rule and "stratified" in static.rule
    forward = choose_selection("auto", kind="time_ordered", **kw)
    assert (forward.name, forward.folds) == ("holdout", 0) and "forward split" in forward.rule
    assert choose_selection("auto", kind="unordered", **kw).name == "cv-5"  # 120 rows < 1000
    big = choose_selection("auto", kind="unordered", **{**kw, "max_rows": 100})
    assert big.name == "holdout" and "cv_max_rows 100" in big.rule
    assert choose_selection("cv", kind="time_ordered", **kw).name == "cv-5"  # asked for: honoured
    assert choose_selection("holdout", kind="static", **kw).name == "holdout"
    few = choose_selection("auto", kind="static", **{**kw, "y": np.array([0] * 50 + [1] * 3)})
    assert few.name == "cv-3" and "reduced to 3" in few.rule  # each fold keeps a positive
    one = choose_selection("auto", kind="static", **{**kw, "y": np.array([0] * 50 + [1])})
    assert one.name == "holdout" and "too few for 2 folds" in one.rule
    reg = choose_selection("auto", kind="static", **{**kw, "y": np.arange(7.0), "binary": False})
    assert reg.name == "cv-3"  # 7 rows: folds of at least 2 rows
    with pytest.raises(ValueError, match="unknown selection"):
        choose_selection("loo", kind="static", **kw)


def test_cv_folds_are_stratified_seeded_and_cover_every_row_once() -> None:
    y = np.array([0] * 80 + [1] * 20)
    folds = cv_splits(y, 5, seed=3, binary=True)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held) == list(range(100))
    assert all(int(y[h].sum()) == 4 for _, h in folds)  # the base rate in every fold
    assert all(np.intersect1d(f, h).size == 0 for f, h in folds)
    again = cv_splits(y, 5, seed=3, binary=True)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    other = cv_splits(y, 5, seed=4, binary=True)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_a_static_spec_is_cross_validated_and_a_partitioned_one_keeps_its_holdout(
    tmp_path: Path, spec: Spec, binary_data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """The spec's rule travels as hyper-parameters (hyperparameter_args, which both backends call):
    breast_cancer (a single file) is compared by 5-fold cv on train + validation, card_fraud
    (time-ordered partitions) on its validation days."""
    train, valid = binary_data
    static = load_spec(BREAST_CANCER)
    assert (static.training.selection, data_kind(static), data_kind(spec)) == ("auto", "static", "time_ordered")
    out = {}
    for s in (static, spec):
        trial = {"trial_id": f"{s.name}-logistic-0", "family": "logistic", "params": {"C": 1.0}}
        argv = train_job.hyperparameter_args(s, {"resample": "none"}, trial)
        assert argv[argv.index("--selection") + 1] == "auto" and argv[argv.index("--cv_folds") + 1] == "5"
        env = _sm_env(tmp_path / s.name, train, valid)
        logs: list[str] = []
        out[s.name] = (train_job.main(argv, env=env, log=logs.append), env, logs)

    cv, env, logs = out["breast_cancer"]
    assert cv["selection"] == "cv-5" and "static" in cv["selection_rule"]
    assert len(cv["validation_fold_scores"]) == 5 and cv["n_cv"] == len(train) + len(valid)
    assert cv["validation_score"] == pytest.approx(np.mean(cv["validation_fold_scores"]))
    assert cv["validation_score_sd"] == pytest.approx(np.std(cv["validation_fold_scores"], ddof=1))
    assert 0 < cv["validation_score_sd"] < 0.2
    assert all(0.5 < s <= 1.0 for s in cv["validation_fold_scores"])
    assert sum(": fold " in m for m in logs) == 5
    # one "validation <metric>=<score>" line (SageMaker tuning's objective), carrying the cv mean
    found = [float(m) for line in logs for m in re.findall(r"validation [a-z0-9_]+=([-+0-9.eE]+)", line)]
    assert found == [pytest.approx(cv["validation_score"], abs=1e-4)]
    # a binary model kept is fitted on the train channel only: the validation rows stay unseen for the threshold
    assert cv["n_fit"] == cv["n_train"] == len(train) and cv["fitted_on"] == "train"
    model = load_model(env["SM_MODEL_DIR"])
    X_va = valid.drop(columns=[TARGET_COL, AMOUNT_COL]).to_numpy(dtype="float32")
    s_va = predict(model, X_va, binary=True)
    assert cv["holdout_validation_score"] == pytest.approx(
        goal_metric(
            "amount_recall_at_alert_rate",
            valid[TARGET_COL].to_numpy(),
            s_va,
            amount=valid[AMOUNT_COL].to_numpy(),
            max_alert_rate=static.goal.max_alert_rate,
        )
        if static.goal.metric == "amount_recall_at_alert_rate"
        else goal_metric(static.goal.metric, valid[TARGET_COL].to_numpy(), s_va, threshold=0.5)
    )

    hold, env, _ = out["card_fraud"]
    assert hold["selection"] == "holdout" and "forward split" in hold["selection_rule"]
    assert "validation_fold_scores" not in hold and "holdout_validation_score" not in hold
    model = load_model(env["SM_MODEL_DIR"])
    assert hold["validation_score"] == pytest.approx(
        goal_metric(
            spec.goal.metric,
            valid[TARGET_COL].to_numpy(),
            predict(model, X_va, binary=True),
            amount=valid[AMOUNT_COL].to_numpy(),
            max_alert_rate=spec.goal.max_alert_rate,
        )
    )
    assert json.loads((Path(env["SM_OUTPUT_DATA_DIR"]) / "metrics.json").read_text())["selection"] == "holdout"


def test_cross_validation_oversamples_only_the_fitted_folds(
    tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, valid = binary_data
    env = _sm_env(tmp_path, train, valid)
    argv = ["--family", "logistic", "--selection", "cv", "--resample", "oversample", "--resample_ratio", "0.5"]
    result = train_job.main(argv, env=env, log=lambda _m: None)
    assert result["selection"] == "cv-5" and result["resample"] == "oversample"
    n_neg = int((train[TARGET_COL] == 0).sum())
    assert result["n_fit"] == n_neg + int(np.ceil(0.5 * n_neg))  # the kept model: the train channel, resampled
    assert result["n_cv"] == len(train) + len(valid)  # the held-out folds are the original rows


def test_cross_validation_reduces_the_spread_between_seeds(
    tmp_path: Path, binary_data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """The same trial scored under two seeds: the cv mean over all 1800 rows moves less than the
    holdout score moves between two random validation sets of the same size."""
    train, valid = binary_data
    both = pd.concat([train, valid], ignore_index=True)
    argv = ["--family", "logistic", "--metric", "auprc"]
    cv, holdout = [], []
    for seed in (1, 2, 3):
        env = _sm_env(tmp_path / f"cv{seed}", train, valid)
        cv.append(train_job.main([*argv, "--seed", str(seed), "--selection", "cv"], env=env, log=lambda _m: None))
        order = np.random.default_rng(seed).permutation(len(both))
        tr, va = both.iloc[order[:1200]], both.iloc[order[1200:]]
        env = _sm_env(tmp_path / f"ho{seed}", tr, va)
        holdout.append(train_job.main([*argv, "--seed", str(seed)], env=env, log=lambda _m: None))
    spread = np.ptp([r["validation_score"] for r in cv])
    assert spread < np.ptp([r["validation_score"] for r in holdout])


# --------------------------------------------------------------------------------------
# regression target transforms
# --------------------------------------------------------------------------------------
def _lognormal_frame(n: int, seed: int) -> pd.DataFrame:
    """A price-like target: log-normal, multiplicative in the features (like house prices)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype("float32")
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(N_FEATURES)])
    df[TARGET_COL] = np.exp(11.0 + 0.8 * X[:, 0] + 0.5 * X[:, 1] - 0.3 * X[:, 2] + rng.normal(scale=0.25, size=n))
    return df


def test_a_log_target_beats_the_raw_target_on_the_same_split(tmp_path: Path) -> None:
    train, valid = _lognormal_frame(1500, seed=11), _lognormal_frame(700, seed=12)
    argv = ["--family", "linear", "--problem_type", "regression", "--metric", "r2", "--alpha", "1.0"]
    raw = train_job.main(argv, env=_sm_env(tmp_path / "raw", train, valid), log=lambda _m: None)
    env = _sm_env(tmp_path / "log", train, valid)
    logs: list[str] = []
    logged = train_job.main([*argv, "--target_transform", "log"], env=env, log=logs.append)

    assert raw["target_transform"] == "none" and "validation_score_transformed" not in raw
    assert logged["target_transform"] == "log"
    assert logged["validation_score"] > raw["validation_score"] + 0.1  # R2 on the original scale
    assert logged["validation_score"] > 0.75 and logged["validation_score_transformed"] > 0.9
    assert "on the log scale" in logs[-1]
    # the saved model predicts on the original scale: its meta names the transform, no caller inverts
    assert json.loads((Path(env["SM_MODEL_DIR"]) / "model_meta.json").read_text()) == {
        "family": "linear",
        "class": "Ridge",
        "target_transform": "log",
    }
    model = load_model(env["SM_MODEL_DIR"])
    assert isinstance(model, TargetTransformed) and isinstance(model.regressor_, Ridge)
    X_va = valid.drop(columns=[TARGET_COL]).to_numpy(dtype="float32")
    pred = predict(model, X_va, binary=False)
    np.testing.assert_allclose(pred, np.exp(model.regressor_.predict(X_va).astype("float64")), rtol=1e-12)
    y = valid[TARGET_COL].to_numpy()
    assert goal_metric("r2", y, pred) == pytest.approx(logged["validation_score"])
    assert goal_metric("r2", np.log(y), np.log(pred)) == pytest.approx(logged["validation_score_transformed"])
    assert model.score(X_va, y) == pytest.approx(logged["validation_score"])


@pytest.mark.parametrize("family", ["xgboost", "random_forest"])
def test_a_transformed_tree_model_round_trips_and_scores_its_training_rows(tmp_path: Path, family: str) -> None:
    """log1p with a tree family, cross-validated: the fold scores, the training score from the
    fit's own predictions and the saved model all on the original scale."""
    train, valid = _lognormal_frame(600, seed=21), _lognormal_frame(300, seed=22)
    argv = [
        "--family", family, "--problem_type", "regression", "--metric", "rmse", "--target_transform", "log1p",
        "--selection", "cv", "--cv_folds", "3", "--n_estimators", "30", "--max_depth", "3",
    ]  # fmt: skip
    env = _sm_env(tmp_path, train, valid)
    result = train_job.main(argv, env=env, log=lambda _m: None)
    assert result["selection"] == "cv-3" and len(result["validation_fold_scores"]) == 3
    assert result["validation_rmse"] == pytest.approx(result["validation_score"])
    model = load_model(env["SM_MODEL_DIR"])
    X_tr = train.drop(columns=[TARGET_COL]).to_numpy(dtype="float32")
    X_va = valid.drop(columns=[TARGET_COL]).to_numpy(dtype="float32")
    y_tr, y_va = train[TARGET_COL].to_numpy(), valid[TARGET_COL].to_numpy()
    # a cross-validated regression model is refitted on every non-test row: its training score is
    # on all of them, and no in-sample "holdout" score is reported
    assert result["fitted_on"] == "train+validation" and result["n_fit"] == len(train) + len(valid)
    X_all, y_all = np.concatenate([X_tr, X_va]), np.concatenate([y_tr, y_va])
    assert result["train_score"] == pytest.approx(goal_metric("rmse", y_all, predict(model, X_all, binary=False)))
    assert "holdout_validation_score" not in result
    # the refit is the same trial on more rows, not the fold models or the train-channel fit
    assert result["train_score"] != pytest.approx(goal_metric("rmse", y_tr, predict(model, X_tr, binary=False)))
    # on the price scale (a log-scale rmse would be below 1), better than predicting the mean
    assert 1_000 < result["validation_score"] < 0.8 * float(np.std(y_va))


def test_the_job_refuses_a_target_outside_the_transform(tmp_path: Path) -> None:
    train, valid = _lognormal_frame(200, seed=1), _lognormal_frame(100, seed=2)
    train.loc[3, TARGET_COL] = 0.0
    env = _sm_env(tmp_path, train, valid)
    argv = ["--family", "linear", "--problem_type", "regression", "--metric", "r2", "--target_transform", "log"]
    with pytest.raises(TargetTransformError, match=r"'__target__'.*log needs every value > 0.*1 of 200 rows"):
        train_job.main(argv, env=env, log=lambda _m: None)
    with pytest.raises(SystemExit, match="regression targets only"):
        train_job.main(["--family", "logistic", "--target_transform", "log"], env=env, log=lambda _m: None)


def test_hyper_parameters_carry_the_target_transform_of_a_regression_spec() -> None:
    d = yaml.safe_load((PROJECT_ROOT / "include" / "problems" / "diabetes.yaml").read_text())
    trial = {"trial_id": "r1-linear-0", "family": "linear", "params": {"alpha": 1.0}}
    assert "--target_transform" not in train_job.hyperparameter_args(parse_spec(d), {}, trial)
    d["problem"]["target_transform"] = "log1p"
    d["training"]["selection"] = "holdout"
    argv = train_job.hyperparameter_args(parse_spec(d), {}, trial)
    args, params = train_job.parse_args(argv)
    assert (args.target_transform, args.selection, args.data_kind, params) == (
        "log1p",
        "holdout",
        "static",
        trial["params"],
    )
