"""The lifecycle DAG's task ids: the sections of the seed note, named once.

The DAG file wires them and the branch callables return them, so a rename cannot leave a branch
pointing at a task that no longer exists.
"""

from __future__ import annotations

FORMULATE_PROBLEM = "formulate_problem"
COLLECT_AND_LABEL = "collect_and_label"
EVALUATE_DATA = "evaluate_data"
# inside each round_<k> group
FEATURE_ENGINEERING = "feature_engineering"
PLAN_TRIALS = "plan_trials"
TRAIN_MODEL = "train_model"  # the training trials, mapped over the round's plan
SELECT_MODEL = "select_model"  # the best trial on the validation split
EVALUATE_MODEL = "evaluate_model"
MEETS_BUSINESS_GOAL = "meets_business_goal"
DIAGNOSE = "diagnose"
COLLECT_MORE_DATA = "collect_more_data"  # augment_data's wider re-collection, for the next round
# after the rounds
APPROVE_DEPLOYMENT = "approve_deployment"
DEPLOY_MODEL = "deploy_model"
GOAL_NOT_MET = "goal_not_met"
KEEP_CHAMPION = "keep_champion"  # the goal is met but the champion is better: nothing deployed
PUBLISH_REPORT = "publish_report"
LOG_TO_MLFLOW = "log_to_mlflow"  # the run, its trials and reports in MLflow, after the report
MODEL_DEPLOYED = "model_deployed"  # succeeds when the run deployed a champion, skipped when not


def round_group(k: int) -> str:
    return f"round_{k}"


def in_round(k: int, task_id: str) -> str:
    """The full id of a task inside round ``k``'s task group."""
    return f"{round_group(k)}.{task_id}"
