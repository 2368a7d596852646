"""Deploy: what a registered model version holds (the bundle and its lineage) and which round of
a run is deployed.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from include.lifecycle.layout import RoundLayout
from include.lifecycle.store import Store

BUNDLE_FEATURE_FILES = ("preprocessor.joblib", "features.json")


def code_version() -> str:
    """The git commit of the project (``+dirty`` when the work tree differs), or $ML_CODE_VERSION."""
    if os.environ.get("ML_CODE_VERSION"):
        return os.environ["ML_CODE_VERSION"]
    from include.lifecycle.spec import PROJECT_ROOT

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def winning_round(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The round whose candidate passed the gate (the first: the loop stops there), or None."""
    return next((r for r in rounds if r["evaluation"] and r["evaluation"]["decision"]["deploy"]), None)


def trained_round(rounds: list[dict[str, Any]], win: dict[str, Any]) -> dict[str, Any]:
    """The record of the round the winning candidate was trained in: the winning round itself, or
    the earlier round whose trial its selection kept (``origin_round`` of its evaluation)."""
    k = win["evaluation"].get("origin_round") or win["round"]
    found = next((r for r in rounds if r["round"] == k), None)
    if found is None:
        raise ValueError(f"round {win['round']} evaluated a model of round {k}, which this run has no record of")
    return found


def bundle_files(
    store: Store, rnd: RoundLayout, evaluation: dict[str, Any], *, evaluated_in: RoundLayout | None = None
) -> dict[str, bytes]:
    """The files of a model version: the trial's model, the preprocessing and feature config of
    ``rnd`` (the round the model was trained in), the decision threshold and the evaluation (of
    round ``evaluated_in``, by default ``rnd``)."""
    files: dict[str, bytes] = {}
    model = rnd.trial_model(evaluation["trial_id"])
    for name in store.ls(model):
        files[name] = store.read_bytes(f"{model}/{name}")
    for name in BUNDLE_FEATURE_FILES:
        files[name] = store.read_bytes(f"{rnd.features_dir}/{name}")
    files["threshold.json"] = json.dumps({"threshold": evaluation.get("threshold")}).encode()
    files["evaluation.json"] = store.read_bytes((evaluated_in or rnd).evaluation)
    calibrator = (evaluated_in or rnd).calibrator
    if store.exists(calibrator):  # the threshold is on the calibrated scale: the model serves with it
        files["calibrator.joblib"] = store.read_bytes(calibrator)
    return files


def lineage(
    *,
    run_id: str,
    win: dict[str, Any],
    source: dict[str, Any],
    dataset_uri: str,
    spec_digest: str,
    trained: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Where a model version came from: the run, the round it was trained in (``trained``, by
    default the winning round ``win``) and the round that selected it, the data it was trained on
    (window, partitions, rows), the spec and the code. ``source`` is the collect summary of the data
    the model trained on; it must describe that data set, or the lineage would be wrong (ValueError)."""
    trained = trained or win
    plan, ev = trained["plan"], win["evaluation"]
    if source["dataset_rel"] != plan["dataset_rel"]:
        raise ValueError(
            f"round {trained['round']} trained on {plan['dataset_rel']} but its collect summary describes "
            f"{source['dataset_rel']}: the lineage would be wrong"
        )
    return {
        "run_id": run_id,
        "round": trained["round"],
        "selected_in_round": win["round"],
        "dataset_uri": dataset_uri,
        "window": source.get("window"),
        "partitions": [p.get("ds") for p in source.get("partitions") or []],
        "rows": source.get("dataset_rows"),
        "spec_digest": spec_digest,
        "code_version": code_version(),
        "feature_groups": plan["feature_groups"],
        "trial": ev["trial_id"],
        # a static file's later candidates are compared with this model only on these same held-out rows
        "test_rows_digest": ev.get("test_rows_digest"),
    }
