# ModelRunner: `make run` runs one job end to end on the local stack; `make test` runs every gate.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-container lint typecheck unit functional compose fuzz bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local]'
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

# The images built and run on a real Docker engine, then the compose stack end to end
# (docs/deployment.md). Installs and starts the engine if the machine has none (as root).
test-container: $(STAMP)
	PYTHON=$(abspath $(BIN))/python infra/container/test.sh

# The compose stack end to end alone.
compose: $(STAMP)
	PYTHON=$(abspath $(BIN))/python infra/container/test.sh tests/functional/test_compose.py

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
