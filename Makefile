# Each target bootstraps what it needs: a virtualenv, then the local stack.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bootstrap lint check stack browser demo serve test bench down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# an editable install of folders mapped by package-dir always prints setuptools' notice box: not news here
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e ".[server,test,bench]"
	touch $(STAMP)

bootstrap: $(STAMP)

stack: bootstrap
	$(BIN)/agentlog stack up

demo: stack
	$(BIN)/agentlog demo

serve: stack
	$(BIN)/agentlog serve

# The browser tests drive Debian's Chromium through its chromedriver; nothing downloads a browser of its own.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	  || { echo "could not install chromium: run as root, or apt-get install chromium chromium-driver first"; exit 1; }; }

# The walls between the layers (import-linter), the lint (ruff) and the types (mypy) before the tests.
lint: bootstrap
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	@mkdir -p .typecheck/agentlog && for d in schemas producers consumers projections deploy; do \
	  ln -sfn ../../$$d .typecheck/agentlog/$$d; done
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml

# The quick tier: the lint above and every test that needs no service, with nothing listening.
check: lint
	$(BIN)/pytest -q -m "not services" -p no:cacheprovider

test: lint stack browser
	$(BIN)/pytest

bench: stack
	$(BIN)/python bench/producer.py
	$(BIN)/python bench/projections.py
	$(BIN)/python bench/sql_box.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/processes.py
	$(BIN)/python bench/rebuild.py
	$(BIN)/python bench/freshness.py
	$(BIN)/python bench/freshness.py --analysts 10
	$(BIN)/python bench/live.py
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/encryption.py
	$(BIN)/python bench/key_outage.py
	$(BIN)/python bench/saga_recovery.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/table.py

down: bootstrap
	$(BIN)/agentlog stack down

clean: down
	rm -rf $(VENV) .stack
