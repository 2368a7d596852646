"""The lifecycle's sections as task callables: adapters between Airflow and ``include/``.

Each callable takes the problem name (and round) plus the Airflow context, loads its inputs from
the run layout (``include/lifecycle/layout.py``), calls the section's pure function in
``include/lifecycle``, writes its outputs atomically under the run folder and returns small JSON
for XCom. Re-running a task rewrites the same files with the same content. The long steps
(collect, training trials, batch scoring) are operators (``ml_lifecycle.operators``) that hand
the work to the run's backend.

    data.py        formulate_problem, evaluate_data, feature_engineering   (sections 1-4)
    training.py    plan_trials, select_model                               (section 5)
    evaluation.py  evaluate_model and the champion on the same test rows   (section 7)
    loop.py        meets_business_goal, diagnose, the remedies             (sections 6, 8)
    deploy.py      deploy_model, goal_not_met, keep_champion
    report.py      publish_report, log_to_mlflow, model_deployed
"""

from ml_lifecycle.sections.data import evaluate_data, feature_engineering, formulate_problem
from ml_lifecycle.sections.deploy import deploy_model, goal_not_met, keep_champion
from ml_lifecycle.sections.evaluation import evaluate_model
from ml_lifecycle.sections.loop import diagnose, meets_business_goal, remedy
from ml_lifecycle.sections.report import log_to_mlflow, model_deployed, publish_report
from ml_lifecycle.sections.training import plan_trials, select_model

__all__ = [
    "deploy_model",
    "diagnose",
    "evaluate_data",
    "evaluate_model",
    "feature_engineering",
    "formulate_problem",
    "goal_not_met",
    "keep_champion",
    "log_to_mlflow",
    "meets_business_goal",
    "model_deployed",
    "plan_trials",
    "publish_report",
    "remedy",
    "select_model",
]
