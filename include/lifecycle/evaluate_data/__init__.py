"""Section 3 of the lifecycle, "evaluate data": profile, drift, quality gate, plots and the data report.

Pure Python (pandas, numpy, matplotlib): nothing here imports airflow, so the same code runs in
a DAG task, a Glue job or a notebook.

The pieces fit together like this::

    prev = <the previous run's profile dict, or None>
    prof = profile(df, target=..., time_column=..., numeric=..., categorical=..., **reference_bins(prev))
    dr = drift(prof, prev)
    verdict = quality_gate(prof, quality=spec.quality, expected_columns=spec.schema_.names,
                           drift_result=dr, quarantine_share=q, max_quarantine_share=spec.schema_.max_quarantine_share)
    pngs = plots(df, target=..., time_column=..., numeric=..., categorical=...)
    html = render_eda_html("Card fraud - data report", prof, pngs, verdict, dr, etl_counts)
    raise_if_unfit(verdict)

Drift needs the previous run's *profile* (a JSON-serialisable dict, store it with every run).
Each numeric column of a profile keeps its own quantile ``bin_edges`` and ``bin_shares``;
passing ``reference_bins(prev)`` to :func:`profile` also records the current data's shares in the
previous run's edges (``reference_edges`` / ``reference_shares``) and the current shares of the
previous run's top categories (``reference_categories``), so :func:`drift` computes an exact PSI.
Without them :func:`drift` still works, approximately (it re-projects the current quantile bins
onto the previous edges and merges categories not in both top lists into "other") and lists
such columns under ``approximate``.

Modules by concern: :mod:`.profiling` (the profile), :mod:`.stability` (bins and PSI drift),
:mod:`.gate` (the quality gate), :mod:`.figures` (plots), :mod:`.render` (the HTML report) and
:mod:`.columns` (the value helpers they share). Import the names from this package.
"""

from __future__ import annotations

from include.lifecycle.evaluate_data.figures import plots
from include.lifecycle.evaluate_data.gate import DataQualityError, quality_gate, raise_if_unfit
from include.lifecycle.evaluate_data.profiling import profile
from include.lifecycle.evaluate_data.render import eda_sections, render_eda_html, render_eda_section
from include.lifecycle.evaluate_data.stability import bin_shares, drift, psi, quantile_edges, reference_bins

__all__ = [
    "DataQualityError",
    "bin_shares",
    "drift",
    "eda_sections",
    "plots",
    "profile",
    "psi",
    "quality_gate",
    "quantile_edges",
    "raise_if_unfit",
    "reference_bins",
    "render_eda_html",
    "render_eda_section",
]
