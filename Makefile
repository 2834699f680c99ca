# facelab: the two set-up commands of the README, and a few conveniences.
#   make install    install into .venv the exact versions of the lock (LOCK), then facelab itself (-e, --no-deps)
#   make pipeline   install into .venv and run the whole pipeline on the synthetic default (dvc repro)
#   make test       install into .venv (the lock holds the test, team-test and demo-test extras) and run the tests
#   make lock       refresh requirements/{cpu,gpu}.lock.txt from pyproject.toml (UPGRADE=1: newest versions)
#   make lock-check check that both locks agree with pyproject.toml (tests/code/test_lock.py checks the same)
PYTHON ?= python3.11
# The extras installed: exactly one of cpu / gpu picks the TensorFlow build (EXTRAS=gpu,test on a GPU machine,
# into a fresh .venv: docs/devices.md). The build picks the lock, which pins every extra of EXTRAS' default:
# EXTRAS=gpu,test installs requirements/gpu.lock.txt, with the team-test and demo-test packages too.
EXTRAS ?= cpu,test,team-test,demo-test
comma  := ,
BUILD  := $(if $(filter gpu,$(subst $(comma), ,$(EXTRAS))),gpu,cpu)
LOCK   ?= requirements/$(BUILD).lock.txt
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# uv compiles the locks (uv pip compile), from a venv of its own so that .venv holds only what the lock pins.
UV_VERSION        ?= 0.13.9
PACKAGING_VERSION ?= 26.4
LOCK_VENV  := .venv-lock
LOCK_STAMP := $(LOCK_VENV)/.installed

.PHONY: install pipeline test test-fast ui bench lock lock-check

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

$(LOCK_STAMP):
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q uv==$(UV_VERSION) packaging==$(PACKAGING_VERSION)
	touch $(LOCK_STAMP)

lock: $(LOCK_STAMP)
	$(LOCK_VENV)/bin/python scripts/lock.py compile --uv $(LOCK_VENV)/bin/uv $(if $(UPGRADE),--upgrade)

lock-check: $(LOCK_STAMP)
	$(LOCK_VENV)/bin/python scripts/lock.py check

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
