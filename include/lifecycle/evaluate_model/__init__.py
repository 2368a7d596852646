"""Section 7 of the lifecycle: evaluate a trained model against the business goal.

Everything here is plain numpy / scikit-learn / matplotlib and never imports airflow, so the
same code runs in a DAG task, a Glue job or a SageMaker processing script.

Conventions used throughout:

* ``y`` for binary problems holds 0/1 (or bool) labels, 1 being the positive class;
  ``scores`` are finite model scores where higher means "more likely positive"
  (usually ``predict_proba(X)[:, 1]``).
* A row is *flagged* when ``score >= threshold``.
* Every metric is computed from one sort (or one partition) plus cumulative sums, so a
  million rows take well under a second; nothing loops over thresholds in Python.
* Every returned number is a plain Python ``float`` / ``int`` / ``None`` so results can be
  written to JSON as they are.
* A score that cannot be judged on the rows given (no positives, one class only for ROC AUC /
  AUPRC, fewer than 2 rows for r2) is never reported as 0.0: the scoring functions raise
  :class:`MetricUndefined`; :func:`binary_metrics` and :func:`regression_metrics` (descriptive
  tables) give None for it.

Modules by concern: :mod:`.metrics` (the goal metric and the metric tables), :mod:`.threshold`
(business value and the decision threshold), :mod:`.calibration` (reliability, calibrators, the
calibration test), :mod:`.importance` (permutation importance in the declared columns, the model's
own importance), :mod:`.figures` (plots) and :mod:`.arrays` (the input checks they share). Import the
names from this package.
"""

from __future__ import annotations

from include.lifecycle.evaluate_model.calibration import (
    CALIBRATION_METHODS,
    Calibrator,
    brier_score,
    calibration_check,
    calibration_table,
    fit_calibrator,
)
from include.lifecycle.evaluate_model.figures import (
    calibration_plot,
    importance_plot,
    plots_binary,
    plots_regression,
    rounds_plot,
)
from include.lifecycle.evaluate_model.importance import (
    permutation_importance,
    raw_column_groups,
)
from include.lifecycle.evaluate_model.metrics import (
    MetricUndefined,
    ResampledBinaryMetrics,
    binary_metrics,
    goal_metric,
    metric_at_alert_rate,
    regression_metrics,
)
from include.lifecycle.evaluate_model.threshold import choose_threshold, outcome_values

__all__ = [
    "CALIBRATION_METHODS",
    "Calibrator",
    "MetricUndefined",
    "ResampledBinaryMetrics",
    "binary_metrics",
    "brier_score",
    "calibration_check",
    "calibration_plot",
    "calibration_table",
    "choose_threshold",
    "fit_calibrator",
    "goal_metric",
    "importance_plot",
    "metric_at_alert_rate",
    "outcome_values",
    "permutation_importance",
    "plots_binary",
    "plots_regression",
    "raw_column_groups",
    "regression_metrics",
    "rounds_plot",
]
