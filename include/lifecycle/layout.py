"""The run layout: the catalog of every artifact a lifecycle run reads or writes.

One place names each artifact, its kind and the one task that writes it (Kedro's catalog idea),
so tasks are coupled by these names instead of path literals. Paths are relative to the
problem's store (``<root>/<problem>``); every run writes under ``runs/<run id>/`` only, and a
round under ``runs/<run id>/round_<k>/``. The shapes of the JSON artifacts that more than one
task reads are typed below.

This module is pure (no Airflow): the jobs that run on Glue and SageMaker use it too.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

from include.lifecycle.store import safe_run_id

Kind = Literal["json", "html", "parquet", "png", "joblib", "folder"]


class Artifact(NamedTuple):
    """One entry of the catalog: where it lives (a template), what it is, who writes it."""

    template: str
    kind: Kind
    writer: str
    doc: str


# run-scoped artifacts ({run} is the run folder, {k} the round, {trial} a trial id, {split} a split)
CATALOG: dict[str, Artifact] = {
    "problem_card": Artifact("{run}/problem_card.json", "json", "formulate_problem", "the problem framed, data checks"),
    "collect_summary": Artifact(
        "{run}/collect_summary.json", "json", "collect_and_label", "rows in/curated/quarantined per rule, partitions"
    ),
    "dataset": Artifact("{run}/dataset.parquet", "parquet", "collect_and_label", "the run's labelled data set"),
    "eda_profile": Artifact("{run}/eda/profile.json", "json", "evaluate_data", "dtypes, statistics, histogram bins"),
    "eda_verdict": Artifact("{run}/eda/verdict.json", "json", "evaluate_data", "the quality gate and the drift"),
    "eda_section": Artifact("{run}/eda/section.html", "html", "evaluate_data", "the EDA part of the run report"),
    "eda_report": Artifact("{run}/eda/eda_report.html", "html", "evaluate_data", "the EDA report on its own"),
    "plan": Artifact(
        "{run}/round_{k}/plan.json", "json", "formulate_problem (round 1), the remedy (round k+1)", "a round's plan"
    ),
    "recollect_summary": Artifact(
        "{run}/round_{k}/collect_summary.json", "json", "collect_more_data", "augment_data's re-collection"
    ),
    "recollect_dataset": Artifact(
        "{run}/round_{k}/dataset.parquet", "parquet", "collect_more_data", "augment_data's wider data set"
    ),
    "split": Artifact("{run}/round_{k}/features/split.json", "json", "feature_engineering", "split windows, counts"),
    "features": Artifact(
        "{run}/round_{k}/features/features.json", "json", "feature_engineering", "feature groups, columns, names"
    ),
    "preprocessor": Artifact(
        "{run}/round_{k}/features/preprocessor.joblib", "joblib", "feature_engineering", "the fitted preprocessing"
    ),
    "channel": Artifact(
        "{run}/round_{k}/features/{split}", "folder", "feature_engineering", "a split's features (SageMaker channel)"
    ),
    "trial": Artifact("{run}/round_{k}/trials/{trial}", "folder", "train_model", "a trial's model/ and output/"),
    "selection": Artifact("{run}/round_{k}/selection.json", "json", "select_model", "every trial, the best one"),
    "evaluation": Artifact("{run}/round_{k}/evaluation.json", "json", "evaluate_model", "test metrics, decision"),
    "calibrator": Artifact(
        "{run}/round_{k}/calibrator.joblib", "joblib", "evaluate_model", "scores -> probabilities (if asked for)"
    ),
    "test_scores": Artifact(
        "{run}/round_{k}/test_scores.parquet", "parquet", "evaluate_model", "the model's scores on the test rows"
    ),
    "plots": Artifact("{run}/round_{k}/plots", "folder", "evaluate_model", "the round's charts (PNG)"),
    "diagnosis": Artifact("{run}/round_{k}/diagnosis.json", "json", "diagnose", "the remedy chosen and why"),
    "approval_request": Artifact("{run}/approval_request.json", "json", "approve_deployment", "what was asked"),
    "approval": Artifact("{run}/approval.json", "json", "approve_deployment", "the answer and who gave it"),
    "recheck": Artifact("{run}/recheck.json", "json", "deploy_model", "the gate again after the champion changed"),
    "outcome": Artifact(
        "{run}/outcome.json",
        "json",
        "deploy_model, goal_not_met, keep_champion, approve_deployment (rejected), through RunContext.record_outcome",
        "the run's end",
    ),
    "failures": Artifact("{run}/failures", "folder", "FailureRecorder (on_failure_callback)", "a failed task's error"),
    "run_summary": Artifact("{run}/run_summary.json", "json", "publish_report", "the run, machine-readable"),
    "report": Artifact("{run}/report.html", "html", "publish_report", "the run, human-readable"),
}

# problem-scoped (shared by all runs of the problem)
RUNS = "runs"
CURATED = "curated"
SCORES = "scores"
CAPTURES = "captures"
MONITORING = "monitoring"
ALERTS = "alerts"


def run_folder(run_id: str) -> str:
    """``runs/<run id as one path segment>`` (a folder name passes through unchanged)."""
    return f"{RUNS}/{safe_run_id(run_id)}"


@dataclass(frozen=True)
class RoundLayout:
    """The artifacts of round ``k`` of a run."""

    run_dir: str
    k: int

    @property
    def dir(self) -> str:
        return f"{self.run_dir}/round_{self.k}"

    @property
    def plan(self) -> str:
        return f"{self.dir}/plan.json"

    @property
    def features_dir(self) -> str:
        return f"{self.dir}/features"

    @property
    def split(self) -> str:
        return f"{self.features_dir}/split.json"

    @property
    def features(self) -> str:
        return f"{self.features_dir}/features.json"

    @property
    def preprocessor(self) -> str:
        return f"{self.features_dir}/preprocessor.joblib"

    def channel(self, split: str) -> str:
        """The folder of a split's features: the SageMaker channel ``train`` / ``validation`` / ``test``."""
        return f"{self.features_dir}/{split}"

    def channel_file(self, split: str) -> str:
        return f"{self.channel(split)}/part-0.parquet"

    def trial(self, trial_id: str) -> str:
        return f"{self.dir}/trials/{trial_id}"

    def trial_model(self, trial_id: str) -> str:
        return f"{self.trial(trial_id)}/model"

    def trial_output(self, trial_id: str) -> str:
        return f"{self.trial(trial_id)}/output"

    @property
    def selection(self) -> str:
        return f"{self.dir}/selection.json"

    @property
    def evaluation(self) -> str:
        return f"{self.dir}/evaluation.json"

    @property
    def calibrator(self) -> str:
        """The calibrator fitted on validation (``training.calibration``), deployed with the model."""
        return f"{self.dir}/calibrator.joblib"

    @property
    def test_scores(self) -> str:
        """The evaluated model's scores on the test rows, in their order (the paired comparison)."""
        return f"{self.dir}/test_scores.parquet"

    @property
    def plots_dir(self) -> str:
        return f"{self.dir}/plots"

    def plot(self, name: str) -> str:
        return f"{self.plots_dir}/{name}.png"

    @property
    def diagnosis(self) -> str:
        return f"{self.dir}/diagnosis.json"


@dataclass(frozen=True)
class RunLayout:
    """The artifacts of one run, under ``runs/<run id>/`` of the problem's store."""

    run_id: str

    @property
    def dir(self) -> str:
        return run_folder(self.run_id)

    def round(self, k: int) -> RoundLayout:
        return RoundLayout(self.dir, k)

    def collect_dir(self, round_no: int | None = None) -> str:
        """Where a collection writes: the run folder (collect_and_label), or the round that
        augment_data collects more history for."""
        return self.dir if round_no is None else self.round(round_no).dir

    @staticmethod
    def collect_summary_in(folder: str) -> str:
        return f"{folder}/collect_summary.json"

    @staticmethod
    def dataset_in(folder: str) -> str:
        return f"{folder}/dataset.parquet"

    @staticmethod
    def entity_features_beside(dataset_rel: str) -> str:
        """The per-entity features a Spark collection computed for a data set, in its rows' order
        (:class:`include.lifecycle.features.EntityFeatures`), beside the data set's file."""
        return f"{posixpath.dirname(dataset_rel)}/entity_features.parquet"

    @property
    def problem_card(self) -> str:
        return f"{self.dir}/problem_card.json"

    @property
    def collect_summary(self) -> str:
        return self.collect_summary_in(self.dir)

    @property
    def dataset(self) -> str:
        return self.dataset_in(self.dir)

    @staticmethod
    def quarantine_in(folder: str, name: str) -> str:
        """Rows a collection rejected across partitions (duplicates, labels): ``<folder>/quarantine/``."""
        return f"{folder}/quarantine/{name}.parquet"

    @property
    def eda_dir(self) -> str:
        return f"{self.dir}/eda"

    @property
    def eda_profile(self) -> str:
        return f"{self.eda_dir}/profile.json"

    @property
    def eda_verdict(self) -> str:
        return f"{self.eda_dir}/verdict.json"

    @property
    def eda_section(self) -> str:
        return f"{self.eda_dir}/section.html"

    @property
    def eda_report(self) -> str:
        return f"{self.eda_dir}/eda_report.html"

    @property
    def approval_request(self) -> str:
        return f"{self.dir}/approval_request.json"

    @property
    def approval(self) -> str:
        return f"{self.dir}/approval.json"

    @property
    def recheck(self) -> str:
        return f"{self.dir}/recheck.json"

    @property
    def outcome(self) -> str:
        return f"{self.dir}/outcome.json"

    @property
    def failures_dir(self) -> str:
        return f"{self.dir}/failures"

    def failure(self, key: str) -> str:
        return f"{self.failures_dir}/{key}.json"

    @property
    def run_summary(self) -> str:
        return f"{self.dir}/run_summary.json"

    @property
    def report(self) -> str:
        return f"{self.dir}/report.html"


def alert_record(run_id: str, event: str, task_id: str | None) -> str:
    return f"{ALERTS}/{safe_run_id(run_id)}/{event}-{task_id or 'dag'}.json"


def scores_dir(ds: str) -> str:
    return f"{SCORES}/ds={ds}"


def capture_dir(ds: str) -> str:
    """``captures/ds=<day>/``: the endpoint's captured rows of that day (by the rows' time), one
    Parquet file per flush, named ``<writer>-<seq>.parquet`` by the server process that wrote it
    (never overwritten; files of several servers sit side by side)."""
    return f"{CAPTURES}/ds={ds}"


def capture_file(ds: str, writer: str, seq: int) -> str:
    return f"{capture_dir(ds)}/{writer}-{seq:06d}.parquet"


def monitoring_dir(ds: str) -> str:
    """``monitoring/ds=<day>/``: monitor_champion's monitoring.json, report.html, realised.png."""
    return f"{MONITORING}/ds={ds}"


# --- typed shapes of the JSON artifacts more than one task reads ----------------------------------
class Plan(TypedDict, total=False):
    """``plan.json``: what a round trains on and how (written by formulate_problem or a remedy)."""

    round: int
    dataset_rel: str
    collect_rel: str  # the collect summary describing dataset_rel (augment_data's re-collection)
    lookback_days: int
    feature_groups: list[str]
    families: list[str]
    trials_per_family: int
    wide_search: bool
    resample: str
    remedy: str | None
    reason: str
    applied: str | None
    changes: list[str]
    needs_new_data: bool


class CollectSummary(TypedDict, total=False):
    """``collect_summary.json``: written by the collect job (local or Glue), one shape."""

    dataset_rel: str
    dataset_uri: str
    dataset_rows: int
    rows_in: int
    rows_curated: int
    rows_quarantined: int
    by_rule: dict[str, int]
    window: list[str]
    partitions: list[dict[str, Any]]
    files: list[dict[str, Any]]
    warnings: list[str]


class Outcome(TypedDict, total=False):
    """``outcome.json``: how the run ended (deployed, not_promoted, goal_not_met, champion_kept, rejected)."""

    decision: str
    version: int | None
    registered_version: int | None
    round: int
    test_score: float
    reason: str
    previous_champion: int | None
    serving: dict[str, Any]
    sagemaker: dict[str, Any]
