"""Targets and splits shared by every section that trains or scores.

The split respects time when the problem has a time column: train on the past, validate on
the following days, test on the latest days, so no model ever sees the future it is judged on.
The windows are durations back from one end instant (the end of the labelled data), never
calendar dates, so a run at 00:00 and one at 23:59 of the same day split alike. Without a time
column the split is random, stratified and drawn from the rows' values (the same test rows
for every training seed).

A split that cannot be judged (a window without positives, a training part without a class) is
a :class:`SplitError`, never a model scored 0.0.

Labels are compared one way everywhere (:func:`label_key`): numbers and booleans as numbers,
other text without surrounding blanks and case; a missing target value is never a negative.

A regression target may be modelled on another scale (``problem.target_transform``: ``log``,
``log1p``): :func:`transform_target` / :func:`inverse_target` are the one pair of functions the
training job and the saved model use, :func:`check_target_transform` the rule the values obey.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.spec import Spec

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
_DAY_US = 86_400_000_000  # one day in microseconds: the split's unit of widening


class SplitError(ValueError):
    """The data cannot be split as the spec asks (e.g. a test window without positives)."""


class TargetError(ValueError):
    """The target column cannot be used as the spec declares it."""


class MissingTargetError(TargetError):
    """Rows without a target value where every row needs one (they are never read as negatives)."""


class TargetTransformError(TargetError):
    """A regression target holds values its ``problem.target_transform`` is not defined for."""


# --- labels ------------------------------------------------------------------------------------
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def label_key(value: Any) -> float | str | None:
    """The form in which a target value is compared with ``problem.positive_label``.

    One rule, used by collect, formulate_problem, the split and the target vector:

    * numbers and booleans compare as numbers, also when written as text:
      ``1 == 1.0 == "1" == " 1.0 " == True == "true"``;
    * other text compares without surrounding blanks and case: ``"Yes" == " yes"``;
    * a missing value (None, NaN, NA, blank text) is ``None`` and matches nothing.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, numbers.Number):
        f = float(value)  # type: ignore[arg-type]
        return None if math.isnan(f) else f
    text = str(value).strip()
    if not text:
        return None
    folded = text.casefold()
    if folded in ("true", "false"):
        return 1.0 if folded == "true" else 0.0
    if _NUMBER.fullmatch(text):
        return float(text)
    return folded


def _series(values: Any) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values)


def target_missing(values: Any) -> np.ndarray:
    """Where a target value is missing: None, NaN/NA or blank text."""
    s = _series(values)
    missing = s.isna().to_numpy(dtype=bool)
    if pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype):
        blank = s.astype("string").str.strip() == ""
        missing = missing | blank.fillna(False).to_numpy(dtype=bool)
    return missing


def positive_mask(values: Any, positive_label: Any) -> np.ndarray:
    """Where a value equals ``positive_label`` under the rule of :func:`label_key` (missing: False).

    Numeric and boolean columns are compared as numbers in one vector operation; text (and mixed)
    columns compare each distinct value once.
    """
    s = _series(values)
    want = label_key(positive_label)
    if want is None or len(s) == 0:
        return np.zeros(len(s), dtype=bool)
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        if isinstance(want, str):  # a text label never equals a number
            return np.zeros(len(s), dtype=bool)
        return s.to_numpy(dtype="float64", na_value=np.nan) == want
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    hit = np.fromiter((label_key(u) == want for u in uniques), dtype=bool, count=len(uniques))
    out = np.zeros(len(s), dtype=bool)
    present = codes >= 0
    out[present] = hit[codes[present]]
    return out


def _shown(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value)


def describe_values(values: Any, limit: int = 10) -> str:
    """The distinct present values with their counts, most frequent first: ``'Y' (120), 'N' (880)``."""
    counts = _series(values).value_counts(dropna=True)
    shown = [f"{_shown(v)} ({int(c)})" for v, c in counts.iloc[:limit].items()]
    if len(counts) > limit:
        shown.append(f"... ({len(counts) - limit} more)")
    return ", ".join(shown) if shown else "none (every value is missing)"


def target_vector(series: pd.Series, spec: Spec) -> np.ndarray:
    """0/1 for a binary problem (1 where the value equals the positive label), floats for regression.

    Raises :class:`MissingTargetError` when a value is missing: an unlabelled row is never a
    negative (collect quarantines such rows with rule ``target_missing``); a regression target
    outside the domain of ``problem.target_transform`` (log: > 0, log1p: > -1) raises
    :class:`TargetTransformError`. Both are :class:`TargetError`. The values stay on their original
    scale: the training job transforms them and the saved model predicts on the original scale.
    """
    missing = target_missing(series)
    if missing.any():
        raise MissingTargetError(
            f"{int(missing.sum())} of {len(series)} rows have no value in target column {series.name!r}: a row "
            f"without a label is never read as negative (collect quarantines it with rule target_missing)"
        )
    if not spec.is_binary:
        y = pd.to_numeric(series, errors="raise").to_numpy(dtype="float64")
        check_target_transform(y, spec.problem.target_transform, column=str(series.name))
        return y
    return positive_mask(series, spec.problem.positive_label).astype("int8")


# --- target transforms (regression) --------------------------------------------------------------
# problem.target_transform: the model is fitted on f(y) and predicts f^-1 of its output; the
# rule every target value must satisfy for f to be defined
TARGET_TRANSFORMS = ("none", "log", "log1p")
_TRANSFORM_RULES = {"log": ("every value > 0", lambda y: y > 0), "log1p": ("every value > -1", lambda y: y > -1)}
# exp overflows float64 above about 709.78: inverse predictions are capped there instead of inf
_MAX_EXP = float(np.log(np.finfo(np.float64).max))


def check_target_transform(y: Any, transform: str, *, column: str = "target") -> None:
    """Raise :class:`TargetTransformError` naming the column, the rule and the offending values
    when ``transform`` (``problem.target_transform``) is not defined for every value of ``y``."""
    if transform == "none":
        return
    if transform not in _TRANSFORM_RULES:
        raise ValueError(f"unknown target transform {transform!r}: use one of {', '.join(TARGET_TRANSFORMS)}")
    rule, ok = _TRANSFORM_RULES[transform]
    arr = np.asarray(y, dtype="float64")
    bad = ~ok(arr) | ~np.isfinite(arr)
    if bad.any():
        shown = ", ".join(f"{v:g}" for v in np.unique(arr[bad])[:5])
        raise TargetTransformError(
            f"target column {column!r}: problem.target_transform {transform} needs {rule} (and finite), but "
            f"{int(bad.sum())} of {arr.size} rows break it (e.g. {shown}); use "
            f"{'log1p (needs > -1) or ' if transform == 'log' else ''}none, or fix the data"
        )


def transform_target(y: Any, transform: str) -> np.ndarray:
    """``y`` on the scale the model is fitted on: ``log(y)``, ``log1p(y)`` or ``y`` itself
    (checked first: see :func:`check_target_transform`)."""
    arr = np.asarray(y, dtype="float64")
    check_target_transform(arr, transform)
    if transform == "log":
        return np.log(arr)
    if transform == "log1p":
        return np.log1p(arr)
    return arr


def inverse_target(z: Any, transform: str) -> np.ndarray:
    """Predictions ``z`` on the fitted scale back on the target's original scale."""
    arr = np.asarray(z, dtype="float64")
    if transform == "log":
        return np.exp(np.minimum(arr, _MAX_EXP))
    if transform == "log1p":
        return np.expm1(np.minimum(arr, _MAX_EXP))
    if transform != "none":
        raise ValueError(f"unknown target transform {transform!r}: use one of {', '.join(TARGET_TRANSFORMS)}")
    return arr


# --- splits ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """The split of a data set: a label per row and a JSON-able record of how it was made.

    ``windows`` holds ``kind`` (``time`` or ``random``) and, per split, its rows and positives;
    a time split also ``end`` (the end instant E), ``end_from`` and per split ``start``/``end``
    (ISO instants, the window is ``[start, end)``), ``days``, ``widened_by_days`` and
    ``widened_because`` (None when the window kept the spec's length).
    """

    assignment: np.ndarray
    windows: dict[str, Any]


def assign_splits(
    df: pd.DataFrame, spec: Spec, y: np.ndarray | None = None, *, as_of: dt.datetime | None = None
) -> np.ndarray:
    """An array of 'train' / 'validation' / 'test' per row (see :func:`make_split`)."""
    return make_split(df, spec, y, as_of=as_of).assignment


def make_split(df: pd.DataFrame, spec: Spec, y: np.ndarray | None = None, *, as_of: dt.datetime | None = None) -> Split:
    """Split the rows into train, validation and test; raise :class:`SplitError` when it cannot be judged.

    With a time column the windows are durations back from an end instant E:
    test = [E - test_days, E), validation = [E - test_days - validation_days, E - test_days),
    train = everything before (rows without a time are trained on).

    * E for a partitioned source is the end of the labelled data: ``as_of`` (the run's data
      interval end; naive is taken as UTC) minus ``data.labels.maturity_days`` (0 without a
      label feed), so the windows do not move with the hour the run starts at.
    * Without ``as_of`` (old callers) or for a single file (a fixed data set that does not end at
      the run's interval end), E is just after the latest row: its timestamp plus 1 microsecond.

    For a binary problem with ``y``, a test or validation window holding fewer than
    ``training.split.min_positives`` positives or no negative is widened back a whole day at a
    time (test first, then validation behind it) as long as training keeps at least
    ``diagnosis.min_train_positives`` positives (and at least one) and a negative; the widening
    and its reason are recorded. If a window still falls short, or training holds no rows or
    only one class, :class:`SplitError` names the split, its window, its rows and positives and
    what the spec asks. A regression split needs at least 2 rows in every part.

    The random split (no time column) is stratified by ``y`` for a binary problem and raises
    :class:`SplitError` when a part would hold no positive or no negative (binary) or fewer than
    2 rows (regression).
    """
    if y is not None and len(y) != len(df):
        raise ValueError(f"y has {len(y)} rows, the data {len(df)}")
    if spec.data.time_column:
        return _time_split(df, spec, y, as_of)
    return _random_split(df, spec, y)


def _utc_micros(ts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(microseconds since the epoch in UTC, where the time is missing); naive times are UTC."""
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_any_dtype(ts.dtype):
        ts = pd.to_datetime(ts, utc=True, errors="coerce", format="mixed").dt.tz_localize(None)
    arr = ts.to_numpy(dtype="datetime64[us]")  # numpy, no Timestamp objects
    return arr.astype("int64"), np.isnat(arr)


def _instant_us(when: dt.datetime) -> int:
    ts = pd.Timestamp(when)
    ts = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    return int(ts.tz_localize(None).to_datetime64().astype("datetime64[us]").astype("int64"))


def _iso(us: int) -> str:
    return pd.Timestamp(int(us), unit="us", tz="UTC").isoformat()


def _time_split(df: pd.DataFrame, spec: Spec, y: np.ndarray | None, as_of: dt.datetime | None) -> Split:
    sp = spec.training.split
    tcol = spec.data.time_column
    assert tcol is not None
    us, nat = _utc_micros(df[tcol])
    n = len(df)
    if as_of is not None and spec.data.layout == "partitioned":
        maturity = spec.data.labels.maturity_days if spec.data.labels is not None else 0
        end = _instant_us(as_of) - maturity * _DAY_US
        end_from = f"the run's data interval end {_iso(_instant_us(as_of))} minus data.labels.maturity_days={maturity}"
    else:
        if nat.all():
            raise SplitError(f"the time split needs times, but column {tcol!r} holds none in {n} rows")
        end = int(us[~nat].max()) + 1
        why = "no as_of given" if as_of is None else "a single file is a fixed data set"
        end_from = f"just after the latest row {_iso(end - 1)} ({why})"
    # day index back from E: row in [E - (k + 1) days, E - k days) -> k; rows without a time train
    k = np.where(nat, np.iinfo(np.int64).max, (end - 1 - us) // _DAY_US)
    after = ~nat & (k < 0)
    if after.any():
        raise SplitError(
            f"{int(after.sum())} rows are at or after the end of the labelled data {_iso(end)} ({end_from}); "
            f"the latest is {_iso(int(us[after].max()))}: the data set does not belong to this run"
        )
    binary = spec.is_binary and y is not None
    yb = np.asarray(y).astype(bool) if binary else np.zeros(n, dtype=bool)
    timed = ~nat
    horizon = int(k[timed].max()) + 1 if timed.any() else 0  # day indexes 0..horizon-1 hold rows
    rows_by_day = np.concatenate(([0], np.cumsum(np.bincount(k[timed], minlength=horizon))))
    pos_by_day = np.concatenate(([0], np.cumsum(np.bincount(k[timed], weights=yb[timed], minlength=horizon))))
    untimed = (int(nat.sum()), int(yb[nat].sum()))  # rows without a time: always training

    def count(lo: int, hi: int | None) -> tuple[int, int]:
        """(rows, positives) with day index in [lo, hi); hi None: from lo on, with the untimed rows."""
        a, b = min(lo, horizon), horizon if hi is None else min(hi, horizon)
        rows, pos = int(rows_by_day[b] - rows_by_day[a]), int(round(pos_by_day[b] - pos_by_day[a]))
        return (rows + untimed[0], pos + untimed[1]) if hi is None else (rows, pos)

    need = sp.min_positives
    train_floor = max(spec.diagnosis.min_train_positives, 1)
    days = {TEST: sp.test_days, VALIDATION: sp.validation_days}
    spec_days = dict(days)
    because: dict[str, str | None] = {TEST: None, VALIDATION: None}
    stopped: dict[str, str] = {}

    def bounds(name: str) -> tuple[int, int]:
        return (0, days[TEST]) if name == TEST else (days[TEST], days[TEST] + days[VALIDATION])

    def judged(rows: int, pos: int) -> bool:
        return pos >= need and rows - pos >= 1

    if binary:
        for name in (TEST, VALIDATION):
            rows, pos = count(*bounds(name))
            if judged(rows, pos):
                continue
            start, stop = bounds(name)
            first = (
                f"the {days[name]} days [{_iso(end - stop * _DAY_US)}, {_iso(end - start * _DAY_US)}) held "
                f"{rows} rows and {pos} positives; training.split.min_positives asks for {need} and a negative"
            )
            while not judged(rows, pos):
                t_start = bounds(VALIDATION)[1] + 1
                t_rows, t_pos = count(t_start, None)
                if t_pos < train_floor or t_rows - t_pos < 1 or t_start > horizon:
                    stopped[name] = (
                        f"one more day would leave training {t_pos} positives and {t_rows - t_pos} negatives "
                        f"(it keeps at least {train_floor} positives: diagnosis.min_train_positives, and a negative)"
                    )
                    break
                days[name] += 1
                rows, pos = count(*bounds(name))
            if days[name] > spec_days[name]:
                because[name] = first

    windows: dict[str, Any] = {"kind": "time", "time_column": tcol, "end": _iso(end), "end_from": end_from}
    if binary:
        windows["min_positives"] = need
    assignment = np.full(n, TRAIN, dtype=object)
    for name in (VALIDATION, TEST):
        start, stop = bounds(name)
        assignment[(k >= start) & (k < stop)] = name
    t_start = bounds(VALIDATION)[1]
    first_row = _iso(int(us[~nat].min())) if (~nat).any() else None
    t_rows, t_pos = count(t_start, None)
    windows[TRAIN] = {
        "start": first_row,
        "end": _iso(end - t_start * _DAY_US),
        "rows": t_rows,
        "positives": t_pos if binary else None,
        "rows_without_time": int(nat.sum()),
    }
    for name in (VALIDATION, TEST):
        start, stop = bounds(name)
        rows, pos = count(start, stop)
        windows[name] = {
            "start": _iso(end - stop * _DAY_US),
            "end": _iso(end - start * _DAY_US),
            "days": days[name],
            "rows": rows,
            "positives": pos if binary else None,
            "widened_by_days": days[name] - spec_days[name],
            "widened_because": because[name],
        }
    asks = (
        f"training.split.min_positives asks for at least {need} positives and a negative in the validation and "
        f"test windows (training.split: validation_days={sp.validation_days}, test_days={sp.test_days})"
    )
    min_rows = 1 if spec.is_binary else 2  # a regression metric (r2) needs 2 rows
    for name in (TEST, VALIDATION):
        w = windows[name]
        if binary and not judged(w["rows"], w["positives"]):
            widened = (
                f"widened back from {spec_days[name]} to {days[name]} days; "
                if days[name] > spec_days[name]
                else "cannot be widened: "
            )
            raise SplitError(
                f"{name} split [{w['start']}, {w['end']}) holds {w['rows']} rows and {w['positives']} positives "
                f"({w['rows'] - w['positives']} negatives); {asks}; {widened}{stopped.get(name, '')}"
            )
        if w["rows"] < min_rows:
            raise SplitError(
                f"{name} split [{w['start']}, {w['end']}) holds {w['rows']} rows; it needs at least {min_rows} "
                f"(training.split: validation_days={sp.validation_days}, test_days={sp.test_days})"
            )
    w = windows[TRAIN]
    if w["rows"] < min_rows:
        raise SplitError(
            f"train split (rows before {w['end']}) holds {w['rows']} rows: the data reaches back "
            f"{(end - int(us[~nat].min())) / _DAY_US:.2f} days from {_iso(end)} ({end_from}); the split needs more "
            f"than validation {days[VALIDATION]} + test {days[TEST]} days (training.split)"
            if first_row is not None
            else f"train split holds {w['rows']} rows"
        )
    if binary and (w["positives"] < 1 or w["rows"] - w["positives"] < 1):
        raise SplitError(
            f"train split [{w['start']}, {w['end']}) holds {w['rows']} rows and {w['positives']} positives "
            f"({w['rows'] - w['positives']} negatives): a model cannot learn from one class"
        )
    return Split(assignment, windows)


def row_keys(df: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """A 64-bit key per row drawn from the row's values (every column, the target too) and ``seed``.

    The same rows give the same keys in any order, run and process (pandas' value hashing, then a
    splitmix64 finaliser to mix in the seed); identical rows get identical keys."""
    h = pd.util.hash_pandas_object(df, index=False).to_numpy(dtype="uint64")
    with np.errstate(over="ignore"):
        z = h + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _random_split(df: pd.DataFrame, spec: Spec, y: np.ndarray | None) -> Split:
    """Stratified by class for a binary problem; which rows go where is decided by each row's key
    (:func:`row_keys` of ``spec.split_columns``: the data's per-row key if it declares one, else
    every column, so ``df`` must then hold the whole data set; with ``training.split.seed``), not
    by ``training.seed``: the test rows are a
    property of the data, the same for every training seed and every run on the same rows (so a
    champion's held-out rows are its challenger's), and a row keeps its part when rows are added
    unless it sits at a boundary. Identical rows sit side by side in key order, so duplicates land
    in one part except at a boundary."""
    sp = spec.training.split
    n = len(df)
    out = np.full(n, TRAIN, dtype=object)
    cols = sorted(spec.split_columns(df.columns))  # sorted: the same keys whatever order the columns come in
    order = np.lexsort((np.arange(n), row_keys(df[cols], sp.seed)))  # by key; ties (identical rows) by position
    binary = spec.is_binary and y is not None
    groups = [order[np.asarray(y)[order] == cls] for cls in np.unique(y)] if binary else [order]
    for idx in groups:
        n_test = int(round(len(idx) * sp.test_share))
        n_val = int(round(len(idx) * sp.validation_share))
        out[idx[:n_test]] = TEST
        out[idx[n_test : n_test + n_val]] = VALIDATION
    yb = np.asarray(y).astype(bool) if binary else None
    shares = {TRAIN: 1 - sp.test_share - sp.validation_share, VALIDATION: sp.validation_share, TEST: sp.test_share}
    by = f"key {spec.data.key}" if cols == [spec.data.key] else "row values"
    windows: dict[str, Any] = {"kind": "random", "by": by, "seed": sp.seed}
    for name in SPLITS:
        mask = out == name
        rows = int(mask.sum())
        pos = int(yb[mask].sum()) if yb is not None else None
        windows[name] = {"share": shares[name], "rows": rows, "positives": pos}
        what = (
            f"{name} split (random by row values, share {shares[name]:g} of {n} rows, training.split.seed "
            f"{sp.seed}) would hold "
            f"{rows} rows"
        )
        if pos is not None and (pos == 0 or pos == rows):
            raise SplitError(
                f"{what} and {pos} positives ({rows - pos} negatives): it cannot be judged; every split needs a "
                f"positive and a negative (training.split: validation_share={sp.validation_share}, "
                f"test_share={sp.test_share})"
            )
        if not spec.is_binary and rows < 2:
            raise SplitError(
                f"{what}: a regression metric needs at least 2 (training.split: "
                f"validation_share={sp.validation_share}, test_share={sp.test_share})"
            )
    return Split(out, windows)
