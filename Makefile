# make demo  — install into .venv and run the live demo on the embedded default
# make test  — install into .venv (plus Chromium) and run lint + the test suite (not `slow`)
# make test-slow — the long tests (kill -9 rounds, floods, 100-user erasures); CI runs both
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test test-slow bench lint format install services browser clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/trimtab demo --segments

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

services:
	@bash scripts/ensure-services.sh

lint: install
	$(BIN)/ruff check src tests trimtab_bench
	$(BIN)/ruff format --check src tests trimtab_bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests trimtab_bench
	$(BIN)/ruff check --fix src tests trimtab_bench

test: install browser services lint
	$(BIN)/pytest -q -m "not slow"

test-slow: install browser services
	$(BIN)/pytest -q -m slow

bench: install services
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/trimtab bench all

clean:
	rm -rf $(VENV) var artifacts .pytest_cache .ruff_cache
