"""Section 3 of the lifecycle, "evaluate data": profile, drift, completeness, freshness, label
delay, quality gate, plots and the data report.

Pure Python (pandas, numpy, matplotlib): nothing here imports airflow, so the same code runs in
a DAG task, a Glue job or a notebook.

The pieces fit together like this::

    prof = profile(df, target=..., time_column=..., numeric=..., categorical=...)
    ref_df, info = champion_training_data(store, columns=[...], time_column=...)   # (None, why): no champion
    dr = drift_against(df, ref_df, info, time_column=..., numeric=..., categorical=...,
                       recent_days=spec.quality.drift_recent_days, seed=...)
    cov = coverage(collect_summary)                       # days present, newest partition
    prof["label_delay"] = label_delay(ts, arrived_at, as_of=..., maturity_days=...)   # label feeds
    verdict = quality_gate(prof, quality=spec.quality, expected_columns=spec.schema_.names,
                           drift_result=dr, quarantine_share=q, max_quarantine_share=..., coverage=cov)
    pngs = plots(df, ...) | drift_plots(dr, limit) | {"completeness": ..., "label_delay": ...}
    html = render_eda_html("Card fraud - data report", prof, pngs, verdict, dr, etl_counts)
    raise_if_unfit(verdict)

Drift compares the newest days of the window (``quality.drift_recent_days``, only those after
the champion's training rows) with the rows the champion was trained on: the reference's quantile
``bin_edges`` and top categories bin both sides (``reference_bins``), so the PSI is exact; each
PSI has a seeded bootstrap interval and a no-drift level, and a column drifts when its PSI is above
the limit and that level. Without a champion there is no reference, and the report says so.

Modules by concern: :mod:`.profiling` (the profile), :mod:`.stability` (bins and PSI drift),
:mod:`.reference` (the champion's training rows, the newest rows), :mod:`.coverage`
(completeness and freshness), :mod:`.labels` (label delay), :mod:`.gate` (the quality gate),
:mod:`.figures` (plots), :mod:`.render` (the HTML report) and :mod:`.columns` (the value helpers
they share). Import the names from this package.
"""

from __future__ import annotations

from include.lifecycle.evaluate_data.coverage import coverage
from include.lifecycle.evaluate_data.figures import completeness_plot, drift_plots, label_delay_plot, plots
from include.lifecycle.evaluate_data.gate import DataQualityError, quality_gate, raise_if_unfit
from include.lifecycle.evaluate_data.labels import arrival_curve, label_arrivals, label_delay
from include.lifecycle.evaluate_data.profiling import profile
from include.lifecycle.evaluate_data.reference import FIRST_MODEL, champion_training_data, drift_against, newest_rows
from include.lifecycle.evaluate_data.render import eda_sections, render_eda_html, render_eda_section
from include.lifecycle.evaluate_data.stability import (
    bin_shares,
    drift,
    drifted,
    psi,
    psi_noise,
    quantile_edges,
    reference_bins,
)

__all__ = [
    "FIRST_MODEL",
    "DataQualityError",
    "arrival_curve",
    "bin_shares",
    "champion_training_data",
    "completeness_plot",
    "coverage",
    "drift",
    "drift_against",
    "drift_plots",
    "drifted",
    "eda_sections",
    "label_arrivals",
    "label_delay",
    "label_delay_plot",
    "newest_rows",
    "plots",
    "profile",
    "psi",
    "psi_noise",
    "quality_gate",
    "quantile_edges",
    "raise_if_unfit",
    "reference_bins",
    "render_eda_html",
    "render_eda_section",
]
