"""Feature importance: permutation importance of the goal metric on the test rows, in the columns
the spec declared (:func:`permutation_importance`, :func:`raw_column_groups`). A model's own
importance (gain, |coef|) is not reported: it ranks engineered columns on scales that do not compare
(the card velocity features ranked 31-45 of 45 by |coef| while they carried the goal metric).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


# --------------------------------------------------------------------------------------
# permutation importance, in the raw columns users declared
# --------------------------------------------------------------------------------------
def permutation_importance(
    score_fn: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    groups: Mapping[str, Sequence[int]],
    metric: Callable[[np.ndarray, np.ndarray], float],
    higher_is_better: bool = True,
    n_repeats: int = 5,
    seed: int = 0,
    max_rows: int | None = None,
) -> list[dict[str, Any]]:
    """How much the metric drops when the columns of one group are shuffled across rows.

    ``score_fn(X)`` gives the model's scores (or predictions) for a matrix; ``metric(y, scores)``
    is the goal metric (a closure carries its extras: the amount, the alert rate, a threshold).
    ``groups`` maps a name (a raw column as declared in the spec, see :func:`raw_column_groups`)
    to the indices of the columns of ``X`` derived from it; the columns of a group are permuted
    *jointly* (one row permutation for all of them), so a one-hot column or a per-entity feature
    is never shuffled apart from its siblings. Groups may overlap (a product of two columns
    belongs to both).

    Each of ``n_repeats`` seeded row permutations is applied to every group (common random
    numbers: differences between groups are not noise of different shuffles). The drop is
    ``baseline - permuted`` when higher is better, ``permuted - baseline`` otherwise, so a larger
    drop always means a more important group; a negative mean says the model does no better with
    the group than with noise. ``max_rows`` evaluates on a seeded sample of that many rows.

    Returns ``[{"feature", "mean", "std", "columns"}]`` (``columns``: how many columns of ``X``
    the group covers; ``std`` over the repeats) sorted by ``mean`` descending, then by name.
    A group without columns has a drop of 0.0. Metric errors (e.g.
    :class:`~include.lifecycle.evaluate_model.MetricUndefined` without positives) propagate.

    Not ``sklearn.inspection.permutation_importance``: as of scikit-learn 1.9 it permutes one
    column at a time and cannot permute a group of columns jointly; this is the same algorithm
    (Breiman 2001; the same permutations for every feature, as scikit-learn does) with groups.
    """
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    Xa = np.asarray(X)
    if Xa.ndim != 2:
        raise ValueError(f"X must be a 2-d matrix, got shape {Xa.shape}")
    ya = np.asarray(y)
    n, width = Xa.shape
    if ya.shape[0] != n:
        raise ValueError(f"X has {n} rows but y has {ya.shape[0]}")
    for name, cols in groups.items():
        bad = [int(c) for c in cols if not 0 <= int(c) < width]
        if bad:
            raise ValueError(f"group {name!r} names columns {bad} outside the {width} columns of X")
    rng = np.random.default_rng(seed)
    if max_rows is not None and n > max_rows:
        rows = np.sort(rng.choice(n, size=max_rows, replace=False))
        Xa, ya, n = Xa[rows], ya[rows], max_rows
    sign = 1.0 if higher_is_better else -1.0
    baseline = float(metric(ya, score_fn(Xa)))
    permutations = [rng.permutation(n) for _ in range(n_repeats)]
    out = []
    for name, cols in groups.items():
        idx = sorted({int(c) for c in cols})
        drops = np.zeros(n_repeats)
        if idx:
            shuffled = Xa.copy()
            for r, perm in enumerate(permutations):
                shuffled[:, idx] = Xa[np.ix_(perm, idx)]
                drops[r] = sign * (baseline - float(metric(ya, score_fn(shuffled))))
        out.append({"feature": str(name), "mean": float(drops.mean()), "std": float(drops.std()), "columns": len(idx)})
    out.sort(key=lambda r: (-r["mean"], r["feature"]))
    return out


# the names engineer() gives a time_parts group (tests check them against features.engineer)
_TIME_PARTS = ("time_hour_sin", "time_hour_cos", "time_day_of_week", "time_is_night")


def _engineered_sources(features: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each engineered column of ``features.json`` -> the declared data set column(s) it comes from.

    ``raw`` columns come from themselves, ``te_<c>`` / ``hist_<c>_ratio`` / ``hist_new_<c>`` /
    ``vel_sum_<w>`` from the column they read, the per-entity counts (``vel_cnt_<w>``,
    ``vel_log_secs_since_prev``, ``hist_n_prior``) from the entity column, the time parts from
    the time column and ``<a>_x_<b>`` from both ``a`` and ``b``. A column none of these explain
    is its own source (a raw group without a column list takes every column as it is).
    """
    from include.lifecycle.features import DEFAULT_WINDOWS, _window_label

    columns = features.get("columns") or {}
    engineered = [*columns.get("numeric", []), *columns.get("categorical", []), *columns.get("target_encoded", [])]
    entity, time = features.get("entity_column"), features.get("time_column")
    inputs = set(features.get("input_columns") or [])
    known: dict[str, list[str]] = {}
    for g in features.get("groups") or []:
        kind, cols = g.get("kind"), list(g.get("columns") or [])
        if kind == "raw":
            known.update({c: [c] for c in cols})
        elif kind == "time_parts" and time:
            known.update(dict.fromkeys(_TIME_PARTS, [time]))
        elif kind == "velocity" and entity:
            for w in (g.get("params") or {}).get("windows") or DEFAULT_WINDOWS:
                known[f"vel_cnt_{_window_label(w)}"] = [entity]
                if cols:
                    known[f"vel_sum_{_window_label(w)}"] = [cols[0]]
            known["vel_log_secs_since_prev"] = [entity]
        elif kind == "history" and entity:
            known["hist_n_prior"] = [entity]
            for c in cols:
                known[f"hist_{c}_ratio"] = known[f"hist_new_{c}"] = [c]
        elif kind == "target_encoding":
            known.update({f"te_{c}": [c] for c in cols})
        elif kind == "interactions":
            for i, a in enumerate(cols):
                for b in cols[i + 1 :]:
                    known[f"{a}_x_{b}"] = [a, b]
    out: dict[str, list[str]] = {}
    for name in engineered:
        if name in known:
            out[name] = known[name]
            continue
        # an interactions group without a column list multiplies data set columns: split a_x_b
        pairs = [
            [name[:i], name[i + 3 :]]
            for i in range(1, len(name) - 3)
            if name[i : i + 3] == "_x_" and name[:i] in inputs and name[i + 3 :] in inputs
        ]
        out[name] = pairs[0] if pairs else [name]
    return out


def _output_sources(features: Mapping[str, Any]) -> list[str]:
    """The engineered column behind each preprocessed column of ``feature_names``.

    Numeric and target-encoded columns keep their names; one-hot columns are ``<c>_<value>`` and
    ``<c>_infrequent_sklearn`` in blocks in the order of the categorical columns, so the longest
    categorical column name that prefixes the output (at or after the current block) wins. An
    output none explains is its own source.
    """
    columns = features.get("columns") or {}
    same = {*columns.get("numeric", []), *columns.get("target_encoded", [])}
    categorical = list(columns.get("categorical", []))
    out, block = [], 0
    for name in features.get("feature_names") or []:
        if name in same:
            out.append(name)
            continue
        matches = [j for j in range(block, len(categorical)) if name.startswith(f"{categorical[j]}_")]
        if not matches:
            out.append(name)
            continue
        block = max(matches, key=lambda j: len(categorical[j]))
        out.append(categorical[block])
    return out


def raw_column_groups(features: Mapping[str, Any]) -> dict[str, list[int]]:
    """``{declared column: [indices into feature_names]}`` from a model's ``features.json``.

    The groups :func:`permutation_importance` permutes: every preprocessed column (a one-hot
    level, a scaled number, a target encoding, a per-entity window feature) is traced back to the
    column(s) of the data set it is derived from (see :func:`_engineered_sources`), so the
    importance speaks in the names the spec declared: ``amount`` covers ``amount``, its velocity
    sums and history ratio; ``merchant_category`` all its one-hot levels; the entity column the
    per-entity counts; the time column the time-of-day parts. Keys are in the order of their first
    column; a product ``a_x_b`` is in both ``a`` and ``b``.
    """
    sources = _engineered_sources(features)
    groups: dict[str, list[int]] = {}
    for i, engineered in enumerate(_output_sources(features)):
        for raw in sources.get(engineered, [engineered]):
            groups.setdefault(raw, []).append(i)
    return groups
