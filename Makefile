# Two entry points, both starting from a bare clone:
#   make demo  - set up, then check, test and explain the example policies
#   make test  - set up, then lint, type-check and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gwc check examples/*.gw
	$(BIN)/gwc test examples/*.gw
	$(BIN)/gwc explain examples/production.gw --request '{"model": "smart", "team": "research"}'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/gwc fmt --check examples/*.gw

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.compiler_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
