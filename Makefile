# jsqa: the two commands a new user needs are `make pipeline` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
# Telemetry off: offline by default, and CI must not phone home. The same list is in flows/offline.py,
# which covers runs started without make (python -m flows.pipeline run).
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_HOME ?= $(CURDIR)/.prefect
# torch's OpenMP threads sleep between parallel regions instead of spinning: on a loaded machine
# the spinning made small-model training 3-30x slower (benchmarks/threads_under_load.py). Read when
# torch loads, so it is set for every command here, the tests included; a value you set wins.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup pipeline repro study test test-fast lint format ui-mlflow ui-prefect serve lock clean-outputs

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the pinned stack and jsqa

pipeline: $(STAMP)  ## run every stage on the offline demo corpus, through the Prefect flow
	$(BIN)/python -m flows.pipeline run --project-dir .

repro: $(STAMP)  ## the same stages with plain DVC
	$(BIN)/dvc repro

# The label-efficiency study (README, "Does pretraining help?"): the workspace's own evaluation
# (params.yaml, label_fraction 1.0) plus one DVC experiment per STUDY setting, each re-running
# finetune, finetune_scratch and evaluate; everything upstream is reused from the cache
# (dvc.lock is copied into each experiment: it is not committed). STUDY is any `-S` grid; the
# settings run one after another as `dvc exp run --temp` (jsqa/sweep.py says why not the queue).
# Peers are off in the study: it compares the two inits, and each experiment would re-score them.
# A failed setting is named by `jsqa study`, which then exits 1.
STUDY ?= finetune.label_fraction=0.1,0.3
study: $(STAMP)  ## pretrained vs scratch over STUDY settings, as DVC experiments, then one table and plot
	$(BIN)/dvc repro evaluate
	$(BIN)/jsqa study -S 'evaluate.peers=[]' $(foreach s,$(STUDY),-S '$(s)')

test: $(STAMP)  ## the full suite, unit and integration tests (what CI runs)
	$(BIN)/python -m pytest -q --durations=10  # the ten slowest tests close the report

test-fast: $(STAMP)  ## unit tests only (under a minute): no pipeline, server, subprocess or training run
	$(BIN)/python -m pytest -q -m "not integration"

# Lint needs only ruff, mypy and numpy (whose types mypy reads), at the versions of requirements.lock:
# a small environment of its own, so `make lint` runs in seconds on a fresh clone.
LINT_VENV  := .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed
$(LINT_STAMP): requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet -c requirements.lock ruff mypy numpy
	touch $(LINT_STAMP)

LINT_PATHS := jsqa flows tests benchmarks
lint: $(LINT_STAMP)  ## ruff check, ruff format --check and mypy (pyproject.toml), without the full install
	$(LINT_VENV)/bin/ruff check $(LINT_PATHS)
	$(LINT_VENV)/bin/ruff format --check $(LINT_PATHS)
	$(LINT_VENV)/bin/mypy

format: $(LINT_STAMP)  ## ruff format and ruff's safe fixes, in place
	$(LINT_VENV)/bin/ruff format $(LINT_PATHS)
	$(LINT_VENV)/bin/ruff check --fix $(LINT_PATHS)

# The printed address opens jsqa's runs in the Model training view; MLflow's bare address opens
# a new browser on the GenAI view.
ui-mlflow: $(STAMP)  ## MLflow UI on http://127.0.0.1:5000; open the address it prints (jsqa's runs)
	@env -u MLFLOW_TRACKING_URI -u MLFLOW_REGISTRY_URI $(BIN)/python -c 'from jsqa import tracking; \
	print("jsqa runs:", tracking.ui_url("http://127.0.0.1:5000", tracking.configure()))'
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

ui-prefect: $(STAMP)  ## Prefect server + UI on http://127.0.0.1:4200
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

CRON ?= 0 3 * * *
SERVE_ARGS ?=
serve: $(STAMP)  ## serve the flow as a deployment on CRON (needs `make ui-prefect` running); SERVE_ARGS="--profile paper ..."
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(BIN)/python -m flows.pipeline serve --project-dir . --cron "$(CRON)" $(SERVE_ARGS)

lock: $(STAMP)  ## re-freeze requirements.lock from the current .venv
	( echo "# Frozen, tested set (Python 3.11, x86_64). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -vE '^(jsqa|pip)==' ) > requirements.lock

clean-outputs:  ## forget pipeline outputs (data, models, metrics, tracking store)
	rm -rf data/raw data/manifests data/validation data/pairs models metrics plots mlflow.db mlartifacts
