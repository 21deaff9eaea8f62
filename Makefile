# One entry point for newcomers and CI:  make test   (installs everything, lints, runs every test)
#                                         make serve  (the service on the committed models, port 8000)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps lint audit test test-fast serve bench docker-base lock clean protos

# Dependencies from the hashed lock file, then the project itself (editable, no dependency resolution).
$(STAMP): requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Regenerate the lock files from pyproject.toml (pip-tools). The dev extra names the project itself
# (to include train and bench); that self-reference is not a pinnable package, so it is dropped.
LOCK := $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --strip-extras
lock: install
	$(LOCK) -o requirements.lock pyproject.toml
	$(LOCK) --extra dev -o requirements-dev.lock pyproject.toml
	$(PY) scripts/drop_self_reference.py requirements-dev.lock

# Known vulnerabilities in the locked runtime dependencies (strict: a package that cannot be checked fails).
audit: install
	bash scripts/audit.sh

# Browser and Docker engine for the end-to-end tests (Debian, as root; skipped elsewhere with a message).
system-deps:
	bash scripts/system-deps.sh

# The gRPC code (app/protocols/grpc/generated) from the vendored .proto files, with grpcio-tools' protoc.
protos: install
	$(PY) scripts/protos.py

lint: install
	$(VENV)/bin/ruff check app training tests benchmarks stress scripts/protos.py
	$(VENV)/bin/ruff format --check app training tests benchmarks stress scripts/protos.py
	$(VENV)/bin/mypy app training benchmarks stress scripts/protos.py
	$(VENV)/bin/lint-imports
	$(PY) scripts/protos.py --check

# The slowest tests are listed at the end: CI has a 30-minute budget.
test: install system-deps lint audit
	$(PY) -m pytest --durations=25

# Unit and API tests only: no server process, no training, no Docker or browser (tests/unit, tests/api).
test-fast: install
	$(PY) -m pytest tests/unit tests/api

serve: install
	$(PY) -m app

bench: install
	$(PY) -m benchmarks.serving

docker-base:
	bash scripts/docker-offline-base.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
