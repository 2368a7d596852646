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

from include.lifecycle.features import FeaturePipeline
from include.lifecycle.models import load_model, predict


@dataclass
class ModelBundle:
    features: dict[str, Any]
    preprocessor: Any
    model: Any
    threshold: float | None
    binary: bool
    calibrator: Any = None  # training.calibration: scores -> probabilities, the threshold's scale

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
            calibrator=joblib.load(folder / "calibrator.joblib") if (folder / "calibrator.joblib").exists() else None,
        )

    @property
    def input_columns(self) -> list[str]:
        return list(self.features["input_columns"])

    @property
    def pipeline(self) -> FeaturePipeline:
        """The feature pipeline the model was trained with (from ``features.json``)."""
        return FeaturePipeline.from_config(self.features)

    def transform(self, raw: pd.DataFrame) -> np.ndarray:
        """The model's input matrix for raw curated rows: the training pipeline's features, then
        the fitted preprocessor."""
        feats, _ = self.pipeline.engineer(raw)
        return np.asarray(self.preprocessor.transform(feats), dtype="float32")

    def score(self, raw: pd.DataFrame) -> np.ndarray:
        """Scores (probability of the positive class, calibrated if the model was deployed with a
        calibrator, or the prediction) for raw curated rows."""
        scores = predict(self.model, self.transform(raw), binary=self.binary)
        return scores if self.calibrator is None else self.calibrator.transform(scores)


def features_config(
    *, pipeline: FeaturePipeline, columns: dict[str, Any], names: list[str], problem_type: str, input_columns: list[str]
) -> dict[str, Any]:
    """The ``features.json`` of a model: its :class:`FeaturePipeline` (``to_config()``), the
    engineered columns by type, the preprocessor's output names, the problem type and the data
    set columns a row to score must carry."""
    return {
        **pipeline.to_config(),
        "columns": columns,
        "feature_names": names,
        "problem_type": problem_type,
        "input_columns": input_columns,
    }
