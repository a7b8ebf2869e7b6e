# airflow-provider-canary: developer commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CANARY ?= good

.PHONY: venv test demo ui lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m airflow_canary.demo --canary $(CANARY)

ui: $(STAMP)
	$(BIN)/python -m airflow_canary.ui_stack

lint: $(STAMP)
	$(BIN)/ruff check airflow_canary dags tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
