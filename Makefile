# Two commands do all the set-up: `make demo` (main job) and `make test` (the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_LS := .venv-ls
LABEL_STUDIO_VERSION := 1.23.2
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: setup setup-ls system-deps lint test test-fast bench demo rank clean image-test

$(VENV)/.installed: pyproject.toml requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) --upgrade pip
	$(VENV)/bin/pip install $(PIP_QUIET) -r requirements.txt -e '.[dev,dicom,backend,report]' 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/python -c "import examine, torch, timm" 
	touch $@

$(VENV_LS)/.installed:
	test -x $(VENV_LS)/bin/python || $(PYTHON) -m venv $(VENV_LS)
	$(VENV_LS)/bin/pip install $(PIP_QUIET) label-studio==$(LABEL_STUDIO_VERSION) 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV_LS)/bin/python -c "import label_studio"
	touch $@

setup: $(VENV)/.installed system-deps
setup-ls: $(VENV_LS)/.installed

# Debian packages used by the tests (Fashion-MNIST). Needs root; skipped when present.
system-deps:
	@bash scripts/system-deps.sh

# The linter, the formatter's check and the type checker run before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup setup-ls lint
	$(VENV)/bin/python -m pytest -q

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not e2e and not slow"

# Label Studio + the backend on 127.0.0.1:8080 / :9090 with real medical tiles (Ctrl-C stops both).
# Options: make demo ARGS="--tiles 100 --port 8081 --once"
demo: setup setup-ls
	$(VENV)/bin/python scripts/demo.py $(ARGS)

# Builds backend/Dockerfile (CPU variant) and runs docker-compose.yml for real: Label Studio + the backend on a
# project of real tiles, then checks ranking, /next, non-root, restart, logs. Needs root; minutes; not in `make test`.
# Installs and starts a Docker engine if none runs (scripts/image_test.py says how).
image-test:
	$(PYTHON) scripts/image_test.py

bench: setup
	$(VENV)/bin/python benchmarks/bench_scoring.py

clean:
	rm -rf $(VENV) $(VENV_LS) .pytest_cache
