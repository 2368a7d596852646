"""Targets and splits shared by every section that trains or scores.

The split respects time when the problem has a time column: train on the past, validate on
the following days, test on the latest days, so no model ever sees the future it is judged on.
Without a time column the split is random, stratified and seeded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.lifecycle.spec import Spec

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)


class SplitError(ValueError):
    """The data cannot be split as the spec asks (e.g. fewer days than the split needs)."""


def target_vector(series: pd.Series, spec: Spec) -> np.ndarray:
    """0/1 for a binary problem (1 where the value equals the positive label), floats for regression."""
    if not spec.is_binary:
        return pd.to_numeric(series, errors="raise").to_numpy(dtype="float64")
    pos = spec.problem.positive_label
    if pd.api.types.is_numeric_dtype(series) and isinstance(pos, int | float | bool):
        return (series.to_numpy(dtype="float64") == float(pos)).astype("int8")
    return (
        (series.astype("string").str.strip().str.lower() == str(pos).strip().lower())
        .fillna(False)
        .to_numpy(dtype="int8")
    )


def assign_splits(df: pd.DataFrame, spec: Spec, y: np.ndarray | None = None) -> np.ndarray:
    """An array of 'train' / 'validation' / 'test' per row."""
    sp = spec.training.split
    n = len(df)
    out = np.full(n, TRAIN, dtype=object)
    tcol = spec.data.time_column
    if tcol:
        ts = df[tcol]
        if isinstance(ts.dtype, pd.DatetimeTZDtype):
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        d = ts.to_numpy(dtype="datetime64[us]").astype("datetime64[D]")  # numpy days, no Timestamp objects
        uniq = np.unique(d[~np.isnat(d)])
        need = sp.validation_days + sp.test_days + 1
        if len(uniq) < need:
            raise SplitError(
                f"the data covers {len(uniq)} days; the split needs at least {need} "
                f"(training.split: validation_days={sp.validation_days}, test_days={sp.test_days}, plus training days)"
            )
        test_from = uniq[-sp.test_days]
        val_from = uniq[-(sp.test_days + sp.validation_days)]
        out[d >= val_from] = VALIDATION
        out[d >= test_from] = TEST
        return out
    rng = np.random.default_rng(spec.training.seed)
    if y is not None and spec.is_binary:
        for cls in np.unique(y):
            idx = np.flatnonzero(y == cls)
            rng.shuffle(idx)
            n_test = int(round(len(idx) * sp.test_share))
            n_val = int(round(len(idx) * sp.validation_share))
            out[idx[:n_test]] = TEST
            out[idx[n_test : n_test + n_val]] = VALIDATION
        return out
    idx = rng.permutation(n)
    n_test = int(round(n * sp.test_share))
    n_val = int(round(n * sp.validation_share))
    out[idx[:n_test]] = TEST
    out[idx[n_test : n_test + n_val]] = VALIDATION
    return out
