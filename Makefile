# Each target bootstraps what it needs: a virtualenv, then the local stack.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bootstrap stack demo test bench down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

bootstrap: $(STAMP)

stack: bootstrap
	$(BIN)/agentlog stack up

demo: stack
	$(BIN)/agentlog demo

test: stack
	$(BIN)/pytest

bench: stack
	$(BIN)/python bench/producer.py
	$(BIN)/python bench/projections.py

down: bootstrap
	$(BIN)/agentlog stack down

clean: down
	rm -rf $(VENV) .stack
