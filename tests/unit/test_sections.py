"""Every section callable (``ml_lifecycle.sections``) and the operators' ``execute`` with the local
backend, called directly (no DAG run, no scheduler) on a tiny problem: 24 days of 25 rows
(``tests/unit/sections_fixture.py``).

A module fixture runs the sections in the order the DAG does, once: round 1 misses the goal
(it trains on days whose label relation is reversed), is diagnosed ``augment_data``, the wider
re-collection feeds round 2, which meets the goal and is deployed, then a day is scored and the
report published. It keeps every XCom and two snapshots of the artifact store (after round 1's
diagnosis, and at the end). Tests read what the chain wrote at the run layout's paths; a test that
changes the store (a failure path, another remedy, a retry) works on a copy of a snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.lifecycle.evaluate_data import FIRST_MODEL
from include.lifecycle.layout import RunLayout
from ml_lifecycle import sections, task_ids
from ml_lifecycle.operators import BatchScoringOperator, CollectAndLabelOperator, TrainingTrialOperator
from tests.unit.sections_fixture import (
    AS_OF,
    NAME,
    RUN_ID,
    TiStub,
    context,
    day_frame,
    single_file_spec,
    spec_dict,
    variant,
    write_source,
    write_spec,
)

LAYOUT = RunLayout(RUN_ID)
R1, R2 = LAYOUT.round(1), LAYOUT.round(2)


@dataclass
class World:
    """The chain's artifact store, its XComs and snapshots of the store along the way."""

    base: Path
    out: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, Path] = field(default_factory=dict)
    ti: TiStub = field(default_factory=TiStub)

    @property
    def problems(self) -> Path:
        return self.base / "problems"

    @property
    def artifacts(self) -> Path:
        return self.base / "artifacts"

    def snapshot(self, name: str) -> None:
        self.snapshots[name] = self.base / "snapshots" / name
        shutil.copytree(self.artifacts, self.snapshots[name])


def _env(mp: pytest.MonkeyPatch, base: Path, artifacts: Path) -> None:
    mp.setenv("ML_PROBLEMS_DIR", str(base / "problems"))
    mp.setenv("ML_DATA_ROOT", str(base / "data"))
    mp.setenv("ML_ARTIFACT_ROOT", str(artifacts))
    mp.setenv("AIRFLOW_VAR_ML_ARTIFACT_ROOT", str(artifacts))
    mp.setenv("AIRFLOW_VAR_ML_PII_HASH_KEY", "unit-test-pii-key-not-a-secret")
    mp.setenv("ML_CODE_VERSION", "unit-test")  # the lineage's code version, without asking git
    mp.setenv("ML_TRIAL_SLOTS", "1")
    for name in ("ML_SERVING_URL", "AIRFLOW_VAR_ML_SERVING_URL"):
        mp.delenv(name, raising=False)


def _collect(round_no: int | None = None, **ctx: Any) -> dict[str, Any]:
    task_id = task_ids.COLLECT_AND_LABEL if round_no is None else task_ids.COLLECT_MORE_DATA
    op = CollectAndLabelOperator(task_id=task_id, problem=NAME, round_no=round_no)
    return op.execute(context(**ctx))


def _train(round_no: int, trial: dict[str, Any]) -> dict[str, Any]:
    op = TrainingTrialOperator(task_id=task_ids.TRAIN_MODEL, problem=NAME, round_no=round_no, trial=trial)
    return op.execute(context())


def _score(**ctx: Any) -> dict[str, Any]:
    return BatchScoringOperator(task_id="score_new_data", problem=NAME).execute(context(**ctx))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("sections"))
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, w.base, w.artifacts)
        write_source(w.base / "data")
        write_spec(w.problems, spec_dict())
        out, ctx = w.out, context()
        out["formulate"] = sections.formulate_problem(NAME, **ctx)
        out["collect"] = _collect()
        out["evaluate_data"] = sections.evaluate_data(NAME, **ctx)
        for k in (1, 2):
            out[f"features_{k}"] = sections.feature_engineering(NAME, k, **ctx)
            out[f"trials_{k}"] = sections.plan_trials(NAME, k, **ctx)
            out[f"trained_{k}"] = [_train(k, t) for t in out[f"trials_{k}"]]
            out[f"select_{k}"] = sections.select_model(NAME, k, tuple(out[f"trained_{k}"]), **ctx)
            out[f"evaluate_{k}"] = sections.evaluate_model(NAME, k, **ctx)
            out[f"branch_{k}"] = sections.meets_business_goal(NAME, k, **ctx)
            if k == 1:
                out["diagnose_1"] = sections.diagnose(NAME, 1, **ctx)
                w.snapshot("round_1")
                remedy_name = out["diagnose_1"].rsplit(".", 1)[1]
                out["remedy_1"] = sections.remedy(NAME, 1, remedy_name, **ctx)
                out["collect_more_data_2"] = _collect(round_no=2)
        out["deploy"] = sections.deploy_model(NAME, **ctx)
        out["score"] = _score()
        out["report"] = sections.publish_report(NAME, **context(ti=w.ti))
        w.snapshot("final")
        yield w


@pytest.fixture
def env(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(world, tmp_path, monkeypatch)


class Env:
    """A test's own artifact store: a copy of one of the chain's snapshots (or empty)."""

    def __init__(self, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.world, self.tmp = world, tmp_path
        self.artifacts = tmp_path / "artifacts"
        _env(monkeypatch, world.base, self.artifacts)

    def copy(self, snapshot: str) -> None:
        shutil.copytree(self.world.snapshots[snapshot], self.artifacts)

    def variant(self, name: str, **changes: dict[str, Any]) -> str:
        """A spec ``name`` like the test's with ``changes``, whose store holds the copied problem's files."""
        write_spec(self.world.problems, variant(name, **changes))
        shutil.copytree(self.artifacts / NAME, self.artifacts / name)
        _copy_registered_model(self.artifacts, NAME, name)
        return name

    def path(self, rel: str, problem: str = NAME) -> Path:
        return self.artifacts / problem / rel

    def json(self, rel: str, problem: str = NAME) -> Any:
        return json.loads(self.path(rel, problem).read_text())


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _path(world: World, rel: str) -> Path:
    return world.artifacts / NAME / rel


def _uri(world: World, rel: str) -> str:
    """The URI the store gives a file (``file://`` and the path as it is)."""
    return f"file://{_path(world, rel)}"


def _registry(artifacts: Path) -> Any:
    """The problem's registered model in the MLflow store of the artifact root ``artifacts``."""
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store

    return ModelRegistry(Store.from_uri((artifacts / NAME).as_uri()), NAME)


def _copy_registered_model(artifacts: Path, src: str, dst: str) -> None:
    """The registered model ``dst`` holds ``src``'s versions (same numbers) and champion chain."""
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store

    old = _registry(artifacts)
    assert old.name == src
    new = ModelRegistry(Store.from_uri((artifacts / dst).as_uri()), dst)
    for v in old.versions():
        meta = {k: x for k, x in old.metadata(v).items() if k not in ("version", "registered_at")}
        assert new.register(old.load(v), meta) == v
    for record in reversed(old.chain()):
        new.promote(record["version"], run_id=record["run_id"], expected_champion=record["previous"])


def _json(world: World, rel: str) -> Any:
    return json.loads(_path(world, rel).read_text())


# --- formulate_problem --------------------------------------------------------------------------
def test_formulate_problem_writes_the_problem_card_and_round_1_plan(world: World) -> None:
    assert world.out["formulate"] == {
        "problem_card_uri": _uri(world, LAYOUT.problem_card),
        "checks_passed": 1,
        "partitions": 8,
        "rows": 200,
    }
    card = _json(world, LAYOUT.problem_card)
    assert card["problem"] == NAME and card["run_id"] == RUN_ID and card["backend"] == "local"
    assert card["as_of"] == AS_OF.isoformat() and card["max_rounds"] == 3
    assert card["framing"]["target"] == "label" and card["framing"]["positive_label"] == 1
    assert card["success_criterion"]["metric"] == "roc_auc" and card["success_criterion"]["target"] == 0.8
    assert card["data"]["window"] == ["2026-02-21", "2026-03-01"]
    assert [(c["check"], c["passed"]) for c in card["checks"]] == [("data in window", True)]
    plan = _json(world, R1.plan)
    assert plan["round"] == 1 and plan["dataset_rel"] == LAYOUT.dataset and plan["lookback_days"] == 8
    assert plan["feature_groups"] == ["xn"] and plan["families"] == ["logistic"] and plan["trials_per_family"] == 2
    assert plan["wide_search"] is False and plan["remedy"] is None


def test_formulate_problem_fails_naming_the_check_when_the_window_has_no_data(env: Env) -> None:
    before_any_data = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    with pytest.raises(
        AirflowFailException, match=r"data in window: 0 partitions, 0 rows in \[2025-05-24, 2025-06-01\)"
    ):
        sections.formulate_problem(NAME, **context(as_of=before_any_data))
    card = env.json(LAYOUT.problem_card)  # written anyway: it says what was found
    assert [(c["check"], c["passed"]) for c in card["checks"]] == [("data in window", False)]
    assert not env.path(R1.plan).exists()  # no round is planned on data that is not there


def test_formulate_problem_on_a_single_file_counts_positives_or_names_the_unmatched_label(env: Env) -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    rows = pd.concat([day_frame(dt.date(2026, 1, d), rng, inverted=False) for d in (1, 2, 3, 4)]).drop(columns="ts")
    source = env.tmp / "static.csv"
    rows.to_csv(source, index=False)
    write_spec(env.world.problems, single_file_spec("unit_static", str(source), positive_label=1))
    write_spec(env.world.problems, single_file_spec("unit_static_typo", str(source), positive_label="yes"))

    got = sections.formulate_problem("unit_static", **context())
    positives = int(rows["label"].sum())
    assert got["rows"] == 100 and got["approx_base_rate"] == pytest.approx(positives / 100)
    card = env.json(LAYOUT.problem_card, "unit_static")
    assert card["data"]["positives"] == positives
    assert [c["check"] for c in card["checks"]] == ["target present", "enough positives"]
    assert env.json(R1.plan, "unit_static")["dataset_rel"] == LAYOUT.dataset

    with pytest.raises(AirflowFailException, match=r"problem.positive_label 'yes' matches no value of column 'label'"):
        sections.formulate_problem("unit_static_typo", **context())
    assert not env.path(LAYOUT.problem_card, "unit_static_typo").exists()


# --- collect_and_label / collect_more_data (CollectAndLabelOperator) -----------------------------
def test_collect_and_label_curates_the_run_window_into_the_run_folder(world: World) -> None:
    got = world.out["collect"]
    assert got["dataset_rel"] == LAYOUT.dataset
    assert (got["rows_in"], got["rows_curated"], got["rows_quarantined"], got["dataset_rows"]) == (200, 200, 0, 200)
    assert got["window"]["start"] == "2026-02-21" and got["window"]["end"] == "2026-03-01"
    assert got["partitions"] == 8  # XCom counts the partitions; the summary file lists them
    summary = _json(world, LAYOUT.collect_summary)
    assert [p["ds"] for p in summary["partitions"]] == [f"2026-02-{d}" for d in range(21, 29)]
    data = pd.read_parquet(_path(world, LAYOUT.dataset))
    assert len(data) == 200 and {"row_id", "ts", "x", "n1", "label"} <= set(data.columns)


def test_collect_more_data_collects_the_planned_lookback_into_the_round_folder(world: World) -> None:
    got = world.out["collect_more_data_2"]
    folder = LAYOUT.collect_dir(2)
    assert got["dataset_rel"] == LAYOUT.dataset_in(folder) == f"{R2.dir}/dataset.parquet"
    assert got["window"]["lookback_days"] == 16 and got["window"]["start"] == "2026-02-13"
    assert got["dataset_rows"] == 400 and got["partitions"] == 16
    assert _json(world, LAYOUT.collect_summary_in(folder))["dataset_rows"] == 400
    assert len(pd.read_parquet(_path(world, LAYOUT.dataset_in(folder)))) == 400
    assert len(pd.read_parquet(_path(world, LAYOUT.dataset))) == 200  # the run's own collection is untouched


def test_collect_more_data_is_skipped_when_the_plan_needs_no_new_data(env: Env) -> None:
    env.copy("round_1")
    sections.remedy(NAME, 1, "tune_model", **context())
    with pytest.raises(AirflowSkipException, match=r"round 2's plan needs no new data \(tune_model\)"):
        _collect(round_no=2)
    assert not env.path(LAYOUT.collect_summary_in(R2.dir)).exists()


def test_collect_more_data_refuses_a_plan_that_trains_on_another_folder(env: Env) -> None:
    env.copy("round_1")
    sections.remedy(NAME, 1, "augment_data", **context())
    plan = env.json(R2.plan)
    _write_json(env.path(R2.plan), {**plan, "dataset_rel": LAYOUT.dataset})
    with pytest.raises(AirflowFailException, match=rf"round 2's plan trains on {LAYOUT.dataset}, not on {R2.dir}"):
        _collect(round_no=2)
    assert not env.path(LAYOUT.dataset_in(R2.dir)).exists()


# --- evaluate_data --------------------------------------------------------------------------------
def test_evaluate_data_profiles_the_data_and_passes_the_gate(world: World) -> None:
    got = world.out["evaluate_data"]
    assert got["verdict"] == "fit" and got["rows"] == 200
    assert got["eda_report_uri"] == _uri(world, LAYOUT.eda_report)
    assert got["max_psi"] is None and got["drift_reference"] is None  # no champion yet
    profile = _json(world, LAYOUT.eda_profile)
    assert profile["overall"]["rows"] == 200 and profile["overall"]["days"] == 8
    assert profile["target"]["positives"] == int(pd.read_parquet(_path(world, LAYOUT.dataset))["label"].sum())
    assert "label_delay" not in profile  # no label feed
    verdict = _json(world, LAYOUT.eda_verdict)
    assert verdict["passed"] is True and all(c["passed"] for c in verdict["checks"])
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["drift"]["detail"] == FIRST_MODEL and verdict["drift"]["reference"] is None
    assert (
        checks["completeness"]["value"] == 1.0
        and "8 of 8 days of [2026-02-21, 2026-03-01)" in (checks["completeness"]["detail"])
    )
    assert checks["freshness"]["value"] == 0 and "ds=2026-02-28" in checks["freshness"]["detail"]
    assert verdict["coverage"]["missing_days"] == [] and verdict["coverage"]["present_days"] == 8
    report = _path(world, LAYOUT.eda_report).read_text()
    assert "Section unit tests" in report and "Completeness and freshness" in report and FIRST_MODEL in report
    assert 'alt="completeness"' in report
    assert _path(world, LAYOUT.eda_section).stat().st_size > 0
    assert not (world.artifacts / NAME / "eda").exists()  # no problem-wide "previous run" pointer


def test_evaluate_data_fails_the_quality_gate_and_reports_why(env: Env) -> None:
    env.copy("round_1")
    name = env.variant("unit_sections_strict", quality={"min_rows": 10_000})
    with pytest.raises(AirflowFailException, match="data quality gate: data unfit for training"):
        sections.evaluate_data(name, **context())
    verdict = env.json(LAYOUT.eda_verdict, name)
    assert verdict["passed"] is False
    failed = [c for c in verdict["checks"] if not c["passed"]]
    assert failed and "10000" in json.dumps(failed)
    assert env.path(LAYOUT.eda_report, name).exists()  # the report says why


def _run_until_evaluate_data(name: str, run_id: str, as_of: dt.datetime) -> dict[str, Any]:
    ctx = context(run_id=run_id, as_of=as_of)
    sections.formulate_problem(name, **ctx)
    CollectAndLabelOperator(task_id=task_ids.COLLECT_AND_LABEL, problem=name, round_no=None).execute(ctx)
    return sections.evaluate_data(name, **ctx)


def test_evaluate_data_compares_the_newest_days_with_the_champions_training_rows(env: Env, world: World) -> None:
    """The champion (version 1) was trained in round 2 of the chain, on the 16-day re-collection
    up to its training end 2026-02-25 (4 days of validation and test after it). A later run's
    newest days after that end are compared with those training rows: unchanged data passes, a
    shifted ``x`` fails the gate naming it."""
    env.copy("final")
    run_id = "manual__2026-03-01T06:00:00+00:00"
    same = env.variant("unit_sections_same", quality={"max_drift_psi": 0.25})
    got = _run_until_evaluate_data(same, run_id, AS_OF)
    assert got["verdict"] == "fit" and got["drift_reference"] == 1
    run = RunLayout(run_id)
    drift = env.json(run.eda_verdict, same)["drift"]
    assert drift["version"] == 1 and drift["reference"].startswith("champion version 1 (run " + RUN_ID + ", round 2)")
    assert drift["reference_rows"] == 12 * 25  # the training rows of the 16-day re-collection
    assert drift["compared"] == {
        "kind": "newest days",
        "start": "2026-02-25T00:00:00+00:00",
        "end": "2026-03-01T00:00:00+00:00",
        "rows": 4 * 25,
    }
    assert set(drift["columns"]) == {"x", "n1"} and drift["approximate"] == []

    # the newest three days' x moved by +3: drift fires and names x
    data = world.base / "data" / "unit_sections" / "shifted"
    shutil.copytree(world.base / "data" / "unit_sections" / "daily", data)
    for back in (1, 2, 3):
        part = data / f"ds={(AS_OF.date() - dt.timedelta(days=back)).isoformat()}" / "part-0.csv"
        frame = pd.read_csv(part)
        frame.assign(x=frame["x"] + 3).to_csv(part, index=False)
    shifted = env.variant(
        "unit_sections_shifted",
        quality={"max_drift_psi": 0.25},
        data={"source": "unit_sections/shifted"},
    )
    with pytest.raises(AirflowFailException, match=r"drift: max PSI [0-9.]+ \(maximum 0.25\); drifted: x "):
        _run_until_evaluate_data(shifted, run_id, AS_OF)
    verdict = env.json(run.eda_verdict, shifted)
    assert verdict["failed"] == ["drift"]
    assert verdict["drift"]["details"]["x"]["psi"] > 1.0 > verdict["drift"]["details"]["n1"]["psi"]
    report = env.path(run.eda_report, shifted).read_text()
    assert "Drift against the champion&#x27;s training data" in report or "Drift against the champion's" in report
    assert 'alt="drift_x"' in report and 'alt="drift_psi"' in report


def test_evaluate_data_fails_completeness_and_freshness_when_the_newest_days_are_missing(env: Env) -> None:
    """A run five days after the source's last partition: 3 of its 8 days hold data and the newest
    partition is 5 days before the window's last day."""
    env.copy("round_1")
    name = env.variant("unit_sections_stale", quality={"min_rows": 10, "min_positives": 5})
    late = AS_OF + dt.timedelta(days=5)
    with pytest.raises(AirflowFailException, match="data quality gate") as exc:
        _run_until_evaluate_data(name, "scheduled__2026-03-06T00:00:00+00:00", late)
    assert "completeness: 3 of 8 days" in str(exc.value) and "freshness: newest partition ds=2026-02-28" in str(
        exc.value
    )
    verdict = env.json(RunLayout("scheduled__2026-03-06T00:00:00+00:00").eda_verdict, name)
    assert verdict["failed"] == ["completeness", "freshness"]
    assert verdict["coverage"]["missing_days"] == [f"2026-03-0{d}" for d in range(1, 6)]
    assert verdict["coverage"]["staleness_days"] == 5


def test_evaluate_data_on_a_single_file_says_completeness_and_freshness_do_not_apply(env: Env) -> None:
    rng = np.random.default_rng(2)
    rows = pd.concat([day_frame(dt.date(2026, 1, d), rng, inverted=False) for d in range(1, 9)]).drop(columns="ts")
    source = env.tmp / "static.csv"
    rows.to_csv(source, index=False)
    write_spec(env.world.problems, single_file_spec("unit_static_eda", str(source), positive_label=1))
    got = _run_until_evaluate_data("unit_static_eda", RUN_ID, AS_OF)
    assert got["verdict"] == "fit" and got["rows"] == 200
    verdict = env.json(LAYOUT.eda_verdict, "unit_static_eda")
    checks = {c["name"]: c for c in verdict["checks"]}
    for name in ("completeness", "freshness"):
        assert checks[name]["applicable"] is False and checks[name]["passed"]
        assert checks[name]["detail"] == "not applicable: a single file has no daily partitions"
    assert checks["drift"]["detail"] == FIRST_MODEL
    assert (
        "Not applicable: a single file has no daily partitions"
        in env.path(LAYOUT.eda_report, "unit_static_eda").read_text()
    )


# --- feature_engineering --------------------------------------------------------------------------
def test_feature_engineering_writes_the_split_channels_and_fitted_preprocessing(world: World) -> None:
    got = world.out["features_1"]
    assert got["round"] == 1 and got["n_features"] == 2 and got["feature_groups"] == ["xn"]
    assert got["rows"] == {"train": 100, "validation": 50, "test": 50}
    split = _json(world, R1.split)
    assert split == got["split"]
    assert split["validation"]["start"] == "2026-02-25T00:00:00+00:00"
    assert split["test"]["start"] == "2026-02-27T00:00:00+00:00" and split["test"]["end"] == AS_OF.isoformat()
    features = _json(world, R1.features)
    assert len(features["feature_names"]) == 2
    for part, rows in got["rows"].items():
        channel = pd.read_parquet(_path(world, R1.channel_file(part)))
        assert len(channel) == rows and "__target__" in channel.columns
        assert int(channel["__target__"].sum()) == got["positives"][part]
    pre = joblib.load(_path(world, R1.preprocessor))
    assert len(pre.get_feature_names_out()) == 2
    assert world.out["features_2"]["rows"] == {"train": 300, "validation": 50, "test": 50}  # the wider data set


def test_feature_engineering_fails_when_the_split_cannot_be_made(env: Env) -> None:
    env.copy("round_1")
    # 8 days of data cannot hold 4 validation and 4 test days and a training window
    name = env.variant("unit_sections_long_split", training={"split": {"validation_days": 4, "test_days": 4}})
    env.path(R1.split, name).unlink()
    with pytest.raises(
        AirflowFailException, match=r"feature_engineering round 1: train split .* holds 0 rows.*training.split"
    ):
        sections.feature_engineering(name, 1, **context())
    assert not env.path(R1.split, name).exists()


def test_feature_engineering_takes_per_entity_features_computed_for_its_data_set(env: Env) -> None:
    """A file of per-entity features beside the round's data set (what the Glue Spark job writes) is
    taken for the groups it holds: its values reach the channels, features.json and the XCom say so;
    a file of other rows fails the task at once, naming the file."""
    import pyarrow as pa

    from include.lifecycle.features import EntityFeatures
    from include.lifecycle.spec import FeatureGroupSpec

    env.copy("round_1")
    velocity = {"name": "per_row", "kind": "velocity", "columns": ["x"], "params": {"windows": ["1d"]}}
    groups = [{"name": "xn", "kind": "raw", "columns": ["x", "n1"]}, velocity]
    name = env.variant("unit_sections_entity", data={"entity_column": "row_id"}, features={"groups": groups})
    plan = env.json(R1.plan, name)
    env.path(R1.plan, name).write_text(json.dumps(plan | {"feature_groups": ["xn", "per_row"]}))
    dataset = env.path(plan["dataset_rel"], name)
    rows = len(pd.read_parquet(dataset))
    sidecar = env.path(RunLayout.entity_features_beside(plan["dataset_rel"]), name)

    def write(n: int) -> None:
        cols = {c: np.arange(n, dtype=np.float64) for c in ("vel_cnt_1d", "vel_sum_1d", "vel_log_secs_since_prev")}
        meta = EntityFeatures.metadata(
            [FeatureGroupSpec(**velocity)], time_column="ts", entity_column="row_id", rows=n, engine="spark test"
        )
        pq.write_table(pa.table(cols).replace_schema_metadata(meta), sidecar)

    write(rows)
    got = sections.feature_engineering(name, 1, **context())
    assert got["precomputed"] == {"engine": "spark test", "groups": ["per_row"]}
    assert env.json(R1.features, name)["precomputed"] == got["precomputed"]
    # each row's count is its position in the data set: no computation gives that (row_id is unique: no history)
    split = pd.read_parquet(dataset)
    train = pd.read_parquet(env.path(R1.channel_file("train"), name))
    scaled = train["vel_cnt_1d"].to_numpy()
    positions = np.flatnonzero(sections_split_mask(split, name) == "train")
    assert np.corrcoef(scaled, positions)[0, 1] > 0.999
    write(rows - 1)
    with pytest.raises(AirflowFailException, match=r"entity_features.parquet: .* have \d+ rows, the data set \d+"):
        sections.feature_engineering(name, 1, **context())


def sections_split_mask(df: pd.DataFrame, name: str) -> np.ndarray:
    """The split of each data set row, as feature engineering assigns it."""
    from include.lifecycle.dataset import assign_splits, target_vector
    from include.lifecycle.spec import load_spec

    spec = load_spec(Path(os.environ["ML_PROBLEMS_DIR"]) / f"{name}.yaml")
    return assign_splits(df, spec, target_vector(df[spec.problem.target], spec), as_of=AS_OF)


# --- plan_trials, train_model (TrainingTrialOperator), select_model --------------------------------
def test_plan_trials_lists_the_round_trials_numbered(world: World) -> None:
    trials = world.out["trials_1"]
    assert [(t["trial_id"], t["family"], t["k"], t["of"]) for t in trials] == [
        ("r1-logistic-0", "logistic", 1, 2),
        ("r1-logistic-1", "logistic", 2, 2),
    ]
    assert trials[0]["params"] == {"C": 1.0}  # the spec's defaults first, then the search grid
    assert trials[1]["params"]["C"] in (0.01, 0.1, 10.0)


def test_plan_trials_after_tune_model_searches_every_family(env: Env) -> None:
    env.copy("round_1")
    sections.remedy(NAME, 1, "tune_model", **context())
    trials = sections.plan_trials(NAME, 2, **context())
    assert {t["family"] for t in trials} == {"logistic", "random_forest"}
    assert len(trials) == 4  # training.max_trials
    assert [t["k"] for t in trials] == [1, 2, 3, 4] and {t["of"] for t in trials} == {4}
    assert len({t["trial_id"] for t in trials}) == 4 and all(t["trial_id"].startswith("r2-") for t in trials)


def test_training_trial_operator_trains_one_trial_into_the_round_folder(world: World) -> None:
    first = world.out["trained_1"][0]
    trial_id = world.out["trials_1"][0]["trial_id"]
    assert first["trial_id"] == trial_id and first["round"] == 1 and first["n_train"] == 100
    assert first["model_rel"] == R1.trial_model(trial_id)
    # round 1 learns the reversed relation of its training days: right on train, wrong on validation
    assert first["train_score"] > 0.9 and first["validation_score"] < 0.2
    assert {p.name for p in _path(world, R1.trial_model(trial_id)).iterdir()} == {"model.joblib", "model_meta.json"}
    assert any(_path(world, R1.trial_output(trial_id)).iterdir())
    # round 2's plan: about half the rows are positive, so oversampling (to 10 % of the majority) would
    # add no rows and augment_data does not ask for it
    assert all(t["resample"] == "none" for t in world.out["trained_2"])


def test_training_trial_operator_fails_at_once_on_an_unknown_family(env: Env) -> None:
    env.copy("round_1")
    trial = {"trial_id": "r1-bogus-0", "family": "bogus", "params": {}}
    with pytest.raises(AirflowFailException, match=r"unknown model family 'bogus'.*not retried"):
        _train(1, trial)
    assert not env.path(R1.trial_model("r1-bogus-0")).exists()


def test_select_model_keeps_the_best_validation_score(world: World) -> None:
    from include.lifecycle.models import best_trial

    trained = world.out["trained_1"]
    best = best_trial(trained, higher_is_better=True)
    got = world.out["select_1"]
    assert got["round"] == 1 and got["trial_id"] == best["trial_id"] and got["family"] == "logistic"
    assert got["validation_score"] == best["validation_score"] and got["train_score"] == best["train_score"]
    assert got["from_round"] == 1
    selection = _json(world, R1.selection)
    assert selection["best"]["trial_id"] == got["trial_id"] and selection["best"]["round"] == 1
    assert selection["round_best"] == selection["best"] and selection["compared_rounds"] == [1]
    assert sorted(t["trial_id"] for t in selection["trials"]) == ["r1-logistic-0", "r1-logistic-1"]


def test_select_model_compares_the_rounds_scored_on_the_same_rows(world: World) -> None:
    """Round 2 re-collected 16 days: a longer training window, the same validation and test days, so
    its trials and round 1's compete; round 2's are better (round 1 learnt the reversed days)."""
    assert _json(world, R1.split)["validation"] == _json(world, R2.split)["validation"]
    selection = _json(world, R2.selection)
    assert selection["compared_rounds"] == [1, 2] and selection["not_comparable"] == {}
    assert selection["best"]["round"] == 2 and selection["best"] == selection["round_best"]
    assert world.out["select_2"]["from_round"] == 2


def test_select_model_ties_go_to_the_first_trial_and_no_score_is_an_error(env: Env) -> None:
    env.copy("round_1")
    a = {"trial_id": "r1-logistic-1", "family": "logistic", "train_score": 0.9, "validation_score": 0.7}
    b = {**a, "trial_id": "r1-logistic-0"}
    assert sections.select_model(NAME, 1, (a, b), **context())["trial_id"] == "r1-logistic-0"
    with pytest.raises(ValueError, match="no trial produced a validation score"):
        sections.select_model(NAME, 1, ({**a, "validation_score": None},), **context())


# --- evaluate_model -----------------------------------------------------------------------------
def test_evaluate_model_scores_the_test_split_and_applies_the_gate(world: World) -> None:
    missed, met = world.out["evaluate_1"], world.out["evaluate_2"]
    assert missed["deploy"] is False and missed["test_score"] < 0.5
    assert missed["reason"].startswith("roc_auc") and "misses the goal >= 0.8" in missed["reason"]
    assert met["deploy"] is True and met["test_score"] >= 0.8
    assert "meets the goal >= 0.8; no champion yet" in met["reason"]
    ev = _json(world, R2.evaluation)
    assert ev["round"] == 2 and ev["trial_id"] == world.out["select_2"]["trial_id"]
    assert ev["test_score"] == met["test_score"] and ev["decision"]["deploy"] is True
    assert ev["champion_version"] is None and ev["champion_score"] is None
    assert ev["plots"] and all(_path(world, R2.plot(n)).read_bytes()[:4] == b"\x89PNG" for n in ev["plots"])


def test_evaluate_model_compares_with_the_champion_and_records_a_forced_deploy(env: Env) -> None:
    env.copy("final")  # version 1 (round 2's model, trained on this run's data) is the champion now
    got = sections.evaluate_model(NAME, 1, **context())
    ev = env.json(R1.evaluation)
    # round 1's test rows are the champion's own held-out test rows (same days, same split): it never
    # trained on them, so it is judged on all of them, paired with the candidate
    cmp_ = ev["comparison"]
    assert ev["champion_version"] == 1 and ev["champion_score"] >= 0.8
    assert cmp_["fair"] is True and cmp_["rows"] > 0 and "own held-out test rows" in cmp_["basis"]
    assert cmp_["difference"]["high"] < 0  # the candidate is clearly worse on the same rows
    assert got["deploy"] is False and "misses the goal" in got["reason"] and "rows it never saw" in got["reason"]
    forced = sections.evaluate_model(NAME, 1, **context(params={"force_deploy": True}))
    assert forced["deploy"] is True and "FORCED by the run's force_deploy param" in forced["reason"]
    assert env.json(R1.evaluation)["decision"]["forced"] is True


# --- meets_business_goal, diagnose, remedy ----------------------------------------------------------
def test_meets_business_goal_branches(world: World) -> None:
    assert world.out["branch_1"] == "round_1.diagnose"
    assert world.out["branch_2"] == task_ids.DEPLOY_MODEL
    # the same miss in the run's last round stops the loop (the run asked for one round)
    assert sections.meets_business_goal(NAME, 1, **context(params={"max_rounds": 1})) == task_ids.GOAL_NOT_MET


def test_meets_business_goal_asks_for_approval_or_holds_a_disabled_deploy(env: Env) -> None:
    env.copy("final")
    approval = env.variant("unit_sections_approval", deploy={"require_approval": True})
    assert sections.meets_business_goal(approval, 2, **context()) == task_ids.APPROVE_DEPLOYMENT
    disabled = env.variant("unit_sections_no_deploy", deploy={"enabled": False})
    assert sections.meets_business_goal(disabled, 2, **context()) == "round_2.diagnose"
    assert sections.meets_business_goal(disabled, 2, **context(params={"max_rounds": 2})) == task_ids.GOAL_NOT_MET


def _rewrite_decision(env: Env, rel: str, **decision: Any) -> None:
    ev = env.json(rel)
    _write_json(env.path(rel), {**ev, "champion_version": 1, "decision": {**ev["decision"], **decision}})


def test_goal_met_but_champion_better_keeps_the_champion_without_a_remedy_round(env: Env) -> None:
    """Round 1 of 3 meets the goal but the champion is better: the run ends there (no diagnose, no
    remedy round), as its own decision champion_kept, which the report shows."""
    env.copy("round_1")
    _rewrite_decision(env, R1.evaluation, meets_goal=True, no_worse_than_champion=False, deploy=False, reason="r")
    assert sections.meets_business_goal(NAME, 1, **context()) == task_ids.KEEP_CHAMPION
    got = sections.keep_champion(NAME, **context())
    assert got["decision"] == "champion_kept" and got["version"] is None and got["round"] == 1
    assert got["reason"].startswith("round 1 meets the goal but champion version 1 is better: it stays the champion")
    assert env.json(LAYOUT.outcome) == got
    report = sections.publish_report(NAME, **context(ti=TiStub({"keep_champion": "success"})))
    assert report["decision"] == "champion_kept"
    summary = env.json(LAYOUT.run_summary)
    assert summary["decision"] == "champion_kept" and summary["model_version"] is None
    assert [r["round"] for r in summary["rounds"]] == [1] and not env.path(R2.plan).exists()
    assert "champion_kept" in env.path(LAYOUT.report).read_text()
    # a forced deployment is a deployment; a goal not met is not a kept champion
    _rewrite_decision(env, R1.evaluation, meets_goal=True, no_worse_than_champion=False, deploy=True, forced=True)
    assert sections.meets_business_goal(NAME, 1, **context()) == task_ids.DEPLOY_MODEL
    _rewrite_decision(env, R1.evaluation, meets_goal=False, no_worse_than_champion=False, deploy=False, forced=False)
    assert sections.meets_business_goal(NAME, 1, **context()) == "round_1.diagnose"


def test_diagnose_writes_the_remedy_and_the_evidence(world: World) -> None:
    assert world.out["diagnose_1"] == "round_1.augment_data"
    d = _json(world, R1.diagnosis)
    assert d["remedy"] == "augment_data" and "does not generalise" in d["reason"]
    assert d["evidence"]["train_positives"] == world.out["features_1"]["positives"]["train"]
    assert d["evidence"]["gap"] > 0.3  # diagnosis.max_gap
    assert d["evidence"]["test_score"] == world.out["evaluate_1"]["test_score"]
    # augment_data can change the candidate (more history): it is the remedy applied
    assert d["applied"] == "augment_data" and d["skipped"] == [] and "stop" not in d


def test_diagnose_goes_to_the_remedy_that_can_change_the_candidate(env: Env) -> None:
    """No older history (the lookback is at its maximum) and balanced classes (oversampling adds no
    rows): augment_data cannot change the candidate; augment_features has no group left; tune_model
    can, so diagnose branches there and the plan records both."""
    env.copy("round_1")
    name = env.variant("unit_sections_no_history", data={"max_lookback_days": 8})
    assert sections.diagnose(name, 1, **context()) == "round_1.tune_model"
    d = env.json(R1.diagnosis, name)
    assert d["remedy"] == "augment_data" and d["applied"] == "tune_model"
    assert d["skipped"][0].startswith("augment_data: the lookback is at data.max_lookback_days (8); the minority")
    assert "oversampling adds no rows" in d["skipped"][0]
    assert d["skipped"][1] == "augment_features: every feature group of features.augment_order is in use"
    got = sections.remedy(name, 1, "tune_model", **context())
    assert got["remedy"] == "tune_model"
    assert got["changes"][0] == "augment_data has nothing left to give; applied tune_model instead"
    plan = env.json(R2.plan, name)
    assert plan["remedy"] == "augment_data" and plan["applied"] == "tune_model" and plan["wide_search"] is True


def test_diagnose_ends_the_loop_when_no_remedy_can_change_the_candidate(env: Env) -> None:
    env.copy("round_1")
    name = env.variant("unit_sections_stuck", data={"max_lookback_days": 8})
    # round 1 already searched every family as widely as the spec allows
    plan = env.json(R1.plan, name)
    _write_json(
        env.path(R1.plan, name),
        {**plan, "families": ["logistic", "random_forest"], "trials_per_family": 4, "wide_search": True},
    )
    assert sections.diagnose(name, 1, **context()) == task_ids.GOAL_NOT_MET
    d = env.json(R1.diagnosis, name)
    assert d["stop"] is True and d["applied"] is None
    assert "; but no remedy can change the candidate: augment_data: the lookback is at" in d["reason"]
    with pytest.raises(AirflowFailException, match="no remedy can change the candidate"):
        sections.remedy(name, 1, "augment_data", **context())
    assert not env.path(R2.plan, name).exists()
    got = sections.goal_not_met(name, **context())
    assert got["decision"] == "goal_not_met" and got["round"] == 1
    assert got["reason"].startswith("after 1 round(s) the goal is not met: no remedy can change the candidate")


def test_remedy_augment_data_plans_a_recollection_into_round_2(world: World) -> None:
    got = world.out["remedy_1"]
    assert got == {
        "round": 2,
        "remedy": "augment_data",
        "changes": ["lookback 8 -> 16 days"],
    }
    plan = _json(world, R2.plan)
    assert plan["dataset_rel"] == f"{R2.dir}/dataset.parquet" == LAYOUT.dataset_in(LAYOUT.collect_dir(2))
    assert plan["collect_rel"] == LAYOUT.collect_summary_in(R2.dir)
    assert plan["needs_new_data"] is True and plan["lookback_days"] == 16 and plan["resample"] == "none"
    # balanced classes: oversampling would add no rows, so it is not part of the remedy
    assert plan["skipped"] == [] and plan["applied"] == "augment_data"
    assert plan["round"] == 2 and plan["feature_groups"] == ["xn"]


def test_remedy_tune_model_and_an_exhausted_augment_features(env: Env) -> None:
    env.copy("round_1")
    got = sections.remedy(NAME, 1, "tune_model", **context())
    assert got["round"] == 2 and got["remedy"] == "tune_model"
    plan = env.json(R2.plan)
    assert plan["wide_search"] is True and plan["families"] == ["logistic", "random_forest"]
    assert plan["trials_per_family"] == 4 and plan["needs_new_data"] is False
    assert plan["dataset_rel"] == LAYOUT.dataset and "collect_rel" not in plan  # trains on the run's data
    # the spec has one feature group: augment_features has nothing to add and falls through
    got = sections.remedy(NAME, 1, "augment_features", **context())
    assert got["remedy"] == "tune_model"
    assert got["changes"][0] == "augment_features has nothing left to give; applied tune_model instead"
    assert env.json(R2.plan)["remedy"] == "augment_features"


# --- deploy_model, goal_not_met -------------------------------------------------------------------
def test_deploy_model_registers_promotes_and_records_the_recollection_lineage(world: World) -> None:
    got = world.out["deploy"]
    assert got["decision"] == "deployed" and got["version"] == 1 and got["round"] == 2
    assert got["previous_champion"] is None and got["test_score"] == world.out["evaluate_2"]["test_score"]
    assert got["serving"]["notified"] is False  # no endpoint configured
    assert _json(world, LAYOUT.outcome) == got
    registry = _registry(world.artifacts)
    assert registry.champion_version() == 1
    lineage = registry.lineage(1)
    recollected = _json(world, LAYOUT.collect_summary_in(R2.dir))
    assert lineage["run_id"] == RUN_ID and lineage["round"] == 2
    assert lineage["window"] == recollected["window"] and lineage["rows"] == 400
    assert len(lineage["partitions"]) == 16 and lineage["dataset_uri"].endswith(f"{R2.dir}/dataset.parquet")
    assert lineage["trial"] == world.out["select_2"]["trial_id"] and lineage["code_version"] == "unit-test"
    files = set(registry.load(1))
    assert {"preprocessor.joblib", "features.json", "threshold.json", "evaluation.json", "model.joblib"} <= files


def test_deploy_model_retry_reuses_the_registered_version(env: Env) -> None:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from ml_lifecycle.assets import champion_model_asset

    env.copy("final")
    events = OutletEventAccessors()
    again = sections.deploy_model(NAME, **context(), outlet_events=events)
    assert again["decision"] == "deployed" and again["version"] == 1
    assert _registry(env.artifacts).versions() == [1]
    extra = events[champion_model_asset(NAME)].extra  # the champion_model asset event's extra
    assert (extra["version"], extra["run_id"], extra["model_uri"]) == (1, RUN_ID, f"models:/{NAME}/1")
    assert extra["test_score"] == again["test_score"] and extra["interval"]["low"] <= extra["test_score"]


@pytest.mark.parametrize(
    ("older", "decision", "champion"),
    [pytest.param(False, "deployed", 2, id="still-passes"), pytest.param(True, "not_promoted", 1, id="older-data")],
)
def test_deploy_model_compares_again_when_the_champion_changed_during_the_run(
    env: Env, older: bool, decision: str, champion: int
) -> None:
    """Run B evaluated its round 2 while there was no champion; run A then promoted version 1."""
    env.copy("final")
    other = "manual__2026-03-01T00:00:00+00:00"
    shutil.copytree(env.path(R2.dir), env.path(RunLayout(other).round(2).dir))
    shutil.copytree(env.path(R1.dir), env.path(RunLayout(other).round(1).dir))
    if older:  # B is a backfill: its data ends before A's champion's, so it must not replace it
        plan_rel = RunLayout(other).round(2).plan
        plan = env.json(plan_rel)
        summary = env.json(plan["collect_rel"])
        summary["window"] = {**summary["window"], "end": "2026-02-20"}
        own = RunLayout.collect_summary_in(RunLayout(other).round(2).dir)
        _write_json(env.path(own), summary)
        _write_json(env.path(plan_rel), {**plan, "collect_rel": own})
    got = sections.deploy_model(NAME, **context(run_id=other))
    assert got["decision"] == decision and got["round"] == 2
    assert _registry(env.artifacts).champion_version() == champion
    assert env.json(RunLayout(other).outcome) == got
    recheck = env.json(RunLayout(other).recheck)
    assert recheck["champion_version"] == 1 and recheck["reason"].startswith("the champion changed during this run")
    assert _registry(env.artifacts).versions() == [1, 2]
    if decision == "not_promoted":
        assert got["version"] is None and got["registered_version"] == 2 and "trained on newer data" in got["reason"]
    else:  # same data and split as the champion: compared on its own held-out test rows
        # B's model is A's champion's twin on the same held-out rows: paired, the difference is 0
        assert got["version"] == 2 and got["previous_champion"] == 1 and "rows it never saw" in recheck["reason"]


def test_deploy_model_refuses_when_no_round_met_the_goal(env: Env) -> None:
    env.copy("round_1")
    with pytest.raises(AirflowFailException, match="no round met the goal: refusing to deploy"):
        sections.deploy_model(NAME, **context())
    assert _registry(env.artifacts).champion() is None and not env.path(LAYOUT.outcome).exists()


def test_a_later_worse_round_deploys_the_earlier_rounds_model_with_its_bundle_and_lineage(env: Env) -> None:
    """Round 2 re-collects 16 days but its trials are worse on the same validation rows: round 2
    selects round 1's trial. Deployed (forced, as the run's param allows), the version holds round
    1's model, preprocessing and feature config, and its lineage names the data round 1 trained
    on (the run's 8 days), not round 2's re-collection."""
    env.copy("round_1")
    sections.remedy(NAME, 1, "augment_data", **context())
    _collect(round_no=2)
    sections.feature_engineering(NAME, 2, **context())
    r1 = env.json(R1.selection)
    worse = tuple(
        {**t, "trial_id": t["trial_id"].replace("r1-", "r2-"), "round": 2, "validation_score": -1.0}
        for t in r1["trials"]
    )
    got = sections.select_model(NAME, 2, worse, **context())
    assert got["round"] == 2 and got["from_round"] == 1 and got["trial_id"] == r1["best"]["trial_id"]
    selection = env.json(R2.selection)
    assert selection["best"]["round"] == 1 and selection["round_best"]["trial_id"].startswith("r2-")
    assert selection["compared_rounds"] == [1, 2]
    forced = context(params={"force_deploy": True})
    sections.evaluate_model(NAME, 2, **forced)
    ev = env.json(R2.evaluation)
    assert ev["trial_id"] == r1["best"]["trial_id"] and ev.get("origin_round") == 1
    assert sections.meets_business_goal(NAME, 2, **forced) == task_ids.DEPLOY_MODEL
    out = sections.deploy_model(NAME, **forced)
    assert out["decision"] == "deployed" and out["version"] == 1 and out["round"] == 2
    registry = _registry(env.artifacts)
    version = registry.load(1)
    trial = r1["best"]["trial_id"]
    assert version["model.joblib"] == env.path(f"{R1.trial_model(trial)}/model.joblib").read_bytes()
    for name in ("preprocessor.joblib", "features.json"):
        assert version[name] == env.path(f"{R1.features_dir}/{name}").read_bytes()
    assert version["evaluation.json"] == env.path(R2.evaluation).read_bytes()
    lineage = json.loads(version["lineage.json"])
    collected = env.json(LAYOUT.collect_summary)
    assert lineage["round"] == 1 and lineage["selected_in_round"] == 2 and lineage["trial"] == trial
    assert lineage["window"] == collected["window"] and len(lineage["partitions"]) == 8
    assert lineage["dataset_uri"].endswith(LAYOUT.dataset) and lineage["rows"] == collected["dataset_rows"]
    meta = registry.metadata(1)
    assert meta["round"] == 2 and meta["trained_in_round"] == 1


def test_goal_not_met_records_the_last_round_and_the_report_says_so(env: Env, world: World) -> None:
    env.copy("round_1")
    got = sections.goal_not_met(NAME, **context(params={"max_rounds": 1}))
    assert got["decision"] == "goal_not_met" and got["version"] is None and got["round"] == 1
    assert got["test_score"] == world.out["evaluate_1"]["test_score"]
    assert got["reason"].startswith("after 1 round(s) the goal is not met: roc_auc")
    assert env.json(LAYOUT.outcome) == got
    report = sections.publish_report(NAME, **context(ti=TiStub({"goal_not_met": "success"})))
    assert report["decision"] == "goal_not_met"
    summary = env.json(LAYOUT.run_summary)
    assert summary["decision"] == "goal_not_met" and summary["model_version"] is None
    assert [r["round"] for r in summary["rounds"]] == [1]


# --- publish_report -------------------------------------------------------------------------------
def test_publish_report_of_the_deployed_run(world: World) -> None:
    got = world.out["report"]
    assert got == {
        "decision": "deployed",
        "summary_uri": _uri(world, LAYOUT.run_summary),
        "report_uri": _uri(world, LAYOUT.report),
    }
    assert world.ti.calls == [{"dag_id": NAME, "run_ids": [RUN_ID]}]  # the task states were asked for
    summary = _json(world, LAYOUT.run_summary)
    assert summary["decision"] == "deployed" and summary["model_version"] == 1 and summary["champion_after"] == 1
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["rounds"][0]["diagnosis"]["remedy"] == "augment_data"
    assert summary["rounds"][1]["plan"]["lookback_days"] == 16
    html = _path(world, LAYOUT.report).read_text()
    assert f"{NAME}: run {RUN_ID}" in html and "deployed" in html


FAILED = "round_1.feature_engineering"


@pytest.mark.parametrize(
    ("ti", "failed_task", "error"),
    [
        pytest.param(TiStub({FAILED: "failed", "formulate_problem": "success"}), FAILED, "SplitError", id="state"),
        pytest.param(TiStub(error=RuntimeError("no execution API")), FAILED, "SplitError", id="records-without-api"),
        pytest.param(
            TiStub({"round_1.train_model_1": "failed"}), "round_1.train_model_1", "no error recorded", id="mapped"
        ),
    ],
)
def test_publish_report_fails_the_run_when_a_task_failed(env: Env, ti: TiStub, failed_task: str, error: str) -> None:
    env.copy("final")
    record = {"task_id": FAILED, "map_index": None, "try_number": 1, "error": "SplitError: no train rows"}
    _write_json(env.path(LAYOUT.failure(FAILED)), record)
    with pytest.raises(AirflowFailException, match=rf"the run failed: task {failed_task} failed: .*{error}"):
        sections.publish_report(NAME, **context(ti=ti))
    summary = env.json(LAYOUT.run_summary)
    assert summary["decision"] == "failed" and summary["model_version"] is None
    assert summary["failed_task"] == failed_task and error in summary["error"]
    assert failed_task in env.path(LAYOUT.report).read_text()


def test_publish_report_ignores_a_failure_whose_task_ran_again(env: Env) -> None:
    env.copy("final")
    record = {"task_id": FAILED, "map_index": None, "try_number": 1, "error": "SplitError: no train rows"}
    _write_json(env.path(LAYOUT.failure(FAILED)), record)
    got = sections.publish_report(NAME, **context(ti=TiStub({FAILED: "success", "deploy_model": "success"})))
    assert got["decision"] == "deployed"


def test_publish_report_without_an_outcome_fails(env: Env) -> None:
    env.copy("round_1")
    with pytest.raises(AirflowFailException, match="the run ended without an outcome"):
        sections.publish_report(NAME, **context())
    summary = env.json(LAYOUT.run_summary)
    assert (
        summary["decision"] == "failed"
        and "no end task (deploy_model, goal_not_met, keep_champion)" in summary["error"]
    )


# --- score_new_data (BatchScoringOperator) ---------------------------------------------------------
def test_batch_scoring_scores_the_last_day_before_the_interval_end(world: World) -> None:
    got = world.out["score"]
    assert got["ds"] == "2026-02-28" and got["model_version"] == 1
    assert (got["rows_in"], got["rows_scored"], got["rows_quarantined"]) == (25, 25, 0)
    part = world.artifacts / NAME / "scores" / "ds=2026-02-28"
    assert got["scores_uri"] == _uri(world, "scores/ds=2026-02-28/part-0.parquet")
    scores = pd.read_parquet(part / "part-0.parquet")
    assert len(scores) == 25 and scores["row_id"].str.startswith("2026-02-28-").all()
    assert int(scores["decision"].sum()) == got["flagged"]
    manifest = json.loads((part / "_manifest.json").read_text())
    assert manifest["run_id"] == RUN_ID and manifest["columns"] == list(scores.columns)


def test_batch_scoring_a_chosen_day_and_its_failures(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.copy("final")
    assert _score(params={"ds": "2026-02-20"})["ds"] == "2026-02-20"
    assert env.path("scores/ds=2026-02-20/part-0.parquet").exists()
    with pytest.raises(AirflowFailException, match=r"param ds='2026-02-30' is not a date YYYY-MM-DD"):
        _score(params={"ds": "2026-02-30"})
    with pytest.raises(AirflowFailException, match="2026-03-05"):
        _score(params={"ds": "2026-03-05"})  # no such partition
    # no champion yet: another artifact root (MLflow keeps its store of a database path open, so
    # the database is not replaced under it)
    fresh = Env(env.world, env.tmp / "no-champion", monkeypatch)
    fresh.copy("round_1")
    with pytest.raises(AirflowFailException, match="cannot score ds=2026-02-28: .*no champion deployed"):
        _score()
    assert not fresh.path("scores").exists()
