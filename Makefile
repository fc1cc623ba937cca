# elefast's tasks. `make help` lists them. Each creates .venv and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The server most of the project's own tests use; override by exporting ELEFAST_DATABASE_URL.
# (The provisioning tests and `make demo` use the throwaway local server instead.)
TEST_DATABASE_URL ?= $(or $(ELEFAST_DATABASE_URL),postgresql://postgres@127.0.0.1:5432/postgres)

.PHONY: help install demo test test-python reliability lint typecheck bench bench-startup bench-fixture bench-app bench-exit bench-upstream docs clean

# Upstream elefast's examples/fastapi-async folder, in a clone of its repository, for bench-upstream
# (git clone https://github.com/NiclasvanEyk/elefast; UPSTREAM_EXAMPLE=../elefast/examples/fastapi-async).
UPSTREAM_EXAMPLE ?=

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all,test,dev,docs]'
	touch $@

install: $(VENV)/.installed  ## Create .venv with elefast (editable) and every extra

demo: install  ## Run the example app's unittest suite on the throwaway local server
	env -u ELEFAST_DATABASE_URL $(PY) -m unittest discover -v -s examples/legacy_app/tests -t .

test: install  ## Run the whole test suite (needs PostgreSQL at ELEFAST_DATABASE_URL)
	ELEFAST_DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m tests

# The suite on another Python, in a venv of its own: make test-python VERSION=3.9
# (pyenv's newest VERSION.x; CI runs it for the oldest and newest Python setup.cfg supports).
VERSION ?= 3.9
test-python:  ## Run the test suite on another Python from pyenv (VERSION=3.9), in .venv-VERSION
	$(MAKE) test PYTHON=$$(ls -d $$HOME/.pyenv/versions/$(VERSION).*/bin/python | sort -V | tail -n 1) VENV=.venv-$(VERSION)

reliability: install  ## Fault, bad-input, security and parallel-runner scenarios; prints a table (~2 min)
	$(PY) -m tests.reliability

lint: install  ## ruff
	$(PY) -m ruff check elefast tests benchmarks examples

typecheck: install  ## mypy (strict)
	$(PY) -m mypy

bench: install  ## Every speed figure in one run, each beside its physical limit (~20 minutes)
	$(PY) -m pip install --quiet --disable-pip-version-check pytest-postgresql
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/bench.py
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/throughput.py
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/clone_engines.py
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/slow_clones.py
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/startup.py
	$(PY) benchmarks/app_engines.py
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/clone_curve.py --svg docs/pages/img/per-test-cost.svg
	$(PY) benchmarks/exit_time.py --url $(TEST_DATABASE_URL)
	$(PY) benchmarks/fixture_api.py --local
	$(MAKE) bench-upstream

bench-startup: install  ## Time the no-setup server: local server start, first test, Docker
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/startup.py

bench-fixture: install  ## create_database() per test from a pytest fixture: this package vs upstream, disk and tmpfs
	$(PY) benchmarks/fixture_api.py --local

bench-exit: install  ## How long a process takes to end after its last test (disk server, fsync on), dropped behind or here
	$(PY) benchmarks/exit_time.py --url $(TEST_DATABASE_URL)

bench-upstream: install  ## Upstream's fastapi-async example suite on upstream and on this package (UPSTREAM_EXAMPLE=path)
	@if [ -z "$(UPSTREAM_EXAMPLE)" ]; then \
		echo "bench-upstream: set UPSTREAM_EXAMPLE to examples/fastapi-async in a clone of https://github.com/NiclasvanEyk/elefast"; \
	else \
		$(PY) benchmarks/upstream_example.py --example $(UPSTREAM_EXAMPLE) --local; \
	fi

bench-app: install  ## Transaction mode with the app's own engine vs plain transaction mode vs the rollback floor
	env -u ELEFAST_DATABASE_URL $(PY) benchmarks/app_engines.py

docs: install  ## Build the documentation site into build/site (mkdocs, strict: any warning fails)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet -f docs/mkdocs.yml
	@echo "Built build/site/index.html"

clean:  ## Remove the venv and build debris
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
