"""The shared preprocessor: the sklearn ``ColumnTransformer`` fitted on the training rows of the
features :func:`include.lifecycle.features.engineer` computes (see that module's docstring).

Kept apart from ``features`` so that computing features does not import sklearn; ``features``
re-exports :func:`make_preprocessor`, the classes and ``_to_float32`` (old pickles name them there).
This module needs ``features`` only for a type hint, so the two do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler, TargetEncoder

if TYPE_CHECKING:  # features imports this module on first use of make_preprocessor: no import back at run time
    from include.lifecycle.features import FeatureColumns


def _to_float32(X: Any) -> np.ndarray:
    """Cast a transformer's output to dense float32 (module level so the model pickles)."""
    if hasattr(X, "toarray"):
        X = X.toarray()
    return np.asarray(X, dtype=np.float32)


def _float32() -> FunctionTransformer:
    return FunctionTransformer(_to_float32, feature_names_out="one-to-one", validate=False, check_inverse=False)


def _frame(X: Any) -> pd.DataFrame:
    return X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)


class _ColumnsInOut(TransformerMixin, BaseEstimator):
    """Remembers the input column names; names out are the names in (one column per column)."""

    def _remember_columns(self, X: pd.DataFrame) -> None:
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]

    def _check_width(self, X: pd.DataFrame) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} expects {self.n_features_in_}")

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray(list(names), dtype=object)


class _MedianImputer(_ColumnsInOut):
    """``SimpleImputer(strategy="median", keep_empty_features=True)`` for float columns, vectorised.

    The same medians (NaN is missing, an all-missing column gets 0, infinity is refused) from
    ``np.nanmedian`` instead of numpy's masked arrays, which took most of the preprocessing time.
    """

    def _matrix(self, X: Any) -> np.ndarray:
        A = _frame(X).to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        if np.isinf(A).any():
            raise ValueError(f"{type(self).__name__}: input contains infinity or a value too large for float64")
        return A

    def fit(self, X: Any, y: Any = None) -> _MedianImputer:
        X = _frame(X)
        self._fit_matrix(X, self._matrix(X))
        return self

    def _fit_matrix(self, X: pd.DataFrame, A: np.ndarray) -> None:
        self._remember_columns(X)
        statistics = np.zeros(A.shape[1])
        known = ~np.isnan(A)
        for j in range(A.shape[1]):  # per column: only the present values, no masked-array copies
            values = A[known[:, j], j]
            if len(values):
                statistics[j] = np.median(values)
        self.statistics_ = statistics

    def transform(self, X: Any) -> np.ndarray:
        X = _frame(X)
        self._check_width(X)
        return self._fill(self._matrix(X))

    def fit_transform(self, X: Any, y: Any = None, **_: Any) -> np.ndarray:
        """``fit(X).transform(X)`` with one copy of ``X`` instead of two."""
        X = _frame(X)
        A = self._matrix(X)
        self._fit_matrix(X, A)
        return self._fill(A)

    def _fill(self, A: np.ndarray) -> np.ndarray:
        """Missing values of ``A`` (a fresh matrix) replaced by the medians, in place."""
        missing = np.isnan(A)
        if missing.any():
            A[missing] = np.broadcast_to(self.statistics_, A.shape)[missing]
        return A


class _CategoryCodes(_ColumnsInOut):
    """Text columns as integer codes: missing values become ``fill_value``, each value its position
    among the sorted distinct training values (the order sklearn's encoders give categories),
    a value never seen in training -1.

    Downstream sklearn encoders then take their fast numeric paths (``np.unique``,
    ``searchsorted``) instead of per-value Python loops over strings, with the same categories in
    the same order: their output is the same as on the strings themselves.
    """

    def __init__(self, fill_value: str = "missing") -> None:
        self.fill_value = fill_value

    @staticmethod
    def _factorize(s: pd.Series) -> tuple[np.ndarray, list[Any]]:
        """Codes (-1 for missing) and the distinct present values of one column."""
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        return codes, list(uniques)

    def _codes(self, codes: np.ndarray, uniques: list[Any], categories: np.ndarray) -> np.ndarray:
        """Factorised values as positions in ``categories``: the few distinct values are looked
        up, then taken per row (no per-row hashing of strings); missing takes the fill value."""
        lookup = pd.Index(categories, dtype=object).get_indexer(pd.Index([*uniques, self.fill_value], dtype=object))
        return lookup[codes]  # code -1 (missing) takes the last entry: the fill value

    def fit(self, X: Any, y: Any = None) -> _CategoryCodes:
        self.fit_transform(X)
        return self

    def fit_transform(self, X: Any, y: Any = None, **_: Any) -> np.ndarray:
        X = _frame(X)
        self._remember_columns(X)
        self.categories_ = []
        out = np.empty(X.shape, dtype=np.int64)
        for j, c in enumerate(X.columns):
            codes, uniques = self._factorize(X[c])
            values = set(uniques)
            if (codes < 0).any():
                values.add(self.fill_value)
            categories = np.asarray(sorted(values), dtype=object)
            self.categories_.append(categories)
            out[:, j] = self._codes(codes, uniques, categories)
        return out

    def transform(self, X: Any) -> np.ndarray:
        X = _frame(X)
        self._check_width(X)
        out = np.empty(X.shape, dtype=np.int64)
        for j, (c, categories) in enumerate(zip(X.columns, self.categories_, strict=True)):
            out[:, j] = self._codes(*self._factorize(X[c]), categories)
        return out


class _OneHot(_ColumnsInOut):
    """Constant "missing" imputation plus sklearn's ``OneHotEncoder`` on text columns.

    The encoder is fitted on :class:`_CategoryCodes` (same categories, same order, same counts),
    so its columns, infrequent grouping and handling of unseen values are sklearn's own; only
    the output names are translated back from codes to the text values:
    ``<column>_<value>`` and ``<column>_infrequent_sklearn``.
    """

    def __init__(
        self, *, min_frequency: int | float = 20, max_categories: int = 30, fill_value: str = "missing"
    ) -> None:
        self.min_frequency = min_frequency
        self.max_categories = max_categories
        self.fill_value = fill_value

    def fit(self, X: Any, y: Any = None) -> _OneHot:
        self._fit_codes(X)
        return self

    def _fit_codes(self, X: Any) -> np.ndarray:
        """Fit the codes and the encoder; the training rows' codes."""
        X = _frame(X)
        self._remember_columns(X)
        self.codes_ = _CategoryCodes(self.fill_value)
        codes = self.codes_.fit_transform(X)
        self.encoder_ = OneHotEncoder(
            handle_unknown="infrequent_if_exist",
            min_frequency=self.min_frequency,
            max_categories=self.max_categories,
            sparse_output=False,
            dtype=np.float32,
        ).fit(codes)
        return codes

    def fit_transform(self, X: Any, y: Any = None, **_: Any) -> np.ndarray:
        """``fit(X).transform(X)``, the text columns coded once."""
        return self._encode(self._fit_codes(X))

    def transform(self, X: Any) -> np.ndarray:
        return self._encode(self.codes_.transform(X))

    def _encode(self, codes: np.ndarray) -> np.ndarray:
        """``encoder_.transform(codes)``. When every value was seen in training, the dense 0/1
        matrix is set directly from where the encoder puts the 1 of each code (sklearn's dense
        output goes through a sparse matrix); unseen values take sklearn's own path."""
        positions = self._positions()
        if positions is None or codes.shape[0] == 0 or (codes < 0).any():
            return self.encoder_.transform(codes)
        if (codes.max(axis=0) >= [len(p) for p in positions]).any():
            return self.encoder_.transform(codes)
        n, width = codes.shape[0], max(int(p.max()) for p in positions) + 1
        out = np.zeros((n, width), dtype=self.encoder_.dtype)
        flat = out.reshape(-1)
        row_start = np.arange(0, n * width, width, dtype=np.intp)
        for j, where in enumerate(positions):
            flat[row_start + where[codes[:, j]]] = 1
        return out

    def _positions(self) -> list[np.ndarray] | None:
        """Per column, the output column of the 1 for each code, read off the fitted encoder by
        encoding every code once; None when its output is not one 1 per column in column blocks."""
        categories = self.encoder_.categories_
        sizes = [len(c) for c in categories]
        if any(not np.array_equal(c, np.arange(k)) for c, k in zip(categories, sizes, strict=True)):
            return None
        probe = np.minimum(np.arange(max(sizes))[:, None], np.asarray(sizes) - 1)
        dense = np.asarray(self.encoder_.transform(probe))
        if not np.all((dense == 0) | (dense == 1)) or not np.all(dense.sum(axis=1) == len(sizes)):
            return None
        ones = np.nonzero(dense)[1].reshape(len(probe), len(sizes))  # row by row, in column order
        positions = [ones[:k, j].astype(np.intp) for j, k in enumerate(sizes)]
        if any(a.max() >= b.min() for a, b in zip(positions, positions[1:], strict=False)):
            return None
        if max(int(p.max()) for p in positions) + 1 != dense.shape[1]:
            return None
        return positions

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        columns = super().get_feature_names_out(input_features)
        infrequent = getattr(self.encoder_, "infrequent_categories_", [None] * len(columns))
        names: list[str] = []
        for col, values, codes, rare in zip(
            columns, self.codes_.categories_, self.encoder_.categories_, infrequent, strict=True
        ):
            rare_codes = set() if rare is None else set(np.asarray(rare).tolist())
            names += [f"{col}_{values[code]}" for code in codes.tolist() if code not in rare_codes]
            if rare is not None:
                names.append(f"{col}_infrequent_sklearn")
        return np.asarray(names, dtype=object)


def _target_type(problem_type: str) -> str:
    p = problem_type.lower()
    if p in ("binary_classification", "binary", "classification"):
        return "binary"
    if p in ("regression", "continuous"):
        return "continuous"
    raise ValueError(f"unknown problem_type {problem_type!r}: use binary_classification or regression")


def make_preprocessor(
    columns: FeatureColumns,
    *,
    problem_type: str,
    scale: bool = True,
    seed: int = 42,
    min_frequency: int | float = 20,
    max_categories: int = 30,
) -> ColumnTransformer:
    """An unfitted ``ColumnTransformer`` for the frame returned by :func:`engineer`.

    * numeric: median imputation (all-missing columns become 0), then standard scaling
      when ``scale`` (turn it off for tree models);
    * categorical: constant "missing" imputation, then one-hot encoding; categories seen
      fewer than ``min_frequency`` times (a count, or a share when < 1) and those beyond
      ``max_categories`` share one "infrequent" column; unseen categories go there too
      (or to all zeros when training had no infrequent category);
    * target_encoded: constant "missing" imputation, then sklearn's ``TargetEncoder``
      (binary or continuous target by ``problem_type``, 5 shuffled folds seeded by ``seed``).

    **Call ``fit_transform(X_train, y_train)`` on the training rows and ``transform`` on all
    other rows.** ``fit_transform`` target-encodes each training row with an encoder fitted
    on the other folds (no target leakage); ``transform`` uses the encoder fitted on all
    training rows. ``fit(X).transform(X)`` on training rows would leak the target.

    The output is a dense float32 array; ``get_feature_names_out()`` names its columns
    (input names for numeric and target-encoded columns, ``<col>_<value>`` for one-hot).
    Types without columns are left out; at least one column is required.
    """
    target_type = _target_type(problem_type)
    transformers: list[tuple[str, Pipeline, list[str]]] = []
    if columns.numeric:
        steps: list[tuple[str, Any]] = [("impute", _MedianImputer())]
        if scale:
            steps.append(("scale", StandardScaler(copy=False)))  # scales the imputer's fresh array in place
        steps.append(("float32", _float32()))
        transformers.append(("numeric", Pipeline(steps), list(columns.numeric)))
    if columns.categorical:
        onehot = _OneHot(min_frequency=min_frequency, max_categories=max_categories, fill_value="missing")
        pipe = Pipeline([("onehot", onehot), ("float32", _float32())])
        transformers.append(("categorical", pipe, list(columns.categorical)))
    if columns.target_encoded:
        cv: KFold | StratifiedKFold
        if target_type == "binary":
            cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
        else:
            cv = KFold(n_splits=5, shuffle=True, random_state=seed)
        pipe = Pipeline(
            [
                ("codes", _CategoryCodes(fill_value="missing")),
                ("target", TargetEncoder(target_type=target_type, cv=cv)),
                ("float32", _float32()),
            ]
        )
        transformers.append(("target_encoded", pipe, list(columns.target_encoded)))
    if not transformers:
        raise ValueError("make_preprocessor needs at least one feature column")
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=False)
