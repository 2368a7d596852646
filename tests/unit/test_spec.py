"""Unit tests of include/lifecycle/spec.py: the shipped specs load, broken specs raise a SpecError
naming the file, the field and the rule, the cross-field rules hold, and the env overrides work."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from include.lifecycle import spec as spec_module
from include.lifecycle.spec import (
    DEFAULT_PROBLEMS_DIR,
    Spec,
    SpecError,
    data_root,
    load_spec,
    parse_spec,
    problems_dir,
    resolve_source,
    spec_files,
    spec_path,
)

SHIPPED = sorted(DEFAULT_PROBLEMS_DIR.glob("*.yaml"))
CARD_FRAUD = DEFAULT_PROBLEMS_DIR / "card_fraud.yaml"

Mutation = Callable[[dict[str, Any]], None]


def _card_fraud() -> dict[str, Any]:
    return yaml.safe_load(CARD_FRAUD.read_text())


def _minimal_regression() -> dict[str, Any]:
    """The smallest valid spec: a regression on one CSV file."""
    return {
        "name": "house_prices",
        "title": "House prices",
        "goal": {"statement": "Price houses within a useful error.", "metric": "rmse", "target": 10000.0},
        "problem": {"type": "regression", "target": "price"},
        "data": {"source": "data/houses.csv", "format": "csv", "layout": "single_file"},
        "schema": {
            "columns": [
                {"name": "price", "dtype": "float", "nullable": False, "min": 0},
                {"name": "rooms", "dtype": "int"},
                {"name": "city", "dtype": "category"},
            ]
        },
        "features": {"initial": ["base"], "groups": [{"name": "base", "kind": "raw", "columns": ["rooms", "city"]}]},
        "training": {"candidates": [{"family": "linear"}, {"family": "xgboost"}]},
    }


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / f"{data.get('name', 'spec')}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _broken_file(tmp_path: Path, mutate: Mutation) -> tuple[Path, str]:
    data = _card_fraud()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    return path, str(err.value)


# --- the shipped specs -----------------------------------------------------------------------------
def test_the_shipped_specs_are_found() -> None:
    assert {p.stem for p in SHIPPED} >= {"card_fraud", "breast_cancer", "diabetes"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_spec_loads(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, Spec)
    assert spec.name == path.stem
    assert spec.features.initial and all(spec.group(g) for g in spec.features.initial)
    assert spec.is_binary == (spec.problem.type == "binary_classification")
    # the digest is stable for the same file and recorded in lineage, so it must not depend on the load
    assert spec.digest() == load_spec(path).digest()
    assert len(spec.digest()) == 16


def test_card_fraud_spec_states_its_goal_data_and_pii() -> None:
    spec = load_spec(CARD_FRAUD)
    assert spec.goal.metric == "amount_recall_at_alert_rate" and spec.goal.max_alert_rate == 0.005
    assert spec.goal.value.true_positive == "amount"  # a column name: the value of a caught fraud
    assert spec.pii_columns == ["card_number"]
    assert spec.data.labels is not None and spec.data.labels.maturity_days == 10
    assert spec.schema_.column("amount").min == 0.01
    assert spec.schema_.extra_columns == "drop"
    assert spec.features.augment_order == ["card_velocity", "card_history", "merchant_risk", "time_of_day"]
    with pytest.raises(KeyError):
        spec.schema_.column("no_such_column")
    with pytest.raises(KeyError):
        spec.group("no_such_group")


def test_digest_changes_with_the_spec() -> None:
    a = parse_spec(_card_fraud())
    data = _card_fraud()
    data["goal"]["target"] = 0.8
    assert parse_spec(data).digest() != a.digest()


def test_spec_is_frozen() -> None:
    spec = load_spec(CARD_FRAUD)
    with pytest.raises(pydantic.ValidationError):
        spec.max_rounds = 9  # type: ignore[misc]


# --- broken files: SpecError names file, field and rule --------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "field", "rule"),
    [
        pytest.param(lambda d: d.__setitem__("max_rounds", "many"), "max_rounds", "valid integer", id="wrong-type"),
        pytest.param(lambda d: d.__setitem__("max_rounds", 0), "max_rounds", "greater than or equal to 1", id="range"),
        pytest.param(
            lambda d: d.__setitem__("colour", "blue"), "colour", "Extra inputs are not permitted", id="unknown"
        ),
        pytest.param(
            lambda d: d["schema"]["columns"][0].__setitem__("widht", 3),
            "schema.columns[0].widht",
            "Extra inputs are not permitted",
            id="unknown-nested",
        ),
        pytest.param(
            lambda d: d["goal"].__setitem__("metric", "accuracy"), "goal.metric", "'auprc'", id="bad-metric-name"
        ),
        pytest.param(
            lambda d: d["features"].__setitem__("initial", ["transaction", "nope"]),
            "features",
            "initial feature groups ['nope'] are not declared",
            id="initial-group-undeclared",
        ),
        pytest.param(
            lambda d: d["schema"]["columns"][1].__setitem__("dtype", "datetime"),
            "schema.columns[1].dtype",
            "'timestamp'",
            id="bad-dtype",
        ),
        pytest.param(
            lambda d: d["schema"]["columns"][5].__setitem__("min", 1e9),
            "schema.columns[5]",
            "min 1000000000.0 is greater than max 50000.0",
            id="min-above-max",
        ),
        pytest.param(
            lambda d: d["schema"]["columns"].append({"name": "amount", "dtype": "float"}),
            "schema.columns",
            "column 'amount' is declared twice",
            id="duplicate-column",
        ),
        pytest.param(
            lambda d: d["data"].__setitem__("max_lookback_days", 7),
            "data",
            "max_lookback_days must be >= lookback_days",
            id="lookback",
        ),
        pytest.param(
            lambda d: d["data"]["labels"].__setitem__("maturity_days", -1),
            "data.labels.maturity_days",
            "greater than or equal to 0",
            id="maturity-negative",
        ),
        pytest.param(
            lambda d: d["training"]["split"].__setitem__("min_positives", 0),
            "training.split.min_positives",
            "greater than or equal to 1",
            id="split-min-positives",
        ),
        pytest.param(
            lambda d: d["schema"].__setitem__("extra_columns", "maybe"),
            "schema.extra_columns",
            "'keep' or 'drop'",
            id="extra-columns",
        ),
        pytest.param(lambda d: d.pop("goal"), "goal", "Field required", id="missing-section"),
        pytest.param(
            lambda d: d["goal"].__setitem__("statement", "short"),
            "goal.statement",
            "at least 10 characters",
            id="short-statement",
        ),
        pytest.param(
            lambda d: d["data"].__setitem__("key", "tx_id"),
            "data.key",
            "data.key 'tx_id' is not a schema column",
            id="key-not-a-column",
        ),
    ],
)
def test_a_broken_spec_names_file_field_and_rule(tmp_path: Path, mutate: Mutation, field: str, rule: str) -> None:
    path, message = _broken_file(tmp_path, mutate)
    line = next((ln for ln in message.splitlines() if f"field '{field}'" in ln), None)
    assert line is not None, message
    assert line.startswith(f"{path}: ")
    assert rule in line, message


def test_every_broken_field_is_reported_not_just_the_first(tmp_path: Path) -> None:
    def two_errors(d: dict[str, Any]) -> None:
        d["max_rounds"] = "many"
        d["goal"]["metric"] = "accuracy"

    _, message = _broken_file(tmp_path, two_errors)
    assert "field 'max_rounds'" in message and "field 'goal.metric'" in message


def test_the_name_must_match_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "other_name.yaml"
    path.write_text(CARD_FRAUD.read_text())
    with pytest.raises(SpecError, match=r"other_name\.yaml: field 'name': must equal the file name"):
        load_spec(path)


def test_a_bad_name_pattern_is_a_field_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"field 'name': String should match pattern"):
        parse_spec({**_card_fraud(), "name": "Card-Fraud"}, "x.yaml")


def test_invalid_yaml_and_a_non_mapping_are_spec_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load_spec(bad)
    listy = tmp_path / "listy.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match=r"listy\.yaml: the spec must be a YAML mapping, got list"):
        load_spec(listy)


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


# --- cross-field rules -----------------------------------------------------------------------------
def test_minimal_regression_spec_gets_the_documented_defaults() -> None:
    spec = parse_spec(_minimal_regression())
    assert not spec.is_binary
    assert spec.goal.higher_is_better is False
    assert spec.goal.met_by(9000.0) and not spec.goal.met_by(11000.0)
    assert spec.schema_.extra_columns == "drop"
    assert spec.backend == "local" and spec.max_rounds == 3
    assert spec.data.lookback_days == 28 and spec.data.max_lookback_days == 56
    assert spec.pii_columns == []
    assert spec.training.split.min_positives == 5


def test_met_by_for_a_higher_is_better_metric() -> None:
    goal = load_spec(CARD_FRAUD).goal
    assert goal.higher_is_better
    assert goal.met_by(0.75) and goal.met_by(0.9) and not goal.met_by(0.74)


@pytest.mark.parametrize(
    ("base", "mutate", "rule"),
    [
        pytest.param(
            _minimal_regression,
            lambda d: d["problem"].__setitem__("target", "sale_price"),
            "problem.target 'sale_price' is not a schema column",
            id="target-not-a-column",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["goal"].__setitem__("metric", "auprc"),
            "goal.metric 'auprc' does not fit a regression problem",
            id="binary-metric-on-regression",
        ),
        pytest.param(
            _card_fraud,
            lambda d: d["goal"].__setitem__("metric", "rmse"),
            "goal.metric 'rmse' does not fit a binary classification problem",
            id="regression-metric-on-binary",
        ),
        pytest.param(
            _card_fraud,
            lambda d: d["data"].pop("amount_column"),
            "amount_recall_at_alert_rate needs data.amount_column",
            id="amount-metric-without-amount",
        ),
        pytest.param(
            _card_fraud,
            lambda d: d["goal"].pop("max_alert_rate"),
            "needs goal.max_alert_rate",
            id="alert-rate-metric-without-rate",
        ),
        pytest.param(
            _card_fraud,
            lambda d: d["data"].pop("key"),
            "data.key is required to join a labels feed",
            id="labels-without-key",
        ),
        pytest.param(
            _card_fraud,
            lambda d: d["goal"]["value"].__setitem__("true_positive", "amount_eur"),
            "goal.value.true_positive names column 'amount_eur', which is not a schema column",
            id="value-column-unknown",
        ),
        pytest.param(
            _card_fraud,
            lambda d: d["data"].pop("entity_column"),
            "feature group 'card_velocity' of kind velocity needs data.time_column and data.entity_column",
            id="velocity-without-entity",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["features"]["groups"].append({"name": "clock", "kind": "time_parts"}),
            "feature group 'clock' of kind time_parts needs data.time_column",
            id="time-parts-without-time",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["features"]["groups"][0]["columns"].append("garden"),
            "feature group 'base' uses columns ['garden'] that are not schema columns",
            id="feature-column-unknown-with-drop",
        ),
        pytest.param(
            _card_fraud,
            lambda d: d["training"]["candidates"].append({"family": "linear"}),
            "linear is for regression",
            id="linear-on-binary",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["training"]["candidates"].append({"family": "logistic"}),
            "logistic is for classification",
            id="logistic-on-regression",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d.__setitem__("backend", "aws"),
            "backend aws needs aws.bucket and aws.role_arn",
            id="aws-without-bucket",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["training"].__setitem__("initial_candidates", ["random_forest"]),
            "initial_candidates ['random_forest'] are not among candidates",
            id="initial-candidate-unknown",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["schema"]["columns"][0].__setitem__("allowed", ["1"]),
            "allowed values only apply to string or category columns",
            id="allowed-on-float",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["schema"]["columns"][2].__setitem__("min", 0),
            "min/max only apply to int or float columns",
            id="min-on-category",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["data"].__setitem__("format", "sklearn"),
            "format sklearn needs source 'sklearn:<loader name>'",
            id="sklearn-without-loader",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["data"].update(source="sklearn:load_diabetes", format="sklearn", layout="partitioned"),
            "a sklearn: data set is a single file",
            id="sklearn-partitioned",
        ),
        pytest.param(
            _minimal_regression,
            lambda d: d["features"]["groups"].append({"name": "base", "kind": "interactions"}),
            "feature group names must be unique",
            id="duplicate-group",
        ),
    ],
)
def test_cross_field_rules(base: Callable[[], dict[str, Any]], mutate: Mutation, rule: str) -> None:
    data = base()
    parse_spec(copy.deepcopy(data), "ok.yaml")  # the base is valid: the mutation alone breaks it
    mutate(data)
    with pytest.raises(SpecError) as err:
        parse_spec(data, "problem.yaml")
    assert "problem.yaml: field '" in str(err.value)
    assert rule in str(err.value)


def test_extra_columns_keep_lets_features_use_undeclared_columns() -> None:
    data = _minimal_regression()
    data["features"]["groups"][0]["columns"].append("garden")
    data["schema"]["extra_columns"] = "keep"
    spec = parse_spec(data)
    assert spec.schema_.extra_columns == "keep"
    assert "garden" in spec.group("base").columns


def test_a_labels_feed_supplies_the_target() -> None:
    data = _card_fraud()
    assert "is_fraud" not in [c["name"] for c in data["schema"]["columns"]]
    spec = parse_spec(data)  # the target comes from the chargeback feed, not from a schema column
    assert spec.problem.target == "is_fraud"
    data.pop("data")
    data["data"] = {"source": "x", "key": "transaction_id"}
    with pytest.raises(SpecError, match="problem.target 'is_fraud' is not a schema column"):
        parse_spec(data)


def test_aws_backend_with_bucket_and_role_is_valid() -> None:
    data = _minimal_regression()
    data["backend"] = "aws"
    data["aws"] = {"bucket": "ml-artifacts", "role_arn": "arn:aws:iam::123456789012:role/ml"}
    spec = parse_spec(data)
    assert spec.backend == "aws" and spec.aws.region == "eu-west-1"


# --- environment overrides and source resolution ---------------------------------------------------
def test_problems_dir_defaults_to_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ML_PROBLEMS_DIR", raising=False)
    monkeypatch.delenv("ML_DATA_ROOT", raising=False)
    assert problems_dir() == DEFAULT_PROBLEMS_DIR
    assert data_root() == spec_module.PROJECT_ROOT
    assert spec_files() == SHIPPED
    assert spec_path("card_fraud") == CARD_FRAUD


def test_ml_problems_dir_points_at_other_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, _minimal_regression())
    (tmp_path / "notes.txt").write_text("not a spec")
    monkeypatch.setenv("ML_PROBLEMS_DIR", str(tmp_path))
    assert problems_dir() == tmp_path
    assert spec_files() == [tmp_path / "house_prices.yaml"]
    assert spec_path("house_prices") == tmp_path / "house_prices.yaml"
    assert load_spec(spec_path("house_prices")).title == "House prices"
    monkeypatch.setenv("ML_PROBLEMS_DIR", "")  # empty means unset
    assert problems_dir() == DEFAULT_PROBLEMS_DIR
    assert spec_files(tmp_path) == [tmp_path / "house_prices.yaml"]


def test_relative_sources_resolve_against_ml_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path
    assert resolve_source("data/card_fraud/landing/transactions") == str(
        (tmp_path / "data/card_fraud/landing/transactions").resolve()
    )
    other = tmp_path / "other"
    assert resolve_source("x.csv", root=other) == str((other / "x.csv").resolve())
    monkeypatch.delenv("ML_DATA_ROOT")
    assert resolve_source("data/x.csv") == str((spec_module.PROJECT_ROOT / "data/x.csv").resolve())


@pytest.mark.parametrize(
    "source",
    ["s3://bucket/prefix/transactions", "file:///srv/data/x.parquet", "sklearn:load_diabetes", "/abs/path/x.csv"],
)
def test_uris_loaders_and_absolute_paths_are_left_alone(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_DATA_ROOT", "/somewhere/else")
    assert resolve_source(source) == source


@pytest.mark.parametrize(
    ("metric", "target", "ok"),
    [
        ("roc_auc", 1.5, False),
        ("amount_recall_at_alert_rate", 1.01, False),
        ("auprc", -0.1, False),
        ("roc_auc", 0.8, True),
        ("r2", 1.2, False),
        ("r2", -0.5, True),
        ("rmse", -1.0, False),
        ("rmse", 1500.0, True),
    ],
)
def test_goal_target_must_be_reachable_by_its_metric(metric, target, ok):
    name = "diabetes" if metric in ("r2", "rmse") else "card_fraud"
    data = yaml.safe_load((DEFAULT_PROBLEMS_DIR / f"{name}.yaml").read_text())
    data["goal"]["metric"], data["goal"]["target"] = metric, target
    if ok:
        assert parse_spec(data, f"{name}.yaml").goal.target == target
    else:
        with pytest.raises(SpecError, match=f"goal.target {target} is out of range for {metric}"):
            parse_spec(data, f"{name}.yaml")


# --- column roles ------------------------------------------------------------------------------------
DATASET_COLUMNS = [
    "transaction_id", "ts", "card_number", "merchant_id", "merchant_category", "amount", "channel", "country", "is_fraud"
]  # fmt: skip


def test_excluded_from_features_are_target_key_time_entity_and_pii() -> None:
    spec = parse_spec(_card_fraud())
    assert spec.excluded_from_features == ["card_number", "is_fraud", "transaction_id", "ts"]
    assert parse_spec(_minimal_regression()).excluded_from_features == ["price"]  # no key, time, entity or PII
    data = _minimal_regression()
    data["schema"]["columns"].append({"name": "owner", "dtype": "string", "pii": True})
    assert parse_spec(data).excluded_from_features == ["owner", "price"]


def test_feature_inputs_leave_out_the_key_and_pii_unless_a_role_or_a_group_needs_them() -> None:
    spec = parse_spec(_card_fraud())
    groups = [spec.group("transaction")]
    # the key goes; card_number is PII but the entity column (per-entity groups read it): kept
    assert spec.feature_inputs(groups, DATASET_COLUMNS) == [c for c in DATASET_COLUMNS if c != "transaction_id"]
    # a group that names the key keeps it (and engineer() then reports it as excluded)
    naming_key = spec.group("transaction").model_copy(update={"columns": ["amount", "transaction_id"]})
    assert spec.feature_inputs([naming_key], DATASET_COLUMNS) == DATASET_COLUMNS
    # data set order, whatever order the columns come in; unknown columns pass through
    assert spec.feature_inputs(groups, ["x", "transaction_id", "amount"]) == ["x", "amount"]

    data = _card_fraud()
    data["data"].pop("entity_column")
    data["features"]["groups"] = [g for g in data["features"]["groups"] if g["kind"] not in ("velocity", "history")]
    data["features"]["initial"] = [data["features"]["groups"][0]["name"]]
    no_entity = parse_spec(data)
    assert "card_number" not in no_entity.feature_inputs(no_entity.features.groups, DATASET_COLUMNS)


def test_profile_roles_split_numeric_and_categorical_and_skip_target_key_time_pii() -> None:
    import pandas as pd

    spec = parse_spec(_card_fraud())
    df = pd.DataFrame(
        {
            "transaction_id": ["t1", "t2"],
            "ts": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
            "card_number": ["c1", "c2"],
            "amount": [1.5, 2.0],
            "flag": [True, False],
            "n": pd.array([1, None], dtype="Int64"),
            "channel": pd.Categorical(["pos", "ecom"]),
            "merchant_id": ["m1", "m2"],
            "seen_at": pd.to_datetime(["2026-01-01", "2026-01-02"]),
            "is_fraud": [0, 1],
        }
    )
    assert spec.profile_roles(df) == (["amount", "flag", "n"], ["channel", "merchant_id"])
    assert spec.profile_roles(df.iloc[:, ::-1]) == (["n", "flag", "amount"], ["merchant_id", "channel"])
    data = _card_fraud()
    for col in data["schema"]["columns"]:
        col["pii"] = False
    not_pii = parse_spec(data)  # the entity column is profiled like any other (it is not a feature)
    assert not_pii.profile_roles(df)[1] == ["card_number", "channel", "merchant_id"]


def test_target_type_follows_the_problem_type() -> None:
    assert parse_spec(_card_fraud()).target_type == "binary"
    assert parse_spec(_minimal_regression()).target_type == "continuous"
