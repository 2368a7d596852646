"""The ML lifecycle of the AWS SageMaker seed note as one DAG per problem spec.

Every YAML file in ``include/problems/`` becomes a DAG with the sections as tasks:

    formulate_problem -> collect_and_label -> evaluate_data ->
    round_k: feature_engineering -> plan_trials -> tuning_trials (mapped) -> train_model
             -> evaluate_model -> meets_business_goal?
                 yes -> deploy_model
                 no  -> diagnose -> tune_model | augment_features | augment_data -> round_k+1
                 no, last round -> goal_not_met
    -> publish_report (run_summary.json + report.html)

This file only wires tasks: the sections live in ``plugins/ml_lifecycle`` (I/O, operators)
and ``include/lifecycle`` (pure logic). A spec that does not validate fails this import with
the file, the field and the rule.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, Label, Param, TaskGroup, TriggerRule, chain

from include.lifecycle.decide import REMEDIES
from include.lifecycle.spec import Spec, SpecError, load_spec, spec_files
from ml_lifecycle import sections
from ml_lifecycle.operators import GlueEtlOperator, ScriptModeTrainingOperator

JOIN = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS


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
    return {
        "max_rounds": Param(
            spec.max_rounds,
            type="integer",
            minimum=1,
            maximum=spec.max_rounds,
            title="Max rounds",
            description="Improvement rounds before the run gives up (at most the spec's max_rounds).",
        ),
        "lookback_days": Param(
            spec.data.lookback_days,
            type="integer",
            minimum=1,
            maximum=spec.data.max_lookback_days,
            title="Lookback days",
            description="Days of data before the data interval end used for training.",
        ),
        "force_deploy": Param(
            False,
            type="boolean",
            title="Force deploy",
            description="WARNING: deploys the last candidate even if it misses the goal or is "
            "worse than the champion. Recorded in the registry.",
        ),
        "backend": Param(
            spec.backend,
            type="string",
            enum=["local", "aws"],
            title="Backend",
            description="Where the heavy work runs: this machine or AWS (Glue, SageMaker).",
        ),
    }


def build_dag(path: Path) -> DAG:
    spec = load_spec(path)
    name = spec.name

    def py(task_id: str, fn: object, **kwargs: object) -> PythonOperator:
        trigger = kwargs.pop("trigger_rule", TriggerRule.ALL_SUCCESS)
        return PythonOperator(
            task_id=task_id, python_callable=fn, op_kwargs={"problem": name, **kwargs}, trigger_rule=trigger
        )

    def branch(task_id: str, fn: object, **kwargs: object) -> BranchPythonOperator:
        return BranchPythonOperator(task_id=task_id, python_callable=fn, op_kwargs={"problem": name, **kwargs})

    with DAG(
        dag_id=name,
        description=spec.title,
        doc_md=_doc(spec, path),
        schedule=spec.schedule,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=spec.max_active_runs,
        tags={"ml-lifecycle", f"backend:{spec.backend}", *spec.tags},
        params=_params(spec),
        default_args={
            "owner": spec.owner,
            "retries": 2,
            "retry_delay": dt.timedelta(seconds=20),
            "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=10),
        },
    ) as dag:
        formulate_problem = py("formulate_problem", sections.formulate_problem)
        collect_and_label = GlueEtlOperator(task_id="collect_and_label", problem=name)
        evaluate_data = py("evaluate_data", sections.evaluate_data)
        deploy_model = py("deploy_model", sections.deploy_model, trigger_rule=JOIN)
        goal_not_met = py("goal_not_met", sections.goal_not_met, trigger_rule=JOIN)
        publish_report = py("publish_report", sections.publish_report, trigger_rule=JOIN)
        chain(formulate_problem, collect_and_label, evaluate_data)

        into_round: list = [evaluate_data]
        for k in range(1, spec.max_rounds + 1):
            with TaskGroup(f"round_{k}", tooltip=f"round {k}: features, training, evaluation, decision"):
                feature_engineering = py(
                    "feature_engineering", sections.feature_engineering, round_no=k, trigger_rule=JOIN
                )
                plan_trials = py("plan_trials", sections.plan_trials, round_no=k)
                tuning_trials = ScriptModeTrainingOperator.partial(
                    task_id="tuning_trials", problem=name, round_no=k
                ).expand(trial=plan_trials.output)
                train_model = py("train_model", sections.train_model, round_no=k, trials=tuning_trials.output)
                evaluate_model = py("evaluate_model", sections.evaluate_model, round_no=k)
                meets_business_goal = branch("meets_business_goal", sections.meets_business_goal, round_no=k)
                chain(feature_engineering, plan_trials, tuning_trials, train_model, evaluate_model, meets_business_goal)
                if k < spec.max_rounds:
                    diagnose = branch("diagnose", sections.diagnose, round_no=k)
                    remedies = [py(r, sections.remedy, round_no=k, remedy_name=r) for r in REMEDIES]
                    meets_business_goal >> Label("goal not met") >> diagnose >> remedies
            for upstream in into_round:
                upstream >> feature_engineering
            # Label() across a TaskGroup boundary attaches to the group's leaves, so label the edges directly.
            meets_business_goal >> [deploy_model, goal_not_met]
            dag.set_edge_info(meets_business_goal.task_id, deploy_model.task_id, {"label": "goal met"})
            dag.set_edge_info(meets_business_goal.task_id, goal_not_met.task_id, {"label": "last round"})
            into_round = remedies if k < spec.max_rounds else []
        [deploy_model, goal_not_met] >> publish_report
    return dag


_errors: list[str] = []
for _path in spec_files():
    try:
        _dag = build_dag(_path)
    except SpecError as exc:
        _errors.append(str(exc))
        continue
    globals()[f"dag_{_dag.dag_id}"] = _dag

if _errors:
    raise SpecError("\n\n".join(_errors))
