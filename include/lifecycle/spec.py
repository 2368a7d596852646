"""Problem specification: one YAML file per business problem, validated by a typed model.

Section 1 of the lifecycle ("formulate the problem") starts here: the spec states the
business goal in words, the measurable criterion, where the data is, what it should
look like, how to train and when to deploy. Nothing in this module imports airflow,
so the same spec is read by DAGs, Glue jobs and SageMaker training scripts.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:  # pandas loads when a frame is profiled, not when a DAG file reads its spec
    import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Where the problem specs are, and what relative data paths in them are relative to;
# overridable so a deployment (or a test) can point the same code at other specs and data.
# Read at call time, so one process can switch between spec folders (tests, backfills of other data).
DEFAULT_PROBLEMS_DIR = PROJECT_ROOT / "include" / "problems"


def problems_dir() -> Path:
    """``$ML_PROBLEMS_DIR``, else ``include/problems`` of this project."""
    return Path(os.environ.get("ML_PROBLEMS_DIR") or DEFAULT_PROBLEMS_DIR)


def data_root() -> Path:
    """``$ML_DATA_ROOT``, else the project root: what relative local data paths are relative to."""
    return Path(os.environ.get("ML_DATA_ROOT") or PROJECT_ROOT)


DType = Literal["string", "int", "float", "bool", "category", "timestamp", "date"]
MetricName = Literal[
    "amount_recall_at_alert_rate",
    "recall_at_alert_rate",
    "auprc",
    "roc_auc",
    "f1",
    "precision",
    "recall",
    "rmse",
    "mae",
    "r2",
]
LOWER_IS_BETTER = {"rmse", "mae"}
# the values each metric can take: shares and probabilities in [0, 1], r2 at most 1, errors >= 0
METRIC_RANGE: dict[str, tuple[float, float]] = {
    **{m: (0.0, 1.0) for m in ("amount_recall_at_alert_rate", "recall_at_alert_rate", "auprc", "roc_auc")},
    **{m: (0.0, 1.0) for m in ("f1", "precision", "recall")},
    "r2": (-math.inf, 1.0),
    "rmse": (0.0, math.inf),
    "mae": (0.0, math.inf),
}
REGRESSION_METRICS = {"rmse", "mae", "r2"}
BINARY_METRICS = set(get_args(MetricName)) - REGRESSION_METRICS
FeatureKind = Literal["raw", "time_parts", "velocity", "history", "target_encoding", "interactions"]
ModelFamily = Literal["logistic", "linear", "random_forest", "xgboost"]


class SpecError(ValueError):
    """A problem spec is invalid; the message names the file, the field and the rule."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """One expected input column."""

    name: str
    dtype: DType
    nullable: bool = True
    pii: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _range_fits_dtype(self) -> ColumnSpec:
        if (self.min is not None or self.max is not None) and self.dtype not in ("int", "float"):
            raise ValueError(f"column {self.name!r}: min/max only apply to int or float columns")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is greater than max {self.max}")
        if self.allowed is not None and self.dtype not in ("string", "category"):
            raise ValueError(f"column {self.name!r}: allowed values only apply to string or category columns")
        return self


class LabelsSpec(_Strict):
    """A separate label feed joined to the data (e.g. chargebacks that confirm fraud later).

    Each row of the feed marks one key as positive; its arrival time decides whether a run
    may use it: a run sees only labels that arrived before its data interval end.
    """

    source: str
    format: Literal["parquet", "csv"] = "parquet"
    key: str
    arrived_at: str
    label_value: Any = 1
    negative_value: Any = 0
    maturity_days: int = Field(0, ge=0, le=365, description="rows younger than this at the interval end are left out")


class DataSpec(_Strict):
    """Where the data is and which rows a run uses."""

    source: str = Field(description="CSV/Parquet file, a folder of ds=YYYY-MM-DD partitions, or a sklearn: data set")
    format: Literal["parquet", "csv", "sklearn"] = "parquet"
    layout: Literal["partitioned", "single_file"] = "partitioned"
    key: str | None = None
    time_column: str | None = None
    entity_column: str | None = None
    amount_column: str | None = None
    lookback_days: int = Field(28, ge=1, le=3650)
    max_lookback_days: int = Field(56, ge=1, le=3650)
    partition_tolerance_hours: float = Field(
        3.0,
        ge=0,
        le=168,
        description="a row's time_column may lie this many hours outside its ds= partition's day; "
        "further out it is quarantined (outside_partition)",
    )
    labels: LabelsSpec | None = None

    @model_validator(mode="after")
    def _layout_fits(self) -> DataSpec:
        if self.format == "sklearn" and self.layout != "single_file":
            raise ValueError("a sklearn: data set is a single file, set layout: single_file")
        if self.format == "sklearn" and not self.source.startswith("sklearn:"):
            raise ValueError("format sklearn needs source 'sklearn:<loader name>', e.g. sklearn:load_breast_cancer")
        if self.max_lookback_days < self.lookback_days:
            raise ValueError("max_lookback_days must be >= lookback_days")
        return self


class SchemaSpec(_Strict):
    """The expected shape of the input: rows that break it are quarantined with the rule."""

    columns: list[ColumnSpec] = Field(min_length=1)
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    extra_columns: Literal["keep", "drop"] = Field(
        "drop", description="columns not declared here: keep them (numeric when every value parses) or drop them"
    )

    @field_validator("columns")
    @classmethod
    def _unique(cls, cols: list[ColumnSpec]) -> list[ColumnSpec]:
        seen: set[str] = set()
        for c in cols:
            if c.name in seen:
                raise ValueError(f"column {c.name!r} is declared twice")
            seen.add(c.name)
        return cols

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


class QualitySpec(_Strict):
    """The data quality gate of section 3."""

    min_rows: int = Field(100, ge=1)
    min_positives: int = Field(20, ge=0)
    max_missing_share: float = Field(0.5, ge=0, le=1)
    max_drift_psi: float = Field(0.25, gt=0)
    drift_recent_days: int = Field(
        7, ge=1, le=3650, description="the newest days of the window compared with the champion's training data"
    )
    min_completeness: float = Field(
        0.8, ge=0, le=1, description="share of the window's days that must have a partition with rows"
    )
    max_staleness_days: int = Field(
        2, ge=0, le=3650, description="days the newest partition may lag behind the window's last day"
    )


class ValueSpec(_Strict):
    """Business value of each outcome, used to choose the decision threshold.

    A number is a fixed value per row; a column name takes the value from that column
    (e.g. the transaction amount recovered when a fraud is caught).
    """

    true_positive: float | str = 1.0
    false_positive: float | str = -1.0
    false_negative: float | str = 0.0


class GoalSpec(_Strict):
    """The business goal in words and the measurable criterion that stands for it."""

    statement: str = Field(min_length=10)
    how_used: str = ""
    assumptions: list[str] = []
    metric: MetricName
    target: float
    max_alert_rate: float | None = Field(None, gt=0, le=1)
    value: ValueSpec = ValueSpec()
    champion_margin: float = Field(0.0, ge=0)
    near_goal: float = Field(0.15, ge=0, le=1, description="relative shortfall that counts as close to the goal")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="level of every interval the gate reports")
    bootstrap_resamples: int = Field(1000, ge=100, le=20000, description="resamples of the test rows per interval")
    alert_rate_headroom: float = Field(
        0.3, ge=0, lt=1, description="the threshold is chosen on validation for max_alert_rate x (1 - headroom)"
    )

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    def met_by(self, score: float) -> bool:
        """Whether ``score`` satisfies the success criterion."""
        return score >= self.target if self.higher_is_better else score <= self.target


class ProblemSpec(_Strict):
    type: Literal["binary_classification", "regression"]
    target: str
    positive_label: Any = 1
    target_transform: Literal["none", "log", "log1p"] = Field(
        "none",
        description="regression: fit on log(y) (needs y > 0) or log1p(y) (needs y > -1); the model predicts, "
        "and the goal metric is reported, on the original scale",
    )


class FeatureGroupSpec(_Strict):
    """A named set of features; rounds switch groups on one by one."""

    name: str
    kind: FeatureKind
    columns: list[str] = []
    params: dict[str, Any] = {}


class FeaturesSpec(_Strict):
    groups: list[FeatureGroupSpec] = Field(min_length=1)
    initial: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _initial_known(self) -> FeaturesSpec:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("feature group names must be unique")
        unknown = [n for n in self.initial if n not in names]
        if unknown:
            raise ValueError(f"initial feature groups {unknown} are not declared in groups {names}")
        return self

    @property
    def augment_order(self) -> list[str]:
        """Groups not in the initial set, in declaration order: the next one is added first."""
        return [g.name for g in self.groups if g.name not in self.initial]


class CandidateSpec(_Strict):
    family: ModelFamily
    params: dict[str, Any] = {}
    search: dict[str, list[Any]] = {}


class SplitSpec(_Strict):
    """Time-respecting split: train on the past, validate on later days, test on the latest.

    The days are durations back from the end of the labelled data (the run's data interval end
    minus ``data.labels.maturity_days``), not calendar dates."""

    validation_days: int = Field(5, ge=1)
    test_days: int = Field(5, ge=1)
    min_positives: int = Field(
        5,
        ge=1,
        description="binary, time split: the test and validation windows are widened back a day at a time "
        "until each holds this many positives (and a negative); else the split is an error",
    )
    validation_share: float = Field(0.2, gt=0, lt=0.5, description="used when there is no time column")
    test_share: float = Field(0.2, gt=0, lt=0.5, description="used when there is no time column")
    seed: int = Field(
        0,
        ge=0,
        description="no time column: which rows are train, validation and test is drawn from each row's values "
        "and this seed, not from training.seed, so every training seed and every run on the same rows is "
        "judged on the same test rows; change it only to draw another split",
    )


class TrainingSpec(_Strict):
    candidates: list[CandidateSpec] = Field(min_length=1)
    initial_candidates: list[ModelFamily] | None = None
    trials_per_candidate: int = Field(2, ge=1, le=50)
    max_trials: int = Field(24, ge=1, le=200)
    seed: int = 42
    class_weight: Literal["balanced", "none"] = "balanced"
    selection: Literal["auto", "cv", "holdout"] = Field(
        "auto",
        description="how trials are compared: cv (stratified k-fold on the train + validation rows), holdout "
        "(the validation rows); auto: holdout for time-ordered partitioned data, cv for a single file or when "
        "the train + validation rows are fewer than cv_max_rows",
    )
    cv_folds: int = Field(5, ge=2, le=20)
    calibration: Literal["none", "isotonic", "sigmoid"] = Field(
        "none", description="map scores to probabilities on validation (isotonic or Platt); deployed with the model"
    )
    cv_max_rows: int = Field(20_000, ge=0, description="auto: cv below this many train + validation rows")
    split: SplitSpec = SplitSpec()

    @model_validator(mode="after")
    def _initial_known(self) -> TrainingSpec:
        fams = [c.family for c in self.candidates]
        if self.initial_candidates:
            unknown = [f for f in self.initial_candidates if f not in fams]
            if unknown:
                raise ValueError(f"initial_candidates {unknown} are not among candidates {fams}")
        return self


class DiagnosisSpec(_Strict):
    """Thresholds of the rule that picks the remedy after a missed round."""

    max_gap: float = Field(0.15, ge=0, description="train minus validation score that counts as overfitting")
    min_train_positives: int = Field(50, ge=0)


class DeploySpec(_Strict):
    enabled: bool = True
    require_approval: bool = Field(
        False, description="a person approves (Airflow human-in-the-loop) before a model is deployed"
    )
    approval_timeout_hours: float | None = Field(
        None, gt=0, description="no answer within this many hours counts as Reject (none: wait)"
    )
    endpoint_name: str | None = None


class ServingSpec(_Strict):
    """How the champion is served (the endpoint, include/lifecycle/serving.py, and batch scoring)."""

    capture: bool = Field(
        True,
        description="record every scored row (key, inputs with PII tokenised, score, decision, model version, "
        "time) in the artifact store for the monitor: the endpoint under captures/ds=<day>/, batch scoring "
        "in its scores/ds=<day>/ file",
    )


class MonitoringSpec(_Strict):
    """The champion watched in production by the ``<problem>_monitoring`` DAG (problems whose daily
    partitions are batch-scored): realised goal metric on matured labels, drift of the served
    inputs, and a retraining request (the ``<problem>.retrain_requested`` asset) on evidence."""

    enabled: bool = True
    window_days: int = Field(14, ge=1, le=365, description="rolling window of matured scored days the verdict uses")
    min_positives: int = Field(
        20, ge=1, description="binary: a day or window with fewer positives cannot tell (no value, no verdict)"
    )
    bootstrap_resamples: int = Field(500, ge=100, le=20000, description="resamples per realised-metric interval")
    drift_days: int = Field(3, ge=1, le=90, description="newest scored days compared with the champion's training rows")
    max_drift_psi: float | None = Field(
        None, gt=0, description="PSI limit per served feature (default quality.max_drift_psi)"
    )
    retrain_on_decay: bool = Field(
        True, description="request retraining when the realised metric misses the goal with confidence"
    )
    retrain_on_drift: bool = Field(False, description="request retraining when a served feature drifts past the limit")
    alert: bool = Field(True, description="send the retraining request's evidence on the alerts channel")


class AlertsSpec(_Strict):
    """Notifications when a run fails or ends without meeting the goal (an Airflow notifier)."""

    channel: Literal["log", "smtp", "slack", "sns"] = "log"
    on_failure: bool = True
    on_goal_not_met: bool = True
    to: list[str] = Field([], description="smtp: e-mail addresses")
    conn_id: str | None = Field(None, description="smtp/slack/sns connection (default: the provider's)")
    target: str | None = Field(None, description="slack: channel; sns: topic ARN")

    @model_validator(mode="after")
    def _addressed(self) -> AlertsSpec:
        if self.channel == "smtp" and not self.to:
            raise ValueError("alerts.to: the smtp channel needs at least one address")
        if self.channel in ("slack", "sns") and not self.target:
            raise ValueError(
                f"alerts.target: the {self.channel} channel needs a target (slack channel or SNS topic ARN)"
            )
        return self


class GlueSpec(_Strict):
    """How collect_and_label runs as an AWS Glue job (backend aws)."""

    job_type: Literal["glueetl", "pythonshell"] = Field(
        "glueetl",
        description="glueetl (Glue 5.0 runs Python 3.11, which pandas 3 needs) or pythonshell (Python 3.9 only)",
    )
    glue_version: str = Field("5.0", pattern=r"^\d+\.\d+$")
    worker_type: Literal["G.1X", "G.2X", "G.4X", "G.8X"] = "G.1X"
    number_of_workers: int = Field(2, ge=2, le=299, description="glueetl workers")
    max_capacity: float = Field(0.0625, description="pythonshell DPUs: 0.0625 or 1")
    timeout_minutes: int = Field(60, ge=1, le=2880)
    database: str = Field(
        "ml_lifecycle", pattern=r"^[a-z0-9_]{1,255}$", description="Glue Data Catalog database of the curated tables"
    )

    @field_validator("max_capacity")
    @classmethod
    def _shell_dpus(cls, v: float) -> float:
        if v not in (0.0625, 1.0):
            raise ValueError("aws.glue.max_capacity must be 0.0625 or 1 (Python shell DPUs)")
        return v


class AwsSpec(_Strict):
    """Where and how the aws backend runs: S3 artifacts (encrypted), Glue ETL, SageMaker training,
    tuning, endpoints and batch transform."""

    region: str = Field("eu-west-1", pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
    bucket: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = Field(
        "ml-lifecycle",
        pattern=r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$",
        description="key prefix in the bucket",
    )
    role_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
    kms_key_id: str | None = Field(None, description="SSE-KMS key (id, ARN or alias); none: SSE-S3 (AES256)")
    conn_id: str = "aws_default"
    pii_key_secret: str = Field(
        "ml-lifecycle/pii-hash-key",
        description="Secrets Manager secret holding the PII hashing key (read by the Glue job)",
    )
    training_instance_type: str = Field("ml.m5.xlarge", pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
    training_instance_count: int = Field(1, ge=1, le=1, description="train.py fits on one node")
    training_volume_gb: int = Field(30, ge=1, le=16384)
    training_max_runtime_seconds: int = Field(3600, ge=60, le=28 * 24 * 3600)
    framework: Literal["sklearn"] = "sklearn"
    framework_version: str = Field("1.4-2", pattern=r"^\d+\.\d+-\d+$", description="SageMaker framework image tag")
    training_image: str | None = Field(
        None, description="an image implementing the script-mode contract; none: the framework image"
    )
    serving_image: str | None = Field(
        None, description="an image serving the SageMaker hosting contract (include/lifecycle/serving.py) for endpoints"
    )
    serving_instance_type: str = Field("ml.m5.large", pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
    serving_instance_count: int = Field(1, ge=1, le=20)
    poll_seconds: int = Field(
        30, ge=1, le=600, description="how often a waiting task asks Glue/SageMaker for the state"
    )
    deferrable: bool = Field(
        True,
        description="wait for Glue and SageMaker jobs in the triggerer (no worker slot held); needs a running "
        "triggerer (make up and docker-compose start one); false: the task polls in its worker",
    )
    hyperparameter_tuning: bool = Field(
        True,
        description="a family with more than one trial in a round runs as one SageMaker hyperparameter tuning "
        "job over its search grid; false: one training job per trial",
    )
    tuning_strategy: Literal["Bayesian", "Random"] = "Bayesian"
    tuning_max_parallel_jobs: int = Field(2, ge=1, le=100, description="training jobs a tuning job runs at once")
    transform_instance_type: str = Field("ml.m5.large", pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
    transform_instance_count: int = Field(1, ge=1, le=100, description="instances of a batch transform job")
    glue: GlueSpec = GlueSpec()


class Spec(_Strict):
    """A whole business problem: what success means, the data, the features, the models."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
    title: str
    owner: str = "ml-platform"
    tags: list[str] = []
    schedule: str | None = "@daily"
    max_active_runs: int = Field(1, ge=1, le=16)
    backend: Literal["local", "aws"] = "local"
    max_rounds: int = Field(3, ge=1, le=10)
    goal: GoalSpec
    problem: ProblemSpec
    data: DataSpec
    schema_: SchemaSpec = Field(alias="schema")
    quality: QualitySpec = QualitySpec()
    features: FeaturesSpec
    training: TrainingSpec
    diagnosis: DiagnosisSpec = DiagnosisSpec()
    deploy: DeploySpec = DeploySpec()
    serving: ServingSpec = ServingSpec()
    alerts: AlertsSpec = AlertsSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    aws: AwsSpec = AwsSpec()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        names = set(self.schema_.names)
        label_target = self.data.labels is not None
        if not label_target and self.problem.target not in names:
            raise ValueError(
                f"problem.target {self.problem.target!r} is not a schema column (and there is no labels feed)"
            )
        for field in ("key", "time_column", "entity_column", "amount_column"):
            col = getattr(self.data, field)
            if col is not None and col not in names:
                raise ValueError(f"data.{field} {col!r} is not a schema column")
        if self.data.labels and self.data.key is None:
            raise ValueError("data.key is required to join a labels feed")
        binary = self.problem.type == "binary_classification"
        if binary and self.goal.metric not in BINARY_METRICS:
            raise ValueError(f"goal.metric {self.goal.metric!r} does not fit a binary classification problem")
        if not binary and self.goal.metric not in REGRESSION_METRICS:
            raise ValueError(f"goal.metric {self.goal.metric!r} does not fit a regression problem")
        if binary and self.problem.target_transform != "none":
            raise ValueError(
                f"problem.target_transform {self.problem.target_transform} applies to regression targets only"
            )
        # a target the metric can never reach is a typo, not a goal (e.g. roc_auc 1.5)
        low, high = METRIC_RANGE[self.goal.metric]
        if not low <= self.goal.target <= high:
            shown = (
                f"[{low}, {high}]"
                if math.isfinite(high) and math.isfinite(low)
                else (f">= {low}" if math.isfinite(low) else f"<= {high}")
            )
            raise ValueError(
                f"goal.target {self.goal.target} is out of range for {self.goal.metric}, which takes values in {shown}"
            )
        if self.goal.metric == "amount_recall_at_alert_rate" and not self.data.amount_column:
            raise ValueError("goal.metric amount_recall_at_alert_rate needs data.amount_column")
        if self.goal.metric.endswith("_at_alert_rate") and self.goal.max_alert_rate is None:
            raise ValueError(f"goal.metric {self.goal.metric} needs goal.max_alert_rate")
        for outcome in ("true_positive", "false_positive", "false_negative"):
            v = getattr(self.goal.value, outcome)
            if isinstance(v, str) and v not in names:
                raise ValueError(f"goal.value.{outcome} names column {v!r}, which is not a schema column")
        for g in self.features.groups:
            missing = [c for c in g.columns if c not in names]
            if missing and self.schema_.extra_columns == "drop":
                raise ValueError(f"feature group {g.name!r} uses columns {missing} that are not schema columns")
            if g.kind in ("velocity", "history") and not (self.data.time_column and self.data.entity_column):
                raise ValueError(
                    f"feature group {g.name!r} of kind {g.kind} needs data.time_column and data.entity_column"
                )
            if g.kind == "time_parts" and not self.data.time_column:
                raise ValueError(f"feature group {g.name!r} of kind time_parts needs data.time_column")
        fams = {c.family for c in self.training.candidates}
        if not binary and "logistic" in fams:
            raise ValueError("training.candidates: logistic is for classification; use linear for regression")
        if binary and "linear" in fams:
            raise ValueError("training.candidates: linear is for regression; use logistic for classification")
        if self.backend == "aws" and not (self.aws.bucket and self.aws.role_arn):
            raise ValueError("backend aws needs aws.bucket and aws.role_arn")
        return self

    # --- derived helpers -------------------------------------------------------------
    @property
    def schema(self) -> SchemaSpec:  # pragma: no cover - alias for readers
        return self.schema_

    @property
    def pii_columns(self) -> list[str]:
        return [c.name for c in self.schema_.columns if c.pii]

    @property
    def is_binary(self) -> bool:
        return self.problem.type == "binary_classification"

    # --- column roles: what each column of the data set is for ------------------------
    @property
    def target_type(self) -> Literal["binary", "continuous"]:
        """The target as the data profile describes it: ``binary`` or ``continuous`` (regression)."""
        return "binary" if self.is_binary else "continuous"

    @property
    def excluded_from_features(self) -> list[str]:
        """Columns no feature group may use, sorted: the target, the key, the time, the entity and
        the PII columns (the time and entity columns feed the per-entity groups, never as values)."""
        d = self.data
        return sorted({self.problem.target, d.key, d.time_column, d.entity_column, *self.pii_columns} - {None})

    def feature_inputs(self, groups: Iterable[FeatureGroupSpec], columns: Iterable[str]) -> list[str]:
        """The data set's columns feature engineering reads, in data set order: all but the key and
        the PII columns, unless they are the target, time, entity or amount column or a feature group
        names them (then that group's check reports them). The per-row unique key is the costliest
        column to read and never a feature."""
        d = self.data
        keep = {self.problem.target, d.time_column, d.entity_column, d.amount_column}
        keep |= {c for g in groups for c in g.columns}
        skip = ({d.key, *self.pii_columns} - {None}) - keep
        return [c for c in columns if c not in skip]

    @property
    def monitored(self) -> bool:
        """Whether the champion is watched in production (the ``<problem>_monitoring`` DAG): its
        daily partitions are batch-scored and their labels arrive later in a feed."""
        d = self.data
        return bool(
            self.monitoring.enabled
            and self.deploy.enabled
            and d.layout == "partitioned"
            and d.time_column
            and d.key
            and d.labels is not None
        )

    def split_columns(self, columns: Iterable[str]) -> list[str]:
        """The columns a split without a time column is drawn from (see ``dataset.row_keys``): the
        per-row key when the data declares one, else every column of the data set (the target too).
        A caller that reads only some columns adds these, so every section draws the same split."""
        if self.data.time_column:
            return []
        columns = list(columns)
        return [self.data.key] if self.data.key and self.data.key in columns else columns

    def profile_roles(self, df: pd.DataFrame) -> tuple[list[str], list[str]]:
        """``(numeric, categorical)``: the columns of ``df`` the data profile describes, in frame order.

        The target, key, time and PII columns are left out (the profile treats the target and the
        time apart); bool and numeric columns are numeric, timestamps are skipped, the rest is
        categorical."""
        from pandas.api import types as ptypes

        skip = {self.problem.target, self.data.key, self.data.time_column, *self.pii_columns} - {None}
        numeric, categorical = [], []
        for col in df.columns:
            if col in skip:
                continue
            if ptypes.is_bool_dtype(df[col]) or ptypes.is_numeric_dtype(df[col]):
                numeric.append(col)
            elif not ptypes.is_datetime64_any_dtype(df[col]):
                categorical.append(col)
        return numeric, categorical

    def digest(self) -> str:
        """A stable hash of the validated spec, recorded in every model's lineage."""
        payload = self.model_dump_json(by_alias=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def group(self, name: str) -> FeatureGroupSpec:
        for g in self.features.groups:
            if g.name == name:
                return g
        raise KeyError(name)


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out.replace("schema_", "schema")


def _field_in_message(msg: str) -> str:
    """Cross-field rules are checked on the whole spec; their message starts with the field."""
    m = re.match(r"((?:[a-z_]+\.)+[a-z_]+)", msg)
    if m:
        return m.group(1)
    if msg.startswith("feature group"):
        return "features.groups"
    if msg.startswith("backend"):
        return "backend"
    return "(top level)"


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> Spec:
    """Validate a spec dict; raise SpecError naming the file, the field and the rule."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = re.sub(r"^Value error, ", "", err["msg"])
            field = _field_path(err["loc"]) or _field_in_message(msg)
            lines.append(f"{source}: field '{field}': {msg}")
        raise SpecError("invalid problem spec\n" + "\n".join(lines)) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate one problem YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    spec = parse_spec(data, source=str(path))
    if spec.name != path.stem:
        raise SpecError(
            f"{path}: field 'name': must equal the file name without .yaml ({path.stem!r}), got {spec.name!r}"
        )
    return spec


def spec_files(directory: str | Path | None = None) -> list[Path]:
    return sorted(Path(directory or problems_dir()).glob("*.yaml"))


def spec_path(problem: str) -> Path:
    """The spec file of a problem (the file is named after the problem)."""
    return problems_dir() / f"{problem}.yaml"


def resolve_source(source: str, root: Path | None = None) -> str:
    """Relative local paths in a spec are relative to the data root ($ML_DATA_ROOT, else the project root)."""
    if "://" in source or source.startswith("sklearn:") or Path(source).is_absolute():
        return source
    return str(((root or data_root()) / source).resolve())
