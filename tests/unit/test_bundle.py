"""Unit tests of include/lifecycle/bundle.py: a model bundle (features, fitted preprocessor,
model, threshold) written to the registry, materialised with its checksums verified, loaded
and used to score raw rows exactly as in training."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from include.lifecycle.bundle import ModelBundle, features_config
from include.lifecycle.dataset import TEST, TRAIN, make_split, target_vector
from include.lifecycle.features import FeaturePipeline, engineer, make_preprocessor
from include.lifecycle.models import build_model, fit_model, predict, save_model
from include.lifecycle.registry import ChecksumError, ModelRegistry
from include.lifecycle.spec import PROJECT_ROOT, FeatureGroupSpec, Spec, load_spec
from include.lifecycle.store import Store
from tests.registry_store import mlflow_db_in, version_file

CARD_FRAUD = PROJECT_ROOT / "include" / "problems" / "card_fraud.yaml"
CATEGORIES = ["grocery", "fuel", "restaurants", "travel", "gambling", "digital_goods"]
CHANNELS = ["pos", "ecom", "contactless"]
EXCLUDE = ["is_fraud", "transaction_id", "ts", "card_number"]
GROUPS = ("transaction", "card_velocity", "merchant_risk")


def _registry(tmp_path: Path) -> ModelRegistry:
    """The registered model card_fraud in an MLflow store of its own (the artifact root tmp_path)."""
    mlflow_db_in(tmp_path)
    return ModelRegistry(Store.from_uri((tmp_path / "card_fraud").as_uri()))


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_spec(CARD_FRAUD)


def _transactions(n: int, seed: int, start: str = "2024-03-01") -> pd.DataFrame:
    """Curated card transactions; fraud is likelier for large online gambling/digital goods."""
    rng = np.random.default_rng(seed)
    cat = rng.choice(CATEGORIES, size=n)
    channel = rng.choice(CHANNELS, size=n)
    amount = np.round(rng.gamma(2.0, 40.0, size=n) + 1.0, 2)
    risky = np.isin(cat, ["gambling", "digital_goods"]).astype(float) + (channel == "ecom")
    logit = -5.0 + 1.6 * risky + 0.012 * amount
    fraud = rng.random(n) < 1 / (1 + np.exp(-logit))
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 10 * 86400, size=n)), unit="s")
    return pd.DataFrame(
        {
            "transaction_id": [f"tx{seed}-{i}" for i in range(n)],
            "ts": pd.Series(ts).astype("datetime64[us, UTC]").to_numpy(),
            "card_number": rng.choice([f"card{i:03d}" for i in range(150)], size=n),
            "merchant_id": rng.choice([f"m{i}" for i in range(40)], size=n),
            "merchant_category": pd.Categorical(cat),
            "amount": amount,
            "channel": pd.Categorical(channel),
            "country": pd.Categorical(rng.choice(["NL", "DE", "FR"], size=n)),
            "is_fraud": fraud.astype("int8"),
        }
    )


def _build_bundle_files(
    spec: Spec, train: pd.DataFrame, family: str, params: dict[str, Any], tmp: Path, *, threshold: float | None
) -> tuple[dict[str, bytes], Any, Any]:
    """What feature_engineering + train + deploy_model write: the bundle's files as bytes."""
    pipeline = FeaturePipeline.from_spec(spec, GROUPS)
    feats, cols = pipeline.engineer(train)
    y = train["is_fraud"].to_numpy()
    pre = make_preprocessor(cols, problem_type=spec.problem.type, seed=spec.training.seed)
    X = pre.fit_transform(feats, y)
    model = fit_model(build_model(family, params, binary=True, seed=1, class_weight="balanced", n_jobs=1), X, y)
    folder = tmp / "bundle-src"
    names = save_model(model, family, folder)
    joblib.dump(pre, folder / "preprocessor.joblib")
    config = features_config(
        pipeline=pipeline,
        columns=cols.to_dict(),
        names=[str(n) for n in pre.get_feature_names_out()],
        problem_type=spec.problem.type,
        input_columns=[c for c in train.columns if c != "is_fraud"],
    )
    (folder / "features.json").write_text(json.dumps(config))
    (folder / "threshold.json").write_text(json.dumps({"threshold": threshold}))
    files = {n: (folder / n).read_bytes() for n in [*names, "preprocessor.joblib", "features.json", "threshold.json"]}
    return files, pre, model


def _expected_scores(raw: pd.DataFrame, spec: Spec, pre: Any, model: Any) -> np.ndarray:
    groups = [spec.group(g) for g in GROUPS]
    feats, _ = engineer(raw, groups, time_column="ts", entity_column="card_number", exclude=EXCLUDE)
    return predict(model, np.asarray(pre.transform(feats), dtype="float32"), binary=True)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _transactions(3000, seed=1), _transactions(1500, seed=2, start="2024-03-11")


@pytest.mark.parametrize(
    ("family", "params"),
    [("xgboost", {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.2}), ("logistic", {"C": 1.0})],
)
def test_bundle_round_trip_through_the_registry(
    tmp_path: Path, spec: Spec, data: tuple[pd.DataFrame, pd.DataFrame], family: str, params: dict[str, Any]
) -> None:
    train, test = data
    files, pre, model = _build_bundle_files(spec, train, family, params, tmp_path, threshold=0.37)
    registry = _registry(tmp_path)
    version = registry.register(files, {"problem": spec.name})

    bundle = ModelBundle.load(registry.materialise(version, tmp_path / "champion"))
    assert bundle.binary is True
    assert bundle.threshold == 0.37
    assert bundle.input_columns == [c for c in train.columns if c != "is_fraud"]
    assert type(bundle.model) is type(model)

    scores = bundle.score(test)
    assert scores.shape == (len(test),) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, _expected_scores(test, spec, pre, model), rtol=1e-6, atol=1e-7)
    # The model learnt something: far better than the base rate (the AUPRC of random scores).
    base_rate = test["is_fraud"].mean()
    assert 0.01 < base_rate < 0.3
    assert average_precision_score(test["is_fraud"], scores) > 2 * base_rate


def test_the_bundle_builds_the_features_training_built_for_the_same_rows(
    tmp_path: Path, spec: Spec, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """Training (as the feature_engineering section does it) and scoring go through one
    FeaturePipeline: the bundle's matrix for any rows is the matrix training wrote for them."""
    df = pd.concat(data, ignore_index=True)
    # training: the spec's pipeline on the columns feature engineering reads, the preprocessor fitted on train
    pipeline = FeaturePipeline.from_spec(spec, list(GROUPS))
    assert pipeline.exclude == tuple(sorted(EXCLUDE)) == tuple(spec.excluded_from_features)
    read = df[spec.feature_inputs(pipeline.groups, list(df.columns))]
    assert "transaction_id" not in read.columns  # the key is never read for features
    y = target_vector(read["is_fraud"], spec)
    splits = make_split(read, spec, y, as_of=dt.datetime(2024, 4, 1, tzinfo=dt.UTC)).assignment
    feats, cols = pipeline.engineer(read)
    pre = make_preprocessor(cols, problem_type=spec.problem.type, seed=spec.training.seed)
    train, test = splits == TRAIN, splits == TEST
    assert train.any() and test.any()
    X_train = pre.fit_transform(feats[train], y[train])
    X_test = pre.transform(feats[test])
    store = Store.from_uri(f"file://{tmp_path}")
    store.write_json(
        "features.json",
        features_config(
            pipeline=pipeline,
            columns=cols.to_dict(),
            names=[str(n) for n in pre.get_feature_names_out()],
            problem_type=spec.problem.type,
            input_columns=[c for c in df.columns if c != "is_fraud"],
        ),
    )
    # scoring: the bundle rebuilds the pipeline from features.json and gets every column of the rows
    bundle = ModelBundle(store.read_json("features.json"), pre, model=None, threshold=None, binary=True)
    assert bundle.pipeline == pipeline
    again, again_cols = bundle.pipeline.engineer(df.drop(columns=["is_fraud"]))
    pd.testing.assert_frame_equal(again, feats, check_exact=True)
    assert again_cols == cols
    X = bundle.transform(df)
    np.testing.assert_array_equal(X[test], X_test)
    np.testing.assert_array_equal(X[train], pre.transform(feats[train]))
    assert X_train.shape == X[train].shape


def test_features_config_round_trips_the_pipeline(spec: Spec) -> None:
    pipeline = FeaturePipeline.from_spec(spec, list(GROUPS))
    common = {"columns": {"numeric": ["amount"]}, "names": ["amount"], "problem_type": "binary_classification"}
    config = features_config(pipeline=pipeline, input_columns=["amount"], **common)
    assert set(config) == {
        "groups", "columns", "feature_names", "exclude", "time_column", "entity_column", "problem_type", "input_columns"
    }  # fmt: skip
    assert FeaturePipeline.from_config(json.loads(json.dumps(config))) == pipeline


def test_bundle_scores_do_not_depend_on_column_order_or_extra_columns(
    tmp_path: Path, spec: Spec, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = data
    files, _, _ = _build_bundle_files(spec, train, "logistic", {"C": 1.0}, tmp_path, threshold=0.5)
    registry = _registry(tmp_path)
    bundle = ModelBundle.load(registry.materialise(registry.register(files, {}), tmp_path / "m"))
    reference = bundle.score(test)
    shuffled = test[list(reversed(test.columns))].assign(unrelated=1.0)
    np.testing.assert_array_equal(bundle.score(shuffled), reference)
    # Without the label (as in serving) the scores are the same: the target is never a feature.
    np.testing.assert_array_equal(bundle.score(test.drop(columns=["is_fraud"])), reference)


def test_unseen_categories_are_scored(tmp_path: Path, spec: Spec, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = data
    files, _, _ = _build_bundle_files(spec, train, "logistic", {"C": 1.0}, tmp_path, threshold=None)
    folder = tmp_path / "bundle-src"
    bundle = ModelBundle.load(folder)
    assert bundle.threshold is None
    rows = test.head(5).copy()
    rows["country"] = pd.Categorical(["XX"] * 5)
    rows["merchant_id"] = "never-seen"
    scores = bundle.score(rows)
    assert scores.shape == (5,) and np.all(np.isfinite(scores))


@pytest.mark.parametrize("name", ["preprocessor.joblib", "model.ubj", "features.json", "threshold.json"])
def test_tampered_bundle_is_refused_before_loading(
    tmp_path: Path, spec: Spec, data: tuple[pd.DataFrame, pd.DataFrame], name: str
) -> None:
    train, _ = data
    params = {"n_estimators": 10, "max_depth": 2}
    files, _, _ = _build_bundle_files(spec, train, "xgboost", params, tmp_path, threshold=0.5)
    registry = _registry(tmp_path)
    version = registry.register(files, {})
    target = version_file(registry, version, name)
    target.write_bytes(target.read_bytes() + b" ")  # appended bytes: still parses, but not what was registered
    out = tmp_path / "champion"
    with pytest.raises(ChecksumError, match=name):
        registry.materialise(version, out)
    assert not (out / name).exists()


def test_regression_bundle_returns_predictions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"age": rng.normal(50, 10, 300), "bmi": rng.normal(25, 4, 300)})
    raw["target"] = 2.0 * raw["age"] + 5.0 * raw["bmi"] + rng.normal(0, 1, 300)
    groups = [FeatureGroupSpec(name="baseline", kind="raw", columns=["age", "bmi"])]
    feats, cols = engineer(raw, groups, time_column=None, entity_column=None, exclude=["target"])
    pre = make_preprocessor(cols, problem_type="regression")
    X = pre.fit_transform(feats, raw["target"].to_numpy())
    model = fit_model(
        build_model("linear", {"alpha": 0.1}, binary=False, seed=1, class_weight="none"), X, raw["target"]
    )
    folder = tmp_path / "bundle"
    save_model(model, "linear", folder)
    joblib.dump(pre, folder / "preprocessor.joblib")
    config = features_config(
        pipeline=FeaturePipeline(tuple(groups), None, None, ("target",)),
        columns=cols.to_dict(),
        names=[str(n) for n in pre.get_feature_names_out()],
        problem_type="regression",
        input_columns=["age", "bmi"],
    )
    (folder / "features.json").write_text(json.dumps(config))
    (folder / "threshold.json").write_text(json.dumps({"threshold": None}))

    bundle = ModelBundle.load(folder)
    assert bundle.binary is False
    pred = bundle.score(raw.drop(columns=["target"]))
    np.testing.assert_allclose(pred, model.predict(X), rtol=1e-5)
    assert float(np.sqrt(np.mean((pred - raw["target"]) ** 2))) < 2.0


def test_a_log_target_bundle_scores_on_the_original_scale(tmp_path: Path) -> None:
    """A model the training job fitted on log(price): the bundle (and so serving and the champion
    comparison) returns prices, because the saved model carries its transform."""
    from include.jobs import train as train_job
    from include.lifecycle.models import TARGET_COL

    rng = np.random.default_rng(4)
    n = 600
    raw = pd.DataFrame({"rooms": rng.integers(1, 8, n).astype(float), "area": rng.gamma(4.0, 25.0, n)})
    raw.loc[rng.random(n) < 0.05, "area"] = np.nan  # missing values go through the preprocessor
    raw["price"] = np.exp(10.5 + 0.15 * raw["rooms"] + 0.004 * raw["area"].fillna(100) + rng.normal(0, 0.1, n))
    groups = [FeatureGroupSpec(name="baseline", kind="raw", columns=["rooms", "area"])]
    feats, cols = engineer(raw, groups, time_column=None, entity_column=None, exclude=["price"])
    pre = make_preprocessor(cols, problem_type="regression")
    X = pre.fit_transform(feats.iloc[:400], raw["price"].iloc[:400].to_numpy())
    names = [str(c) for c in pre.get_feature_names_out()]
    env = {"SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DATA_DIR": str(tmp_path / "output")}
    for channel, rows, matrix in (("train", slice(0, 400), X), ("validation", slice(400, n), None)):
        frame = pd.DataFrame(pre.transform(feats.iloc[rows]) if matrix is None else matrix, columns=names)
        frame[TARGET_COL] = raw["price"].iloc[rows].to_numpy()
        (tmp_path / channel).mkdir()
        frame.to_parquet(tmp_path / channel / "part-0.parquet", index=False)
        env[f"SM_CHANNEL_{channel.upper()}"] = str(tmp_path / channel)
    argv = ["--family", "xgboost", "--problem_type", "regression", "--metric", "r2", "--target_transform", "log"]
    result = train_job.main([*argv, "--n_estimators", "80", "--max_depth", "3"], env=env, log=lambda _m: None)

    folder = tmp_path / "bundle"
    folder.mkdir()
    for f in (tmp_path / "model").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    joblib.dump(pre, folder / "preprocessor.joblib")
    config = features_config(
        pipeline=FeaturePipeline(tuple(groups), None, None, ("price",)),
        columns=cols.to_dict(),
        names=names,
        problem_type="regression",
        input_columns=["rooms", "area"],
    )
    (folder / "features.json").write_text(json.dumps(config))
    (folder / "threshold.json").write_text(json.dumps({"threshold": None}))

    bundle = ModelBundle.load(folder)
    valid = raw.iloc[400:]
    pred = bundle.score(valid.drop(columns=["price"]))
    assert 10_000 < float(np.median(pred)) < 1_000_000  # prices, not log prices (about 12)
    y = valid["price"].to_numpy()
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 == pytest.approx(result["validation_score"], abs=1e-5)  # the job's original-scale score
    assert r2 > 0.5
