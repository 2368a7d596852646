"""The run layout's catalog and its path methods say the same thing (include/lifecycle/layout.py)."""

from __future__ import annotations

import pytest

from include.lifecycle.layout import CATALOG, RunLayout

RUN_ID = "scheduled__2026-11-01T02:00:00+00:00"
K, TRIAL, SPLIT = 2, "xgboost-3", "validation"

# catalog entry -> the layout's path for it
_ROUND = RunLayout(RUN_ID).round(K)
PATHS = {
    "problem_card": RunLayout(RUN_ID).problem_card,
    "collect_summary": RunLayout(RUN_ID).collect_summary,
    "dataset": RunLayout(RUN_ID).dataset,
    "eda_profile": RunLayout(RUN_ID).eda_profile,
    "eda_verdict": RunLayout(RUN_ID).eda_verdict,
    "eda_section": RunLayout(RUN_ID).eda_section,
    "eda_report": RunLayout(RUN_ID).eda_report,
    "plan": _ROUND.plan,
    "recollect_summary": RunLayout.collect_summary_in(RunLayout(RUN_ID).collect_dir(K)),
    "recollect_dataset": RunLayout.dataset_in(RunLayout(RUN_ID).collect_dir(K)),
    "split": _ROUND.split,
    "features": _ROUND.features,
    "preprocessor": _ROUND.preprocessor,
    "channel": _ROUND.channel(SPLIT),
    "trial": _ROUND.trial(TRIAL),
    "selection": _ROUND.selection,
    "evaluation": _ROUND.evaluation,
    "calibrator": _ROUND.calibrator,
    "test_scores": _ROUND.test_scores,
    "plots": _ROUND.plots_dir,
    "diagnosis": _ROUND.diagnosis,
    "approval_request": RunLayout(RUN_ID).approval_request,
    "approval": RunLayout(RUN_ID).approval,
    "recheck": RunLayout(RUN_ID).recheck,
    "outcome": RunLayout(RUN_ID).outcome,
    "failures": RunLayout(RUN_ID).failures_dir,
    "run_summary": RunLayout(RUN_ID).run_summary,
    "report": RunLayout(RUN_ID).report,
}


def test_every_catalog_entry_has_its_path_and_every_path_its_entry() -> None:
    assert set(PATHS) == set(CATALOG)


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_the_catalog_template_is_the_layouts_path(name: str) -> None:
    entry = CATALOG[name]
    rendered = entry.template.format(run=RunLayout(RUN_ID).dir, k=K, trial=TRIAL, split=SPLIT)
    assert rendered == PATHS[name]
    assert entry.writer and entry.doc


def test_a_run_id_is_one_safe_folder_and_a_folder_name_passes_through() -> None:
    layout = RunLayout(RUN_ID)
    assert layout.dir == "runs/scheduled__2026-11-01T02_00_00_00_00"
    assert RunLayout(layout.dir.removeprefix("runs/")).dir == layout.dir
    assert layout.round(1).channel_file("test") == f"{layout.dir}/round_1/features/test/part-0.parquet"
    assert layout.failure("round_1.train_model_3") == f"{layout.dir}/failures/round_1.train_model_3.json"
