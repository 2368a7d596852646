"""Section 7: evaluate the round's model on the untouched test rows, against the champion."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ml_lifecycle.context import RunContext

log = logging.getLogger("airflow.task")


# --- section 7 -----------------------------------------------------------------------------
def _load_split(rc: RunContext, rel: str) -> Any:
    from include.lifecycle.assessment import Split
    from include.lifecycle.models import AMOUNT_COL, TARGET_COL

    df = rc.store.read_parquet(rel)
    amount = df[AMOUNT_COL].to_numpy(dtype="float64") if AMOUNT_COL in df.columns else None
    X = df.drop(columns=[c for c in (TARGET_COL, AMOUNT_COL) if c in df.columns]).to_numpy(dtype="float32")
    return Split(X, df[TARGET_COL].to_numpy(), amount)


def _local_copy(rc: RunContext, rel: str, folder: str) -> str:
    for name in rc.store.ls(rel):
        rc.store.download(f"{rel}/{name}", str(Path(folder, name)))
    return folder


def champion_score(rc: RunContext, plan: dict[str, Any]) -> tuple[int | None, float | None, str | None]:
    """``(champion version, its goal metric on this round's test rows, note)``.

    A damaged champion (a file no longer matches its checksum) must not block retraining: it is
    reported, and the candidate is compared with the newest intact champion before it, or none.
    The version returned stays the current one: the promotion's compare-and-set is against it."""
    from include.lifecycle.assessment import champion_test_score
    from include.lifecycle.bundle import ModelBundle
    from include.lifecycle.layout import REGISTRY
    from include.lifecycle.registry import ModelRegistry

    reg = ModelRegistry(rc.store.sub(REGISTRY))
    current = reg.champion()
    if not current:
        return None, None, None
    champ, damaged = reg.last_intact_champion()
    note = None
    if damaged:
        note = f"champion version(s) {damaged} are damaged (checksum mismatch) and were skipped; " + (
            f"compared with version {champ['version']}, the last intact champion"
            if champ
            else "no intact champion to compare with"
        )
        log.warning("%s", note)
    if not champ:
        return current["version"], None, note
    with tempfile.TemporaryDirectory() as tmp:
        bundle = ModelBundle.load(reg.materialise(champ["version"], tmp))
    value, why = champion_test_score(rc.spec, bundle, rc.store.read_parquet(plan["dataset_rel"]), as_of=rc.as_of)
    return current["version"], value, why or note


def evaluate_model(problem: str, round_no: int, **context: Any) -> dict[str, Any]:
    """Metrics on the untouched test split, the value-maximising threshold, champion comparison, plots."""
    import numpy as np

    from include.lifecycle.assessment import assess, gate
    from include.lifecycle.models import load_model

    rc = RunContext.from_airflow(problem, context)
    spec, goal = rc.spec, rc.spec.goal
    rnd = rc.layout.round(round_no)
    plan = rc.store.read_json(rnd.plan)
    best = rc.store.read_json(rnd.selection)["best"]
    names = rc.store.read_json(rnd.features)["feature_names"]
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(_local_copy(rc, best["model_rel"], tmp))
    train_mean = None if spec.is_binary else float(np.mean(_load_split(rc, rnd.channel_file("train")).y))
    result, pngs = assess(
        spec,
        model,
        names,
        best,
        validation=_load_split(rc, rnd.channel_file("validation")),
        test=_load_split(rc, rnd.channel_file("test")),
        train_mean=train_mean,
    )
    champ_version, champ_value, champ_note = champion_score(rc, plan)
    decision = gate(
        spec, result["test_score"], champion=champ_value, note=champ_note, force=bool(rc.params.get("force_deploy"))
    )
    result = {"round": round_no, **result}
    result.update(champion_version=champ_version, champion_score=champ_value, decision=decision)
    for name, png in pngs.items():
        rc.store.write_bytes(rnd.plot(name), png)
    rc.store.write_json(rnd.evaluation, result)
    log.info(
        "evaluate_model round %d: %s test %.4f (goal %s); %s",
        round_no,
        goal.metric,
        result["test_score"],
        goal.target,
        decision["reason"],
    )
    return {
        "round": round_no,
        "test_score": result["test_score"],
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
        "deploy": decision["deploy"],
        "reason": decision["reason"],
    }
