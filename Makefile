# One entry point for people and CI: make run | make test | make lint | make bench
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ./data
APT_PACKAGES := dcmtk nginx chromium openssl

.PHONY: run test lint bench venv deps test-deps system-deps samples clean ohif

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime dependencies (re-run when pyproject.toml changes).
$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml $(VENV)/.deps
	$(BIN)/pip install -q -e '.[test]'
	touch $@

deps: $(VENV)/.deps
test-deps: $(VENV)/.test-deps system-deps

# Debian packages the tests use as real peers; installs only what is missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

## Start the server with the viewer on http://127.0.0.1:8080 (SQLite + files under ./data).
## Import the bundled samples first with: make run IMPORT=../shared/dicom-samples
run: deps
	@if [ -n "$(IMPORT)" ]; then $(BIN)/lightbox import --data $(DATA) $(IMPORT); fi
	$(BIN)/lightbox serve --host 127.0.0.1 --port 8080 --data $(DATA)

## Install everything the tests need, then run them.
test: test-deps
	$(BIN)/pytest -q -p no:cacheprovider tests

lint: test-deps
	$(BIN)/ruff check server tests benchmarks
	$(BIN)/mypy --strict server
	$(BIN)/lint-imports

bench: test-deps
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

## The OHIF Viewer (npm @ohif/app, pinned) for `lightbox serve --ohif`, served at /ohif/.
ohif: ohif-dist/.ohif-version
ohif-dist/.ohif-version: scripts/install-ohif.sh
	scripts/install-ohif.sh ohif-dist
