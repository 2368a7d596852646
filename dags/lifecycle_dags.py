"""The ML lifecycle of the AWS SageMaker seed note as one DAG per problem spec.

Every YAML file in ``include/problems/`` becomes a DAG with the sections as tasks:

    formulate_problem -> collect_and_label -> evaluate_data ->
    round_k: feature_engineering -> plan_trials -> train_model (one mapped task per trial)
             -> select_model (the best trial of this round and the earlier ones on the same rows)
             -> evaluate_model -> meets_business_goal?
                 yes -> [approve_deployment: a person approves, if deploy.require_approval] -> deploy_model
                 goal met, champion better -> keep_champion (no remedy round spent)
                 no  -> diagnose -> tune_model | augment_features | augment_data [-> collect_more_data]
                        -> round_k+1
                        (no remedy can change the candidate -> goal_not_met)
                 no, last round -> goal_not_met
    -> publish_report (run_summary.json + report.html)
       -> log_to_mlflow (the run, its trials, reports and plots in MLflow; whatever happened)
       -> model_deployed (succeeds when a champion was deployed, skipped when not)

This file only wires tasks: the sections live in ``plugins/ml_lifecycle`` (adapters, operators,
the backend) and ``include/lifecycle`` (pure logic). A spec that does not validate is left out here, so every
other problem's DAG still loads; ``dags/problem_spec_errors.py`` reports it as an import error
naming the file, the field and the rule.

``publish_report`` runs whatever happened: when a task failed, it still writes the report and
``run_summary.json`` (``decision: failed``, the task and its error) and then fails, so the run
is marked failed. Errors a retry cannot fix (an invalid input, a split that cannot be made, a
bug) fail at once; transient ones (network, AWS throttling) are retried.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, Label, Param, TaskGroup, TriggerRule, chain

from include.lifecycle.decide import REMEDIES
from include.lifecycle.spec import Spec, SpecError, load_spec, spec_files
from ml_lifecycle import sections
from ml_lifecycle import task_ids as t
from ml_lifecycle.approval import DeploymentApprovalOperator
from ml_lifecycle.assets import champion_model_asset, curated_data_asset, retrain_requested_asset
from ml_lifecycle.context import resolve
from ml_lifecycle.errors import FailureRecorder, fail_fast
from ml_lifecycle.notify import lifecycle_notifiers
from ml_lifecycle.operators import CollectAndLabelOperator, TrainingTrialOperator
from ml_lifecycle.settings import task_defaults, trial_pool

JOIN = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


def _schedule(spec: Spec) -> object:
    """The spec's cron; for a monitored problem its cron *or* the monitor's retraining request
    (the ``<problem>.retrain_requested`` asset): it retrains on evidence, not only on the clock."""
    if not spec.monitored:
        return spec.schedule
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    if spec.schedule is None:
        return [retrain_requested_asset(spec.name)]
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(spec.schedule, timezone="UTC"), assets=[retrain_requested_asset(spec.name)]
    )


def _doc(spec: Spec, path: Path) -> str:
    g = spec.goal
    op = ">=" if g.higher_is_better else "<="
    alert = f" at an alert rate <= {g.max_alert_rate:.2%}" if g.max_alert_rate else ""
    return (
        f"# {spec.title}\n\n**Business goal.** {g.statement}\n\n"
        f"**Success criterion.** `{g.metric} {op} {g.target}`{alert}, and no worse than the champion "
        f"(margin {g.champion_margin}).\n\n**Spec.** `{path.relative_to(path.parents[2])}` (digest `{spec.digest()}`), "
        f"backend `{spec.backend}`, up to {spec.max_rounds} rounds.\n\n" + (__doc__ or "")
    )


def _params(spec: Spec) -> dict[str, Param]:
    """The run's form (Trigger DAG in the UI, ``-c`` on the CLI, ``conf`` over REST): every field
    has a title, a description and bounds, so a wrong value is refused before the run starts."""
    approval = (
        "This problem requires a person to approve every deployment (deploy.require_approval)."
        if spec.deploy.require_approval
        else "This problem deploys automatically (deploy.require_approval is false): no effect."
    )
    return {
        "max_rounds": Param(
            spec.max_rounds,
            type="integer",
            minimum=1,
            maximum=spec.max_rounds,
            title="Max rounds",
            description=f"Improvement rounds (train, evaluate, remedy) before the run gives up: 1 to "
            f"{spec.max_rounds}, the spec's max_rounds (the rounds are unrolled in the DAG).",
        ),
        "lookback_days": Param(
            spec.data.lookback_days,
            type="integer",
            minimum=1,
            maximum=spec.data.max_lookback_days,
            title="Lookback days",
            description=f"Days of data before the data interval end used for training: 1 to "
            f"{spec.data.max_lookback_days} (data.max_lookback_days); the spec's default is {spec.data.lookback_days}.",
        ),
        "force_deploy": Param(
            False,
            type="boolean",
            title="Force deploy (dangerous)",
            description="WARNING: deploys the last candidate even if it misses the business goal or is worse "
            "than the champion in production. Use only to roll out a fix you have checked by hand; "
            "the registry records the version as forced.",
        ),
        "skip_approval": Param(
            False,
            type="boolean",
            title="Skip human approval",
            description=f"Deploy a model that passes the gate without asking for approval. {approval} "
            "The run records that approval was skipped.",
        ),
        "backend": Param(
            spec.backend,
            type="string",
            enum=["local", "aws"],
            title="Backend",
            description="Where the heavy work runs: local (this machine) or aws (Glue, SageMaker, S3).",
        ),
    }


def build_dag(path: Path) -> DAG:
    spec = load_spec(path)
    name = spec.name

    def py(
        task_id: str,
        fn: object,
        trigger_rule: str = TriggerRule.ALL_SUCCESS,
        round_no: int | None = None,
        remedy_name: str | None = None,
        trials: object = None,
        **operator_args: object,
    ) -> PythonOperator:
        """A section as a task: its callable gets the problem (and its round, remedy, trials)."""
        op_kwargs = {"problem": name, "round_no": round_no, "remedy_name": remedy_name, "trials": trials}
        return PythonOperator(
            task_id=task_id,
            python_callable=fail_fast(fn),
            op_kwargs={k: v for k, v in op_kwargs.items() if v is not None},
            trigger_rule=trigger_rule,
            **operator_args,
        )

    def branch(task_id: str, fn: object, round_no: int) -> BranchPythonOperator:
        return BranchPythonOperator(
            task_id=task_id, python_callable=fail_fast(fn), op_kwargs={"problem": name, "round_no": round_no}
        )

    record_failure = FailureRecorder(problem=name)
    # trials of this DAG at once (all its runs together), each with its share of the cores; the
    # DAG is parsed with the spec's backend (a run's backend param cannot change a task's settings)
    trial_slots = resolve(spec).trial_concurrency()
    # the trials of all DAGs on this machine share one pool when the deployment made it (trial_pool)
    pool = {"pool": trial_pool()} if trial_slots is not None and trial_pool() else {}

    with DAG(
        dag_id=name,
        description=spec.title,
        doc_md=_doc(spec, path),
        schedule=_schedule(spec),
        # far back on purpose: Airflow marks every task of a run dated before start_date as skipped
        # and calls the run a success; a backfill of old dates must run and say what data it found
        start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=spec.max_active_runs,
        tags={"ml-lifecycle", f"backend:{spec.backend}", *spec.tags},
        params=_params(spec),
        default_args=task_defaults(
            spec.owner,
            on_failure_callback=[record_failure, *lifecycle_notifiers(name, "failure", spec.alerts.on_failure)],
        ),
    ) as dag:
        formulate_problem = py(t.FORMULATE_PROBLEM, sections.formulate_problem)
        collect_and_label = CollectAndLabelOperator(
            task_id=t.COLLECT_AND_LABEL, problem=name, outlets=[curated_data_asset(name)]
        )
        evaluate_data = py(t.EVALUATE_DATA, sections.evaluate_data)
        deploy_model = py(
            t.DEPLOY_MODEL, sections.deploy_model, trigger_rule=JOIN, outlets=[champion_model_asset(name)]
        )
        goal_not_met = py(
            t.GOAL_NOT_MET,
            sections.goal_not_met,
            trigger_rule=JOIN,
            on_success_callback=lifecycle_notifiers(name, "goal_not_met", spec.alerts.on_goal_not_met),
        )
        keep_champion = py(t.KEEP_CHAMPION, sections.keep_champion, trigger_rule=JOIN)
        # the goal-met branch leads to deploy_model, or first to a person's approval (deploy.require_approval)
        deploy_gate = deploy_model
        if spec.deploy.require_approval:
            hours = spec.deploy.approval_timeout_hours
            deploy_gate = DeploymentApprovalOperator(
                task_id=t.APPROVE_DEPLOYMENT,
                problem=name,
                trigger_rule=JOIN,
                response_timeout=dt.timedelta(hours=hours) if hours else None,
                notifiers=lifecycle_notifiers(name, "approval_requested", True),
            )
            deploy_gate >> deploy_model
        # runs whatever happened (ALL_DONE); it fails after writing the report of a failed run, and
        # does not alert again (the failed task did), nor retry
        publish_report = py(
            t.PUBLISH_REPORT,
            sections.publish_report,
            trigger_rule=TriggerRule.ALL_DONE,
            retries=0,
            on_failure_callback=[record_failure],
        )
        # after the report, whatever happened: the run in MLflow (retried: a tracking error must
        # not lose the report, which exists by then), and the run's end at a glance in the grid
        log_to_mlflow = py(t.LOG_TO_MLFLOW, sections.log_to_mlflow, trigger_rule=TriggerRule.ALL_DONE)
        model_deployed = py(t.MODEL_DEPLOYED, sections.model_deployed)
        publish_report >> [log_to_mlflow, model_deployed]
        chain(formulate_problem, collect_and_label, evaluate_data)

        into_round: list = [evaluate_data]
        for k in range(1, spec.max_rounds + 1):
            with TaskGroup(t.round_group(k), tooltip=f"round {k}: features, training, evaluation, decision"):
                feature_engineering = py(
                    t.FEATURE_ENGINEERING, sections.feature_engineering, round_no=k, trigger_rule=JOIN
                )
                plan_trials = py(t.PLAN_TRIALS, sections.plan_trials, round_no=k)
                train_model = TrainingTrialOperator.partial(
                    task_id=t.TRAIN_MODEL, problem=name, round_no=k, max_active_tis_per_dag=trial_slots, **pool
                ).expand(trial=plan_trials.output)
                select_model = py(t.SELECT_MODEL, sections.select_model, round_no=k, trials=train_model.output)
                evaluate_model = py(t.EVALUATE_MODEL, sections.evaluate_model, round_no=k)
                meets_business_goal = branch(t.MEETS_BUSINESS_GOAL, sections.meets_business_goal, round_no=k)
                chain(feature_engineering, plan_trials, train_model, select_model, evaluate_model, meets_business_goal)
                if k < spec.max_rounds:
                    diagnose = branch(t.DIAGNOSE, sections.diagnose, round_no=k)
                    remedies = {r: py(r, sections.remedy, round_no=k, remedy_name=r) for r in REMEDIES}
                    meets_business_goal >> Label("goal not met") >> diagnose >> list(remedies.values())
                    diagnose >> goal_not_met
                    dag.set_edge_info(diagnose.task_id, goal_not_met.task_id, {"label": "no remedy can change it"})
                    # a branch skips only its direct downstream tasks: when diagnose ends the loop, the
                    # later rounds are skipped, and these joins would otherwise see one success (this
                    # round's gate) and no failure, and run; when it goes on, they stay downstream
                    diagnose >> [deploy_gate, keep_champion]
                    for end in (deploy_gate, keep_champion):
                        dag.set_edge_info(diagnose.task_id, end.task_id, {"label": "skipped when the loop ends here"})
                    # more history for the next round: a visible (and on AWS deferrable) Glue job;
                    # skipped when augment_data only resamples
                    collect_more_data = CollectAndLabelOperator(
                        task_id=t.COLLECT_MORE_DATA, problem=name, round_no=k + 1
                    )
                    remedies["augment_data"] >> collect_more_data
            for upstream in into_round:
                upstream >> feature_engineering
            # Label() across a TaskGroup boundary attaches to the group's leaves, so label the edges directly.
            meets_business_goal >> [deploy_gate, goal_not_met, keep_champion]
            dag.set_edge_info(meets_business_goal.task_id, deploy_gate.task_id, {"label": "goal met"})
            dag.set_edge_info(meets_business_goal.task_id, goal_not_met.task_id, {"label": "last round"})
            dag.set_edge_info(
                meets_business_goal.task_id, keep_champion.task_id, {"label": "goal met, champion better"}
            )
            into_round = [*remedies.values(), collect_more_data] if k < spec.max_rounds else []
        # a rejected deployment skips deploy_model, so the approval itself leads to the report too
        [deploy_model, goal_not_met, keep_champion] >> publish_report
        if deploy_gate is not deploy_model:
            deploy_gate >> publish_report
            dag.set_edge_info(deploy_gate.task_id, deploy_model.task_id, {"label": "approved"})
            dag.set_edge_info(deploy_gate.task_id, publish_report.task_id, {"label": "rejected: report only"})
    return dag


for _path in spec_files():
    try:
        _dag = build_dag(_path)
    except SpecError:
        continue  # reported by dags/problem_spec_errors.py; the other problems still load
    globals()[f"dag_{_dag.dag_id}"] = _dag
