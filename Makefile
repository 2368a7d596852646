# The two commands: `make run` (set up, run the flagship problem end to end offline)
# and `make test` (set up, lint, pass the tests). Everything installs from this repo's files.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
PROBLEM ?= card_fraud
RUN_DATE ?= 2026-11-01
DEMO_DAYS ?= 90
DEMO_PER_DAY ?= 4000

export AIRFLOW_HOME := $(CURDIR)/.airflow
export PYTHONPATH := $(CURDIR):$(CURDIR)/plugins
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW__LOGGING__LOGGING_LEVEL := INFO
# The scheduler looks for work every 0.2 s instead of Airflow's 1 s when it found none: a task then
# waits ~0.1 s instead of ~0.5 s to be queued after its upstream ends (bench/scheduler.py: 8.2 s of
# a 1M-row run's 36 s was that wait), for ~0.07 more of a core while idle. Plus
# plugins/airflow_local_settings.py: the scheduler preloads the tasks' libraries.
export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME ?= 0.2
export ML_ARTIFACT_ROOT := $(CURDIR)/artifacts

.PHONY: setup run test lint up demo-data clean lock help bench

help:
	@echo "make run   - set up and run the flagship problem ($(PROBLEM)) end to end offline"
	@echo "make test  - set up, lint (ruff) and run the tests"
	@echo "make up    - start airflow standalone on http://127.0.0.1:8080 with this project's DAGs"
	@echo "make rollback [VERSION=n] - move $(PROBLEM)'s champion alias back to the previous (or given) version"
	@echo "make mlflow - the MLflow UI on http://127.0.0.1:$${MLFLOW_PORT:-5000} over the runs' tracking store"
	@echo "make monitor-demo - (after make run) the monitor on a drift scenario: decay, retraining, recovery"

# --compile-bytecode: the libraries' .pyc files are written once here (about 25 s on 2 cores). uv
# does not write them by default, and where PYTHONDONTWRITEBYTECODE is set Python never does: then
# every new process (each Airflow task, each test subprocess) compiled ~2,200 modules again, ~3.4 s.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip install --python $(PY) --quiet --compile-bytecode -r requirements.txt
	touch $@

setup: $(VENV)/.installed

# A random PII key per checkout, kept out of git; Airflow reads it as variable ml_pii_hash_key.
# Airflow's home holds secrets (the PII key, the admin password file, the metadata database with
# connections and variables): only its owner may enter it, and what Airflow writes there is 0600.
$(AIRFLOW_HOME)/pii_hash_key:
	mkdir -p -m 700 $(AIRFLOW_HOME)
	$(PY) -c "import secrets; print(secrets.token_hex(32))" > $@
	chmod 600 $@

$(AIRFLOW_HOME)/.db: $(VENV)/.installed
	mkdir -p -m 700 $(AIRFLOW_HOME)
	chmod 700 $(AIRFLOW_HOME)
	umask 077 && $(VENV)/bin/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	touch $@

# The demo card data (include/lifecycle/synth.py) of every problem whose spec reads it
# (data.source under card_fraud/landing, relative to $ML_DATA_ROOT): DEMO_DAYS days before RUN_DATE
# through today (UTC), so a run triggered now finds its window. A stamp in the landing folder
# records the end: on a later day the data is extended (new days and the chargebacks that fell due).
DEVTOOLS := $(PY) -m ml_lifecycle.devtools
DEMO_ARGS = --run-date $(RUN_DATE) --days $(DEMO_DAYS) --per-day $(DEMO_PER_DAY) --seed 7

demo-data: setup
	$(DEVTOOLS) demo-data $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The spec is checked first (its error names the file, field and rule); finish-run then finds the
# run `airflow dags test` made, sets its start date to its first task's start (dags test records
# the logical date), prints that run's summary or error and exits with the run's status.
run: setup $(AIRFLOW_HOME)/.db $(AIRFLOW_HOME)/pii_hash_key
	@$(DEVTOOLS) check-spec $(PROBLEM)
	$(DEVTOOLS) demo-data $(PROBLEM) $(DEMO_ARGS)
	since=$$(date +%s); AIRFLOW_VAR_ML_PII_HASH_KEY=$$(cat $(AIRFLOW_HOME)/pii_hash_key) \
	  $(VENV)/bin/airflow dags test $(PROBLEM) $(RUN_DATE) > $(AIRFLOW_HOME)/last-run.log 2>&1; \
	  grep -E "collect_and_label:|quality gate: FAIL|meets_business_goal:|diagnose round|deploy_model:|goal_not_met:|ERROR|Error:" $(AIRFLOW_HOME)/last-run.log | sed -E 's/^[^ ]+ \[[a-z ]+\] +//; s/ +\[[a-zA-Z_.]+\] +loc=.*$$//' | cut -c1-200 | tail -40; \
	  echo "full log: $(AIRFLOW_HOME)/last-run.log"; \
	  $(DEVTOOLS) finish-run $(PROBLEM) --since $$since --log $(AIRFLOW_HOME)/last-run.log --artifact-root $(ML_ARTIFACT_ROOT)

# The training trials of every DAG share one pool of trial_slots() slots (half the cores, or
# $ML_TRIAL_SLOTS), so two problems training at once do not oversubscribe the machine.
TRIAL_POOL ?= ml_trials
up: setup $(AIRFLOW_HOME)/.db $(AIRFLOW_HOME)/pii_hash_key demo-data
	@echo "Airflow UI on http://127.0.0.1:8080 - user admin, password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	chmod 700 $(AIRFLOW_HOME)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(DEVTOOLS) trial-pool $(TRIAL_POOL)
	umask 077 && AIRFLOW_VAR_ML_PII_HASH_KEY=$$(cat $(AIRFLOW_HOME)/pii_hash_key) ML_TRIAL_POOL=$(TRIAL_POOL) \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
	  $(VENV)/bin/airflow standalone

# Benchmarks are not tests: they measure time and memory and write bench/results/<date>.json.
BENCH_ROWS ?= 250000 1000000 4000000
# the flagship on a real scheduler (LocalExecutor) against plain Python, 3 repetitions
BENCH_SCHED_ROWS ?= 1000000 4000000
bench: setup
	$(PY) bench/lifecycle.py --rows $(BENCH_ROWS)
	$(PY) bench/bench_data_and_features.py
	$(PY) bench/scheduler.py --rows $(BENCH_SCHED_ROWS) --reps 3
	$(PY) bench/largest_window.py --show

# The largest training window the local backend handles, measured up to failure (not part of `make
# bench`: it takes most of an hour). The plain path of bench/lifecycle.py at growing sizes, each step
# in a child capped at BENCH_WINDOW_CAP_GB (its own memory cgroup, else RLIMIT_AS), until one fails;
# writes bench/results/largest-window-<date>.json. Needs a few GB of free disk in $$TMPDIR.
BENCH_WINDOW_ROWS ?= 4000000 8000000 16000000 24000000 32000000 40000000 48000000 56000000
BENCH_WINDOW_CAP_GB ?= 19
.PHONY: bench-window
bench-window: setup
	$(PY) bench/largest_window.py --rows $(BENCH_WINDOW_ROWS) --cap-gb $(BENCH_WINDOW_CAP_GB)

# The champion of $(PROBLEM) behind a SageMaker-style endpoint on 127.0.0.1:$(SERVE_PORT) (after `make run`);
# with the PII key it keeps the recent curated days as per-card context. deploy_model tells it to
# reload when the Airflow variable ml_serving_url (or ML_SERVING_URL) points at it.
SERVE_PORT ?= 8081
.PHONY: serve bench-serving
serve: setup
	ML_PII_HASH_KEY=$$(cat $(AIRFLOW_HOME)/pii_hash_key 2>/dev/null) \
	  $(PY) -m include.lifecycle.serving --problem $(PROBLEM) --host 127.0.0.1 --port $(SERVE_PORT)

bench-serving: setup
	$(PY) bench/serving.py --problem $(PROBLEM)

# The MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) over the store `make run` writes
# (include/lifecycle/mlflow_env.py: $MLFLOW_TRACKING_URI, else sqlite:///<artifact root>/mlflow.db, the
# artifacts in the artifact store, which the server reads and serves). Ctrl-C stops it. With an
# http(s) or SageMaker tracking server in MLFLOW_TRACKING_URI there is nothing to start: it says where.
MLFLOW_PORT ?= 5000
.PHONY: mlflow
mlflow: setup
	@set -e; read -r store artifacts <<< "$$($(PY) -c 'from include.lifecycle import mlflow_env as m; print(m.tracking_uri(), m.artifact_location())')"; \
	case "$$store" in sqlite:*|file:*|postgresql*|mysql*) ;; \
	  *) echo "the tracking server is $$store (MLFLOW_TRACKING_URI): open its UI there"; exit 0;; esac; \
	echo "MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) - store $$store, artifacts $$artifacts"; \
	exec $(VENV)/bin/mlflow server --backend-store-uri "$$store" --default-artifact-root "$$artifacts" \
	  --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

# Move the champion alias of $(PROBLEM) back to the previous champion, or to VERSION=n; the version
# is checked intact first and the rollback recorded on it (plugins/ml_lifecycle/devtools.py rollback).
.PHONY: rollback
rollback: setup
	$(DEVTOOLS) rollback $(PROBLEM) $(if $(VERSION),--version $(VERSION))

lock:
	$(UV) pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 requirements.in -o requirements.txt --no-header

clean:
	rm -rf $(AIRFLOW_HOME) artifacts data

# The monitoring DAG on a drift scenario, after `make run` (its Airflow database and PII key): a
# problem of its own (card_fraud_drift: the flagship's spec, data generated under data/card_fraud_drift
# with a new fraud pattern from 2026-10-01) trained, batch-scored and served through the endpoint's
# capture, monitored (decay: retraining requested), retrained and monitored again
# (plugins/ml_lifecycle/devtools.py monitor-demo). Prints where the reports are; the full log is
# $(AIRFLOW_HOME)/monitor-demo.log.
MONITOR_DEMO_PER_DAY ?= 4000
.PHONY: monitor-demo
monitor-demo: setup $(AIRFLOW_HOME)/.db $(AIRFLOW_HOME)/pii_hash_key
	@set -o pipefail; AIRFLOW_VAR_ML_PII_HASH_KEY=$$(cat $(AIRFLOW_HOME)/pii_hash_key) \
	  $(DEVTOOLS) monitor-demo --per-day $(MONITOR_DEMO_PER_DAY) 2>&1 | tee $(AIRFLOW_HOME)/monitor-demo.log \
	  | grep --line-buffered -E "^monitor-demo|Error|Traceback"; \
	  status=$$?; echo "full log: $(AIRFLOW_HOME)/monitor-demo.log"; exit $$status
