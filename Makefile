# sm3repro: every target runs in the project's own virtual environment (.venv/).
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
DATA_DIR := data/ud-english-ewt
# A local folder holding the EWT files (CI: ../shared/data/ud-english-ewt); empty = download.
DATA_MIRROR ?=
ARGS     ?=

.PHONY: install data test test-fast lint reproduce reproduce-smoke sweep sweep-smoke report bench fault-suite mutation clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# torch first and pinned exactly: any looser spec can pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,bench]'

install: $(PY)

data: $(PY)
	$(PY) -m sm3repro.data.download --dest $(DATA_DIR) $(if $(DATA_MIRROR),--mirror $(DATA_MIRROR))

test: $(PY)
	$(PY) -m pytest -q $(ARGS)

lint: $(PY)
	$(PY) -m ruff check sm3repro tests scripts
	$(PY) -m ruff format --check sm3repro tests scripts

# The study end to end: data, the paper grid (5 optimizers x batch 64, 512 x 3 seeds), report.
# Resumable: rerun it and finished runs are skipped, an interrupted one resumes from its checkpoint.
reproduce: data sweep report

sweep: $(PY)
	$(PY) -m sm3repro.train -m experiment=paper $(ARGS)

# A few minutes: the same report from the smoke grid (300 sentences, 2 epochs), in results-smoke/.
reproduce-smoke: data
	SM3REPRO_RESULTS=results-smoke $(PY) -m sm3repro.train -m experiment=smoke logger=none $(ARGS)
	$(PY) -m sm3repro.report --results results-smoke

# Also logs the tables and figures to W&B as a report run in the sweep's group (offline unless
# WANDB_MODE=online; WANDB_MODE=disabled skips it).
report: $(PY)
	$(PY) -m sm3repro.report --results results --experiment paper --wandb

bench: $(PY)
	$(PY) scripts/bench_parser.py
	$(PY) scripts/bench_optim.py

fault-suite: $(PY)
	$(PY) scripts/fault_suite.py

# Mutation testing (cosmic-ray) of what decides results, one scope after another; not in CI
# (tens of minutes per scope). ARGS picks scopes and limits, e.g. ARGS="claims --budget-min 30".
mutation: $(PY)
	$(PY) scripts/mutation.py $(ARGS)

clean:
	rm -rf cache outputs multirun results-smoke .pytest_cache
