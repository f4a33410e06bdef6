# ModelRunner: `make run` runs one job end to end on the local stack; `make test` runs every gate.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit functional compose fuzz bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m client.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -m "not functional"

functional: $(STAMP)
	$(BIN)/pytest -m "functional and not docker"

# The docker-compose stack end to end (needs a Docker engine with the compose plugin).
compose: $(STAMP)
	$(BIN)/pytest -m docker tests/functional/test_compose.py

test: lint typecheck
	$(BIN)/pytest

# Property tests with fresh random examples (make test derives them deterministically).
FUZZ_ROUNDS ?= 10
fuzz: $(STAMP)
	for round in $$(seq $(FUZZ_ROUNDS)); do \
		$(BIN)/pytest -q -p no:cacheprovider --hypothesis-profile=fuzz -m "not functional" \
			tests/postprocessing tests/worker tests/tiling || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
