"""The flagship problem end to end with ``dag.test()`` on the default demo data (the same size
`make run` uses): eight sections, the improvement loop doing real work, a champion in the
registry, the reports, and a re-run for the same logical date that rebuilds the same data."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from include.lifecycle import synth
from include.lifecycle.spec import load_spec
from tests.integration.dagrun import ROOT, artifacts, content_hash, read_json, run_dag, sha256

pytestmark = pytest.mark.integration

LOGICAL_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SPEC = load_spec(ROOT / "include" / "problems" / "card_fraud.yaml")


class _Html(HTMLParser):
    """Collects tags and embedded images; raises on nothing, so we also check balance."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[bytes] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.unbalanced: list[str] = []

    VOID = {"img", "br", "hr", "meta", "link", "input", "col", "wbr", "source"}

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)
        src = dict(attrs).get("src") or ""
        if tag == "img" and src.startswith("data:image/png;base64,"):
            self.images.append(base64.b64decode(src.split(",", 1)[1]))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.unbalanced.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse_html(path: Path) -> _Html:
    doc = path.read_text()
    assert doc.lstrip().lower().startswith("<!doctype html>")
    p = _Html()
    p.feed(doc)
    p.close()
    assert not p.unbalanced, f"{path}: unbalanced tags {p.unbalanced[:5]}"
    assert not p.stack, f"{path}: unclosed tags {p.stack[:5]}"
    return p


@pytest.fixture(scope="module")
def landing(session_tmp):
    root = session_tmp / "data" / "data" / "card_fraud" / "landing"
    summary = synth.generate(root, end=LOGICAL_DATE.date(), days=90, tx_per_day=4000, seed=7)
    return root, summary


@pytest.fixture(scope="module")
def first_run(airflow_db, landing):
    before = {p: sha256(p) for p in sorted(landing[0].rglob("*.parquet"))[:20]}
    state, run_id, run_dir = run_dag("card_fraud", LOGICAL_DATE)
    return {"state": state, "run_id": run_id, "run_dir": run_dir, "landing_before": before}


def test_the_whole_lifecycle_succeeds_and_the_loop_does_real_work(first_run):
    assert first_run["state"] == "success"
    s = read_json(first_run["run_dir"] / "run_summary.json")
    assert s["problem"] == "card_fraud"
    assert s["goal"]["metric"] == SPEC.goal.metric and s["goal"]["target"] == SPEC.goal.target
    rounds = s["rounds"]
    assert len(rounds) >= 2
    # by design of the goal and the feature groups: transaction features alone fall short ...
    assert rounds[0]["plan"]["feature_groups"] == ["transaction"]
    assert rounds[0]["meets_goal"] is False
    assert rounds[0]["test_score"] < SPEC.goal.target
    # ... the diagnosis picks a remedy with a reason and a later round meets the goal
    assert rounds[1]["plan"]["remedy"] in {"tune_model", "augment_features", "augment_data"}
    assert rounds[1]["plan"]["reason"]
    assert rounds[-1]["meets_goal"] is True
    assert rounds[-1]["test_score"] >= SPEC.goal.target
    assert all(not r["meets_goal"] for r in rounds[:-1])
    assert s["decision"] == "deployed"
    assert s["model_version"] == 1
    assert s["champion_before"] is None and s["champion_after"] == 1


def test_problem_card_records_goal_baselines_and_checks(first_run):
    card = read_json(first_run["run_dir"] / "problem_card.json")
    assert card["business_goal"].startswith("Reduce fraud losses")
    assert card["baselines"], card
    assert all(c["passed"] for c in card["checks"]), card["checks"]
    assert 0 < card["data"]["approx_base_rate"] < 0.01
    assert {b["name"] for b in card["baselines"]} >= {"flag nothing", "rule of thumb"}


def test_etl_accounts_for_every_row_and_never_touches_input(first_run, landing):
    c = read_json(first_run["run_dir"] / "collect_summary.json")
    assert c["rows_in"] == c["rows_curated"] + c["rows_quarantined"]
    assert c["rows_quarantined"] > 0  # the generator injects schema defects on purpose
    assert sum(c["by_rule"].values()) == c["rows_quarantined"]
    assert sum(p["rows_in"] for p in c["partitions"]) == c["rows_in"]
    q = pd.concat(pd.read_parquet(p) for p in (artifacts("card_fraud") / "quarantine").rglob("*.parquet"))
    assert {"_rule", "_column", "_reason"} <= set(q.columns)
    assert q["_reason"].str.len().min() > 0
    for path, digest in first_run["landing_before"].items():
        assert sha256(path) == digest, f"input {path} was modified"


def test_pii_is_tokenised_in_everything_written(first_run, landing):
    raw = pd.read_parquet(next(landing[0].rglob("transactions/ds=2026-10-20/*.parquet")), columns=["card_number"])
    ds = pd.read_parquet(first_run["run_dir"] / "dataset.parquet")
    assert not set(raw["card_number"]) & set(ds["card_number"])
    assert ds["card_number"].str.fullmatch(r"[0-9a-f]{16,64}").all()


def test_eda_report_is_valid_html_with_embedded_plots(first_run):
    eda = first_run["run_dir"] / "eda"
    page = parse_html(eda / "eda_report.html")
    assert len(page.images) >= 4
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") for img in page.images)
    text = " ".join(page.text)
    for column in ("amount", "merchant_category", "channel", "is_fraud"):
        assert column in text
    verdict = read_json(eda / "verdict.json")
    assert verdict["verdict"] == "fit"


def test_run_report_joins_eda_models_and_rounds(first_run):
    page = parse_html(first_run["run_dir"] / "report.html")
    text = " ".join(page.text)
    s = read_json(first_run["run_dir"] / "run_summary.json")
    for r in s["rounds"]:
        assert f"Round {r['round']}" in text or f"round {r['round']}" in text
    assert len(page.images) >= 4 + 4 * len(s["rounds"])  # EDA plots + PR/ROC/confusion/value/importance


def test_the_champion_loads_verified_and_scores_new_rows(first_run):
    import tempfile

    from include.lifecycle.bundle import ModelBundle
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store

    reg = ModelRegistry(Store.from_uri(artifacts("card_fraud").as_uri()), "card_fraud")
    champ = reg.champion()  # the alias champion of the registered model card_fraud in MLflow
    assert champ["version"] == 1 and champ["run_id"] == first_run["run_id"]
    assert int(reg.client.get_model_version_by_alias("card_fraud", "champion").version) == 1
    tags = reg.tags(1)
    assert tags["airflow.run_id"] == first_run["run_id"] and tags["lineage.spec_digest"] == SPEC.digest()
    files = reg.load(1)  # verifies every file against the manifest's sha256
    lineage = json.loads(files["lineage.json"])
    assert lineage["run_id"] == first_run["run_id"]
    assert lineage["spec_digest"] == SPEC.digest()
    assert lineage["code_version"]
    assert len(lineage["partitions"]) == SPEC.data.lookback_days
    assert {"preprocessor.joblib", "features.json", "threshold.json"} <= set(files)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = ModelBundle.load(reg.materialise(1, tmp))
    rows = pd.read_parquet(first_run["run_dir"] / "dataset.parquet").tail(2000)
    # the bundle asks for every input column of the data set (read from its schema: feature
    # engineering itself skips the key and the PII columns it does not use)
    features = json.loads(files["features.json"])
    assert features["input_columns"] == [c for c in rows.columns if c != SPEC.problem.target]
    assert SPEC.data.key in features["input_columns"]
    scores = bundle.score(rows)
    assert scores.shape == (2000,) and ((scores >= 0) & (scores <= 1)).all()
    assert bundle.threshold is not None


def test_the_champion_model_asset_event_carries_version_metric_interval_and_run(first_run):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = session.query(AssetModel).filter(AssetModel.name == "card_fraud.champion_model").one()
        events = session.query(AssetEvent).filter(AssetEvent.asset_id == asset.id).all()
        extras = [(e.source_run_id, e.extra) for e in events]
    extra = next(x for run, x in extras if run == first_run["run_id"])
    summary = read_json(first_run["run_dir"] / "run_summary.json")
    assert extra["decision"] == "deployed" and extra["version"] == summary["model_version"] == 1
    assert extra["run_id"] == first_run["run_id"] and extra["model_uri"] == "models:/card_fraud/1"
    assert extra["metric"] == SPEC.goal.metric and extra["interval"]["low"] <= extra["test_score"]
    assert extra["interval"]["high"] >= extra["test_score"]


def test_rerun_for_the_same_logical_date_rebuilds_the_same_curated_data(first_run):
    curated = artifacts("card_fraud") / "curated"
    c1 = read_json(first_run["run_dir"] / "collect_summary.json")
    window = [p["ds"] for p in c1["partitions"]]
    before = {ds: sha256(curated / f"ds={ds}" / "part-0.parquet") for ds in window}
    data_before = content_hash(pd.read_parquet(first_run["run_dir"] / "dataset.parquet"))
    shutil.rmtree(curated)  # force the ETL to rebuild every partition, not reuse them

    state, _, run_dir = run_dag("card_fraud", LOGICAL_DATE, conf={"max_rounds": 1})
    assert state == "success"
    c2 = read_json(run_dir / "collect_summary.json")
    assert c2["rows_curated"] == c1["rows_curated"] and c2["rows_quarantined"] == c1["rows_quarantined"]
    after = {ds: sha256(curated / f"ds={ds}" / "part-0.parquet") for ds in window}
    assert after == before
    assert content_hash(pd.read_parquet(run_dir / "dataset.parquet")) == data_before
    # one round only and the transaction features miss the goal: nothing new is deployed
    s2 = read_json(run_dir / "run_summary.json")
    assert len(s2["rounds"]) == 1
    assert s2["decision"] == "goal_not_met"
    assert s2["champion_before"] == 1 and s2["champion_after"] == 1
