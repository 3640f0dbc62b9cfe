# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck unit system-deps venv bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[host,device,dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the demo and the tests use (mosquitto; PostgreSQL and Chromium for tests).
system-deps:
	@bash .ci/system-deps.sh

demo: $(STAMP)
	@bash .ci/system-deps.sh mosquitto || echo "mosquitto not installable here: the demo uses the embedded broker"
	$(BIN)/edgeml demo

lint: $(STAMP)
	$(BIN)/ruff check edgeml device_agent models tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile.arm

test: $(STAMP) system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	@bash .ci/system-deps.sh mosquitto postgres wrk
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/release.py
	$(BIN)/python bench/agent.py
	$(BIN)/python bench/fleet.py

clean:
	rm -rf $(VENV) .edgeml .pytest_cache .mypy_cache .ruff_cache build *.egg-info
