# facelab: the two set-up commands of the README, and a few conveniences.
#   make pipeline   install into .venv and run the whole pipeline on the synthetic default (dvc repro)
#   make test       install into .venv (with the test and team-test extras) and run the test suite
PYTHON ?= python3.11
# The extras installed: exactly one of cpu / gpu picks the TensorFlow build (EXTRAS=gpu,test on a GPU machine,
# into a fresh .venv: docs/devices.md).
EXTRAS ?= cpu,test,team-test,demo-test
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install pipeline test test-fast ui bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

pipeline: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not e2e"

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" --host 127.0.0.1 --port 5000

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py
