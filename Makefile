# airflow-provider-canary: developer commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CANARY ?= good
ROUTER ?= istio

.PHONY: venv system-packages test demo ui lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[local,test]'
	touch $(STAMP)

venv: $(STAMP)

# Prometheus for the demo and the tests; Chromium and chromedriver for the UI's browser test.
system-packages:
	scripts/system-packages.sh prometheus chromium

test: $(STAMP) system-packages
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	scripts/system-packages.sh prometheus
	$(BIN)/python -m airflow_canary.demo --canary $(CANARY) --router $(ROUTER)

ui: $(STAMP) system-packages
	$(BIN)/python -m airflow_canary.ui_stack

lint: $(STAMP)
	$(BIN)/ruff check airflow_canary dags tests benchmarks
	$(BIN)/ruff format --check airflow_canary dags tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
