# Two entry points, both starting from a bare clone:
#   make demo  - install gwc and what serving needs, check and test
#                examples/quickstart.gw, then serve it
#   make test  - install gwc with the test tools, then lint, type-check and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One stamp per install: the demo needs the package, the tests also its test tools.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo examples test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,local-embeddings,otel]'  # the local model's and the traces' tests run too
	touch $@

demo: $(DEMO_STAMP)
	$(BIN)/gwc check examples/quickstart.gw
	$(BIN)/gwc test examples/quickstart.gw
	$(BIN)/gwc serve examples/quickstart.gw --watch

examples: $(DEMO_STAMP)  # every example; production.gw warns of API keys unset here
	$(BIN)/gwc check examples/*.gw
	$(BIN)/gwc test examples/*.gw

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/gwc fmt --check examples/*.gw

test: lint  # two workers (pytest-xdist): the suite's servers and fakes wait more than they compute
	$(BIN)/pytest -n 2

bench: $(DEMO_STAMP)  # the HTTP benchmarks also need nginx, wrk and Redis (apt-get install nginx-light wrk)
	$(BIN)/python -m bench.compiler_bench
	$(BIN)/python -m bench.upstream_client
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.limits
	$(BIN)/python -m bench.workers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
