# Two commands do all the set-up: `make demo` (main job) and `make test` (the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_LS := .venv-ls
LABEL_STUDIO_VERSION := 1.23.2

.PHONY: envs setup setup-ls system-deps lint test test-fast bench demo rank clean image-test

$(VENV)/.installed: pyproject.toml requirements.txt
	@echo "[.venv] the library and the backend: torch (with CUDA libraries, about 6 GB), timm, scikit-learn, ..."
	@PYTHON=$(PYTHON) bash scripts/install_env.sh $(VENV) "import examine, torch, timm" \
		-r requirements.txt -e '.[dev,dicom,backend,report]'
	@touch $@

$(VENV_LS)/.installed:
	@echo "[.venv-ls] Label Studio $(LABEL_STUDIO_VERSION) in its own environment (about 1 GB)"
	@PYTHON=$(PYTHON) bash scripts/install_env.sh $(VENV_LS) "import label_studio" label-studio==$(LABEL_STUDIO_VERSION)
	@touch $@

# Both environments, side by side (they are independent).
envs:
	@$(MAKE) --no-print-directory -j2 $(VENV)/.installed $(VENV_LS)/.installed

setup: $(VENV)/.installed
setup-ls: $(VENV_LS)/.installed

# Debian packages used by the tests only (Fashion-MNIST, Chromium for the browser test). Needs root; skipped when
# present. `make demo` does not need them.
system-deps:
	@bash scripts/system-deps.sh

# The linter, the formatter's check and the type checker run before the tests.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: envs system-deps lint
	$(VENV)/bin/python -m pytest -q

test-fast: setup system-deps
	$(VENV)/bin/python -m pytest -q -m "not e2e and not slow"

# Label Studio + the backend on 127.0.0.1:8080 / :9090 with real medical tiles (Ctrl-C stops both).
# Options: make demo ARGS="--tiles 100 --port 8081 --once"
demo: envs
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
