# The README's two commands: `make up` and `make test`. Each builds or refreshes .venv by itself on a
# fresh Debian machine that has only Python 3.11 and make; a second run is instant while uv.lock and
# pyproject.toml are unchanged (the stamp file below).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
STAMP := $(VENV)/.synced
BIN := $(VENV)/bin
# uv itself is pinned by the lock file, so every machine resolves the same way.
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;q}' uv.lock)
ARGS ?=
BENCH_ARGS ?= --events 1000000

export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help venv up test lint bench docker-cli

help:
	@echo "make up [ARGS='--agents 3 --executor sim']   start a local cluster (shoal up)"
	@echo "make test                                     ruff, mypy, then pytest"
	@echo "make lint                                     ruff and mypy only"
	@echo "make bench [BENCH_ARGS='--events 100000']     replay benchmark"

venv: $(STAMP)

$(STAMP): uv.lock pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  py=$$(command -v python3.11 || command -v python3); \
	  if ! $$py -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" != 0 ]; then echo "venv failed: install python3-venv (Debian) and retry" >&2; exit 1; fi; \
	    apt-get update -qq && apt-get install -y -qq python3-venv; \
	    $$py -m venv $(VENV); \
	  fi; \
	fi
	@if [ "$$($(BIN)/uv --version 2>/dev/null | cut -d' ' -f2)" != "$(UV_VERSION)" ]; then \
	  $(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; \
	fi
	$(BIN)/uv sync --frozen --inexact --quiet
	@touch $@

up: $(STAMP)
	$(BIN)/shoal up $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The end-to-end tests drive the real docker CLI; Debian's docker.io provides it.
docker-cli:
	@if ! command -v docker >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then echo "docker CLI missing and not root: install docker.io" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; \
	fi

test: lint docker-cli
	$(BIN)/pytest -q -n 2 --dist loadfile tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.replay $(BENCH_ARGS)
