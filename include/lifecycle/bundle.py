"""A model bundle: everything needed to score raw rows exactly as in training.

    features.json      feature groups, columns and the frame's time/entity columns
    preprocessor.joblib the fitted ColumnTransformer (imputation, encoding, scaling)
    model.ubj | model.joblib, model_meta.json
    threshold.json     the decision threshold that maximised business value

Bundles are written by deploy_model into the registry (sha256-checked) and loaded by the
evaluation (to score the champion on the candidate's test rows) and by serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.lifecycle.features import engineer
from include.lifecycle.spec import FeatureGroupSpec
from include.lifecycle.models import load_model, predict


@dataclass
class ModelBundle:
    features: dict[str, Any]
    preprocessor: Any
    model: Any
    threshold: float | None
    binary: bool

    @classmethod
    def load(cls, folder: str | Path) -> ModelBundle:
        """Load from a folder whose checksums were already verified (ModelRegistry.materialise)."""
        import joblib

        folder = Path(folder)
        features = json.loads((folder / "features.json").read_text())
        threshold = json.loads((folder / "threshold.json").read_text()).get("threshold")
        return cls(
            features=features,
            preprocessor=joblib.load(folder / "preprocessor.joblib"),
            model=load_model(folder),
            threshold=threshold,
            binary=features["problem_type"] != "regression",
        )

    @property
    def input_columns(self) -> list[str]:
        return list(self.features["input_columns"])

    def transform(self, raw: pd.DataFrame) -> np.ndarray:
        groups = [FeatureGroupSpec(**g) for g in self.features["groups"]]
        feats, _ = engineer(
            raw,
            groups,
            time_column=self.features.get("time_column"),
            entity_column=self.features.get("entity_column"),
            exclude=self.features["exclude"],
        )
        return np.asarray(self.preprocessor.transform(feats), dtype="float32")

    def score(self, raw: pd.DataFrame) -> np.ndarray:
        """Scores (probability of the positive class, or the prediction) for raw curated rows."""
        return predict(self.model, self.transform(raw), binary=self.binary)


def features_config(
    *,
    groups: list[FeatureGroupSpec],
    columns: dict[str, Any],
    names: list[str],
    exclude: list[str],
    time_column: str | None,
    entity_column: str | None,
    problem_type: str,
    input_columns: list[str],
) -> dict[str, Any]:
    return {
        "groups": [g.model_dump() for g in groups],
        "columns": columns,
        "feature_names": names,
        "exclude": sorted(exclude),
        "time_column": time_column,
        "entity_column": entity_column,
        "problem_type": problem_type,
        "input_columns": input_columns,
    }
