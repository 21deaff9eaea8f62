# One entry point for newcomers and CI:  make test   (installs everything, lints, runs every test)
#                                         make serve  (the service on the committed models, port 8000)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps lint test test-fast serve bench docker-base clean

$(STAMP): requirements.txt requirements-train.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Browser and Docker engine for the end-to-end tests (Debian, as root; skipped elsewhere with a message).
system-deps:
	bash scripts/system-deps.sh

lint: install
	$(VENV)/bin/ruff check app training tests benchmarks stress
	$(VENV)/bin/ruff format --check app training tests benchmarks stress
	$(VENV)/bin/mypy app training benchmarks stress

test: install system-deps lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not e2e"

serve: install
	$(PY) -m app

bench: install
	$(PY) -m benchmarks.serving

docker-base:
	bash scripts/docker-offline-base.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
