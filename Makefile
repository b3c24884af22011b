# sm3repro: every target runs in the project's own virtual environment (.venv/).
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
# Where the EWT files live: $SM3REPRO_DATA if set (the harness and the tests read it too).
DATA_DIR := $(or $(SM3REPRO_DATA),data/ud-english-ewt)
# A local folder holding the EWT files to copy into DATA_DIR; empty = download.
DATA_MIRROR ?=
# Where the EWT release files are downloaded from; empty = the treebank's GitHub release tag.
EWT_BASE_URL ?=
DATA_SOURCE = $(if $(DATA_MIRROR),--mirror $(DATA_MIRROR)) $(if $(EWT_BASE_URL),--base-url $(EWT_BASE_URL))
# pip's index for torch alone; empty = pip's configuration (PyPI: the CUDA build on Linux).
# CPU-only wheel: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
ARGS     ?=

.PHONY: install data test test-fast lint reproduce reproduce-smoke sweep sweep-smoke report tune bench fault-suite memory arms timed decide fastest-exact mutation clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# torch first, pinned to the version the committed results were recorded with.
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	# SM3's fused C++ kernel, built now so the first run (and its timing) does not wait for it.
	$(PY) -m sm3repro.optim.sm3.fused

install: $(PY)

data: $(PY)
	$(PY) -m sm3repro.data.download --dest $(DATA_DIR) $(DATA_SOURCE)

# Both need the data: `make data` is a checksum check when the files are there.
test: data
	$(PY) -m pytest -q $(ARGS)

# Without the end-to-end subprocess tests (marked slow): about a minute.
test-fast: data
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: $(PY)
	$(PY) -m ruff check sm3repro tests scripts
	$(PY) -m ruff format --check sm3repro tests scripts
	$(VENV)/bin/lint-imports

# The study end to end: data, the paper grid (5 optimizers x batch 64, 512 x 3 seeds), report.
# Resumable: rerun it and finished runs are skipped, an interrupted one resumes from its checkpoint.
reproduce: data sweep report

sweep: $(PY)
	$(PY) -m sm3repro.train -m experiment=paper $(ARGS)

# A few minutes: the same report from the smoke grid (300 sentences, 2 epochs), in results-smoke/.
reproduce-smoke: data sweep-smoke
	$(PY) -m sm3repro.report --results results-smoke

sweep-smoke: $(PY)
	SM3REPRO_RESULTS=results-smoke $(PY) -m sm3repro.train -m experiment=smoke logger=none $(ARGS)

# Also logs the tables and figures to W&B as a report run in the sweep's group (offline unless
# WANDB_MODE=online; WANDB_MODE=disabled skips it).
report: $(PY)
	$(PY) -m sm3repro.report --results results --experiment paper --wandb

# The best_parser search (Optuna TPE, resumable: the study is stored in results/tuning/).
tune: $(PY)
	$(PY) -m sm3repro.train -m hparams_search=best_parser $(ARGS)
	$(PY) -m sm3repro.report.tuning

bench: $(PY)
	$(PY) scripts/bench_parser.py
	$(PY) scripts/bench_optim.py
	$(PY) scripts/bench_epoch.py
	$(PY) scripts/bench_phase_timing.py

# Claim 3's second tier (timed: the machine alone): SM3-II, SM3-I and SGD rerun with sparse word
# rows, seeds 0-2 (18 runs); the report then judges claim 3 in both tiers. Resumable.
fastest-exact: data
	$(PY) -m sm3repro.train -m experiment=fastest_exact $(ARGS)
	$(PY) -m sm3repro.report --results results --experiment paper

fault-suite: $(PY)
	$(PY) scripts/fault_suite.py

# The claims arms (lr selection, tuned lr, no dropout; hours on 2 cores), then the report.
# Resumable like reproduce: rerun it and it goes on where it stopped.
arms: data
	$(PY) scripts/run_arms.py $(ARGS)

# The timed arm (claims 3 and 4 in tiers; the machine alone, ~50 min per seed block on 2 cores):
# the tuned-lr grid plus SM3-II, SM3-I and SGD with sparse rows, seed block by seed block, with
# dev points within epochs, phase timing and host calibration. Resumable.
timed: data
	$(PY) scripts/run_arms.py --stage timed $(ARGS)

# Seeds where the timed arm's comparisons stay undecided, in groups of 3 up to 9 per cell, each
# look at its share of alpha; then the report. Resumable.
decide: data
	$(PY) scripts/decide.py $(ARGS)
	$(PY) -m sm3repro.report --results results --experiment paper

# The memory arm (16 CPU-minutes measured here, 2 threads per run): optimizer memory and step
# time as the parser is widened to 200M parameters, and the largest model per 1/2/4 GiB budget,
# into results/memory/. Resumable.
memory: data
	$(PY) -m sm3repro.arms.memory --wandb $(ARGS)

# Mutation testing (cosmic-ray) of what decides results, one scope after another; not in CI
# (tens of minutes per scope). ARGS picks scopes and limits, e.g. ARGS="claims --budget-min 30".
mutation: $(PY)
	$(PY) scripts/mutation.py $(ARGS)

clean:
	rm -rf cache outputs multirun results-smoke .pytest_cache
