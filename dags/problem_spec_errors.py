"""Invalid problem specs, reported as this file's import error.

``lifecycle_dags.py`` builds one DAG per valid spec in ``include/problems/`` (or
``$ML_PROBLEMS_DIR``) and leaves the invalid ones out, so one broken YAML file does not take
every other problem's DAG down with it. This file holds no DAG: it validates the same specs and,
when any is invalid, fails its import with every invalid file, field and rule, which is how the
Airflow UI (*Dag import errors*) and ``airflow dags list-import-errors`` show it.
"""

from __future__ import annotations

from include.lifecycle.spec import SpecError, load_spec, spec_files

_errors: list[str] = []
for _path in spec_files():
    try:
        load_spec(_path)
    except SpecError as exc:
        _errors.append(str(exc))

if _errors:
    raise SpecError("invalid problem spec(s); their DAGs are not loaded:\n\n" + "\n\n".join(_errors))
