"""Search spaces, and a round's trials as SageMaker hyperparameter tuning jobs (pure Python).

The local backend runs a round's trials one by one (``train.plan_trials``: the family's default
parameters first, then samples of its search grid). On the aws backend with
``aws.hyperparameter_tuning`` a family with more than one trial in the round becomes *one*
trial entry carrying ``tuning``: the family's search grid as categorical ranges and the number
of training jobs, which the SageMaker tuning job explores itself. A family with a single trial
stays one training job.
"""

from __future__ import annotations

from typing import Any

from include.lifecycle.spec import CandidateSpec, Spec

# what a "wide" search adds to a family's own grid (the tune remedy widens the search)
WIDE_SEARCH: dict[str, dict[str, list[Any]]] = {
    "xgboost": {
        "n_estimators": [300, 600],
        "max_depth": [4, 6, 8],
        "learning_rate": [0.05, 0.1],
        "min_child_weight": [1, 3],
        "subsample": [0.8, 1.0],
        "colsample_bytree": [0.6, 0.9],
    },
    "random_forest": {"n_estimators": [200, 400], "max_depth": [12, 20, None], "min_samples_leaf": [1, 3, 10]},
    "logistic": {"C": [0.03, 0.3, 3.0, 30.0]},
    "linear": {"alpha": [0.01, 0.1, 1.0, 10.0]},
}


def search_space(cand: CandidateSpec, *, wide: bool) -> dict[str, list[Any]]:
    """The candidate's grid (``search`` in the spec), widened by ``WIDE_SEARCH`` when ``wide``."""
    space = {k: list(v) for k, v in cand.search.items()}
    if wide:
        for k, vals in WIDE_SEARCH.get(cand.family, {}).items():
            space[k] = sorted(set(space.get(k, [])) | set(vals), key=lambda v: (v is None, v))
    return space


def as_tuning_jobs(spec: Spec, trials: list[dict[str, Any]], *, wide: bool, round_no: int) -> list[dict[str, Any]]:
    """``trials`` (from ``train.plan_trials``) with every family that has more than one trial (and a
    search grid) folded into one tuning entry: ``{"trial_id": "r<k>-<family>-tuning", "family",
    "params": the defaults, "tuning": {"ranges": {name: [values]}, "max_jobs": n}}``."""
    per_family: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        per_family.setdefault(t["family"], []).append(t)
    out: list[dict[str, Any]] = []
    for cand in spec.training.candidates:
        family_trials = per_family.pop(cand.family, [])
        full = search_space(cand, wide=wide)
        space = {k: v for k, v in full.items() if len(v) > 1}
        if len(family_trials) <= 1 or not space:
            out += family_trials
            continue
        out.append(
            {
                "trial_id": f"r{round_no}-{cand.family}-tuning",
                "family": cand.family,
                "params": {**cand.params, **{k: v[0] for k, v in full.items() if len(v) == 1}},
                "tuning": {"ranges": space, "max_jobs": len(family_trials)},
            }
        )
    return out + [t for ts in per_family.values() for t in ts]
