"""No oversubscription from the lifecycle's own work: concurrent trials x threads per trial <= cores
whatever ``ML_TRIAL_SLOTS`` says, and the OpenMP runtime that xgboost and scikit-learn load in a
task process waits passively (a spinning wait makes fits crawl as soon as another process wants a
core: the scheduler, another task, another user). Behaviour, not timing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from include.lifecycle.spec import PROJECT_ROOT


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("slots_env", [None, "1", "2", "3", "4", "8", "64"])
def test_trials_at_once_times_threads_never_exceed_the_cores(monkeypatch, cores, slots_env):
    from ml_lifecycle import settings

    monkeypatch.setattr(settings, "machine_cores", lambda: cores)
    if slots_env is None:
        monkeypatch.delenv("ML_TRIAL_SLOTS", raising=False)
    else:
        monkeypatch.setenv("ML_TRIAL_SLOTS", slots_env)
    slots, threads = settings.trial_slots(), settings.trial_threads()
    assert slots >= 1 and threads >= 1
    assert slots * threads <= cores
    if slots_env is not None:  # the operator's setting holds as far as the cores allow
        assert slots == min(int(slots_env), cores)


def _openmp_wait_after_dag_parse(extra_env: dict[str, str]) -> tuple[str, int]:
    """Parse the DAG file in a fresh interpreter as a task process does, then load xgboost and
    scikit-learn; libgomp prints the wait it took (OMP_DISPLAY_ENV) when it loads: the policy and
    how long a thread spins at a barrier before it sleeps (GOMP_SPINCOUNT; the unset default also
    says PASSIVE but spins 300000 times)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **extra_env)
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "import sklearn.ensemble, xgboost; "
        "xgboost.train({'nthread': 2}, xgboost.DMatrix([[0.0], [1.0]], label=[0, 1]), 1)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(PROJECT_ROOT / "dags" / "lifecycle_dags.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown: dict[str, set[str]] = {}
    for line in proc.stderr.splitlines():
        name, eq, value = line.strip().partition(" = ")
        if eq and name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
            shown.setdefault(name, set()).add(value.strip("'"))
    assert set(shown) == {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}, proc.stderr[-3000:]
    assert all(len(v) == 1 for v in shown.values()), shown  # one runtime, or all alike
    return shown["OMP_WAIT_POLICY"].pop(), int(shown["GOMP_SPINCOUNT"].pop())


def test_openmp_in_a_task_process_waits_passively():
    assert _openmp_wait_after_dag_parse({}) == ("PASSIVE", 0)


def test_an_explicit_openmp_wait_policy_is_kept():
    policy, spin = _openmp_wait_after_dag_parse({"OMP_WAIT_POLICY": "ACTIVE"})
    assert policy == "ACTIVE" and spin > 0
