"""Section 7: evaluate the round's model on the untouched test rows, against the champion."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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


def _champion_chain(reg: Any) -> list[dict[str, Any]]:
    """The promotion chain, newest first: the champion (MLflow alias), then each record's ``previous``."""
    return reg.chain()


def test_rows_digest(df: Any) -> str:
    """A digest of the test rows' content: a static file's champion held out these very rows
    when its digest is the same (same data, same split)."""
    import hashlib

    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()


def _data_end(window: Any) -> str | None:
    """The end (exclusive, ``YYYY-MM-DD``) of a collection's window; None for a static file."""
    return (window or {}).get("end") if isinstance(window, dict) else None


def champion_on_test(rc: RunContext, plan: dict[str, Any]) -> tuple[int | None, Any, str | None, str]:
    """``(current champion version, the champion to compare with on this round's test rows, note,
    the digest of the test rows)``.

    The champion compared with is the current one if some test rows are unseen by it; otherwise
    (a backfill of an earlier date, a run right after the champion's) the newest champion of the
    promotion chain that has not seen them; None if there is none. A damaged version (a file no
    longer matches its checksum) is skipped and reported: it must not block retraining. The
    version returned first stays the current one: the promotion's compare-and-set is against it."""
    import pandas as pd

    from include.lifecycle.assessment import ChampionOnTest, unseen_rows
    from include.lifecycle.bundle import ModelBundle
    from include.lifecycle.dataset import TEST, assign_splits, target_vector
    from include.lifecycle.registry import ModelRegistry

    spec = rc.spec
    reg = ModelRegistry(rc.store, spec.name)
    df = rc.store.read_parquet(plan["dataset_rel"])
    y = target_vector(df[spec.problem.target], spec)
    test = assign_splits(df, spec, y, as_of=rc.as_of) == TEST  # the very rows the candidate is tested on
    rows = df[test]
    times = None
    if spec.data.time_column:  # as naive UTC datetimes, like the champion's window dates
        times = pd.to_datetime(rows[spec.data.time_column], utc=True).dt.tz_localize(None).to_numpy()
    digest = test_rows_digest(rows.drop(columns=[spec.problem.target]))
    chain = _champion_chain(reg)
    if not chain:
        return None, None, None, digest
    current = chain[0]["version"]
    candidate_end = _data_end(
        (rc.store.read_json_or(plan.get("collect_rel") or rc.layout.collect_summary) or {}).get("window")
    )
    notes, damaged, newer = [], [], False
    for record in chain:
        version = record["version"]
        if not reg.intact(version):
            damaged.append(version)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = reg.materialise(version, tmp)
            bundle = ModelBundle.load(folder)
            lineage = json.loads((folder / "lineage.json").read_text()) if (folder / "lineage.json").exists() else {}
        data_end = _data_end(lineage.get("window"))
        if version == current:  # an older model never replaces a champion trained on newer data
            newer = bool(data_end and candidate_end and data_end > candidate_end)
        unseen, basis = unseen_rows(
            len(rows), times, champion_data_end=data_end, same_held_out_rows=lineage.get("test_rows_digest") == digest
        )
        if not unseen.any() and record is not chain[-1]:
            notes.append(f"v{version}: {basis}, none of the test rows")
            continue
        missing = [c for c in bundle.input_columns if c not in df.columns]
        if missing:
            notes.append(f"champion v{version} needs columns {missing} that this data set lacks")
            unseen = np.zeros(len(rows), dtype=bool)
            scores = np.full(len(rows), np.nan)
        else:
            scores = bundle.score(df)[test]
        if damaged:
            notes.insert(0, f"champion version(s) {damaged} are damaged (checksum mismatch) and were skipped")
        if version != current:
            notes.append(f"compared with v{version}, the newest champion that has not seen the test rows")
        note = "; ".join(notes) or None
        if note:
            log.warning("%s", note)
        return current, ChampionOnTest(version, scores, bundle.threshold, unseen, basis, newer), note, digest
    note = f"champion version(s) {damaged} are damaged (checksum mismatch) and were skipped; no intact champion"
    log.warning("%s", note)
    return current, None, note, digest


def evaluate_model(problem: str, round_no: int, **context: Any) -> dict[str, Any]:
    """The round's best model on the untouched test rows, the value-maximising threshold, the goal
    as the business runs it, intervals, the paired comparison with the champion, the decision."""
    import numpy as np

    from include.lifecycle.assessment import assess
    from include.lifecycle.decide import goal_decision
    from include.lifecycle.models import load_model

    rc = RunContext.from_airflow(problem, context)
    spec, goal = rc.spec, rc.spec.goal
    rnd = rc.layout.round(round_no)
    best = rc.store.read_json(rnd.selection)["best"]
    origin = rc.layout.round(best.get("round", round_no))  # the round the selected trial came from
    plan = rc.store.read_json(origin.plan)
    features = rc.store.read_json(origin.features)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(_local_copy(rc, best["model_rel"], tmp))
    test = _load_split(rc, origin.channel_file("test"))
    train_mean = None if spec.is_binary else float(np.mean(_load_split(rc, origin.channel_file("train")).y))
    result, pngs, scores, calibrator = assess(
        spec,
        model,
        features,
        best,
        validation=_load_split(rc, origin.channel_file("validation")),
        test=test,
        train_mean=train_mean,
    )
    result["leaderboard"] = _leaderboard(rc.store.read_json(rnd.selection), best)
    if calibrator is not None:
        import io

        import joblib

        buf = io.BytesIO()
        joblib.dump(calibrator, buf)
        rc.store.write_bytes(rnd.calibrator, buf.getvalue())
    current, comparison, digest = _compare(rc, plan, test, scores, result.get("threshold"))
    decision = goal_decision(
        spec, check=result["goal_check"], comparison=comparison, force=bool(rc.params.get("force_deploy"))
    )
    result = {"round": round_no, "origin_round": origin.k, "test_rows_digest": digest, **result}
    result.update(
        champion_version=current,
        champion_score=comparison.get("champion"),
        comparison=comparison,
        decision=decision,
    )
    for name, png in pngs.items():
        rc.store.write_bytes(rnd.plot(name), png)
    rc.store.write_parquet(rnd.test_scores, _scores_table(scores))
    rc.store.write_json(rnd.evaluation, result)
    ci = result["goal_check"]["interval"]
    log.info(
        "evaluate_model round %d: %s test %.4f [%.4f, %.4f] (goal %s); %s",
        round_no,
        goal.metric,
        result["test_score"],
        ci["low"],
        ci["high"],
        goal.target,
        decision["reason"],
    )
    return {
        "round": round_no,
        "test_score": result["test_score"],
        "test_interval": [ci["low"], ci["high"]],
        "validation_score": best["validation_score"],
        "train_score": best["train_score"],
        "deploy": decision["deploy"],
        "reason": decision["reason"],
    }


def _leaderboard(selection: dict[str, Any], best: dict[str, Any]) -> list[dict[str, Any]]:
    """Every trial of the round with its scores and fit time; the selected one marked."""
    rows = []
    for t in selection.get("trials") or []:
        rows.append(
            {
                "round": t.get("round"),
                "trial_id": t["trial_id"],
                "family": t.get("family"),
                "params": t.get("params"),
                "train_score": t.get("train_score"),
                "validation_score": t.get("validation_score"),
                "fit_seconds": (t.get("seconds") or {}).get("fit"),
                "selected": t["trial_id"] == best["trial_id"] and t.get("round") == best.get("round"),
            }
        )
    return rows


def _scores_table(scores: Any) -> Any:
    import pyarrow as pa

    return pa.table({"score": pa.array(np.asarray(scores, dtype="float64"))})


def recompare(rc: RunContext, ev: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """The gate again for an evaluated round after the champion changed (a concurrent run or
    backfill promoted one): the same goal check, a new paired comparison with the champion now in
    place on the round's test rows. Returns ``(the champion version now, the decision)``."""
    from include.lifecycle.decide import goal_decision

    rnd = rc.layout.round(ev["round"])
    origin = rc.layout.round(ev.get("origin_round", ev["round"]))
    test = _load_split(rc, origin.channel_file("test"))
    scores = rc.store.read_parquet(rnd.test_scores)["score"].to_numpy()
    current, comparison, _ = _compare(rc, rc.store.read_json(origin.plan), test, scores, ev.get("threshold"))
    forced = bool(ev["decision"].get("forced", False))
    return current, goal_decision(rc.spec, check=ev["goal_check"], comparison=comparison, force=forced)


def _compare(
    rc: RunContext, plan: dict[str, Any], test: Any, scores: Any, threshold: float | None
) -> tuple[int | None, dict[str, Any], str]:
    """``(current champion version, the paired comparison on the test rows, the test rows' digest)``."""
    from include.lifecycle.assessment import compare_with_champion

    current, champion, note, digest = champion_on_test(rc, plan)
    comparison = compare_with_champion(
        rc.spec,
        y=test.y,
        amount=test.amount,
        candidate_scores=scores,
        candidate_threshold=threshold,
        champion=champion,
        note=note,
    )
    comparison["champion_version"] = current  # the version the promotion's compare-and-set is against
    if champion is not None:
        comparison["newer_data"] = champion.newer_data
    return current, comparison, digest
