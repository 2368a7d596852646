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


def bundle_files(store: Store, rnd: RoundLayout, evaluation: dict[str, Any]) -> dict[str, bytes]:
    """The files of a model version: the trial's model, the round's preprocessing and feature
    config, the decision threshold and the evaluation."""
    files: dict[str, bytes] = {}
    model = rnd.trial_model(evaluation["trial_id"])
    for name in store.ls(model):
        files[name] = store.read_bytes(f"{model}/{name}")
    for name in BUNDLE_FEATURE_FILES:
        files[name] = store.read_bytes(f"{rnd.features_dir}/{name}")
    files["threshold.json"] = json.dumps({"threshold": evaluation.get("threshold")}).encode()
    files["evaluation.json"] = store.read_bytes(rnd.evaluation)
    return files


def lineage(
    *, run_id: str, win: dict[str, Any], source: dict[str, Any], dataset_uri: str, spec_digest: str
) -> dict[str, Any]:
    """Where a model version came from: the run, the round, the data (window, partitions, rows),
    the spec and the code. ``source`` is the collect summary of the data the round trained on;
    it must describe that data set, or the lineage would be wrong (ValueError)."""
    plan, ev = win["plan"], win["evaluation"]
    if source["dataset_rel"] != plan["dataset_rel"]:
        raise ValueError(
            f"round {win['round']} trained on {plan['dataset_rel']} but its collect summary describes "
            f"{source['dataset_rel']}: the lineage would be wrong"
        )
    return {
        "run_id": run_id,
        "round": win["round"],
        "dataset_uri": dataset_uri,
        "window": source.get("window"),
        "partitions": [p.get("ds") for p in source.get("partitions") or []],
        "rows": source.get("dataset_rows"),
        "spec_digest": spec_digest,
        "code_version": code_version(),
        "feature_groups": plan["feature_groups"],
        "trial": ev["trial_id"],
    }
