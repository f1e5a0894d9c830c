# Two entry points, both starting from a bare clone:
#   make demo  - set up, check the example policies, then serve examples/quickstart.gw
#   make test  - set up, then lint, type-check and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo examples test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: examples
	$(BIN)/gwc serve examples/quickstart.gw --watch

examples: $(STAMP)
	$(BIN)/gwc check examples/*.gw
	$(BIN)/gwc test examples/*.gw

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/gwc fmt --check examples/*.gw

test: lint
	$(BIN)/pytest

bench: $(STAMP)  # the HTTP benchmarks also need nginx and wrk (apt-get install nginx-light wrk)
	$(BIN)/python -m bench.compiler_bench
	$(BIN)/python -m bench.upstream_client
	$(BIN)/python -m bench.overhead

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
