"""Column values as arrays and JSON-safe values, and the target as an indicator: the helpers
the profile, the drift and the plots of the data report share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.dataset import positive_mask

TOP_CATEGORIES = 15


def _clean(obj: Any) -> Any:
    """Make a value JSON-serialisable: numpy scalars to Python, NaN/inf to None, keys to str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in obj]
    if isinstance(obj, pd.Timestamp):
        return None if pd.isna(obj) else obj.isoformat()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def _share(part: float, whole: float) -> float | None:
    return float(part) / float(whole) if whole else None


def _as_float(s: pd.Series) -> np.ndarray:
    """A float64 array of a column; anything not a finite number (NaN, NA, inf, text) is NaN."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        arr = s.to_numpy(dtype="float64", na_value=np.nan)
    else:
        arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if not np.isfinite(arr).all():
        arr = np.where(np.isfinite(arr), arr, np.nan)
    return arr


def _as_datetime(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    try:
        return pd.to_datetime(s, errors="coerce", format="ISO8601")
    except (ValueError, TypeError):
        return pd.to_datetime(s, errors="coerce", format="mixed")


def _target_info(
    df: pd.DataFrame, target: str | None, positive_label: Any, target_type: str | None
) -> tuple[str | None, np.ndarray | None]:
    """(type, values): binary -> 1.0/0.0/NaN indicator of the positive label; continuous -> floats."""
    if not target or target not in df.columns:
        return None, None
    s = df[target]
    present = s.notna().to_numpy()
    numeric = pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
    kind = target_type
    if kind is None:
        kind = "continuous" if numeric and not pd.api.types.is_bool_dtype(s) and s.nunique() > 2 else "binary"
    if kind == "continuous":
        return kind, _as_float(s)
    # the one label rule of the project (numbers as numbers, text without case or blanks)
    pos = positive_mask(s, positive_label)
    return "binary", np.where(present, pos.astype("float64"), np.nan)
