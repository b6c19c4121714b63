# Lookalike: one entry point for people and CI.
#   make serve   set everything up and start the HTTP server on ./data with the demo collections
#   make test    set everything up (virtual environment, release build of the Rust core, all
#                dependencies) and run the whole test suite: cargo tests, lint, pytest.
#   make demo    set everything up and build a demo collection in ./data, with example queries.
#   make bench   the benchmarks (long; not part of `make test`), see bench/README.md.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export CARGO_TERM_COLOR ?= never

.PHONY: all setup test test-rust test-python lint bench demo serve clean

all: test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'maturin>=1.7,<2'

PLUGINS := plugins/generic plugins/products plugins/colors plugins/matching
# The README's worked example of a third-party collection type; installed so its tests run.
EXAMPLES := examples/plugin-thumbnail

# Builds the core in release mode and installs `lookalike` (editable) with its test extras,
# then the built-in collection types (each its own distribution, found through its entry point).
setup: $(VENV)/bin/python
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --extras test,distributed --quiet
	$(PY) -m pip install --quiet 'setuptools>=70.1'
	$(PY) -m pip install --quiet --no-deps --no-build-isolation $(addprefix -e ,$(PLUGINS) $(EXAMPLES))
	$(PY) -m pip install --quiet --no-build-isolation -e 'server[test]'
	@# Debian's chromium for the web page's browser tests, installed when missing and we are
	@# root; otherwise those tests skip (and fail under CI=true).
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }; }; } || \
		echo "chromium is not installed (needs root: apt-get install chromium); the browser tests will skip"

test-rust:
	cargo test --release --manifest-path core/Cargo.toml

lint: setup
	$(VENV)/bin/ruff check python tests bench plugins examples server
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest lookalike._core --allowlist .stubtest-allowlist
	$(VENV)/bin/lint-imports

test-python: setup
	$(PY) -m pytest

test: setup test-rust lint test-python

bench: $(VENV)/bin/python
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --extras test,bench --quiet
	$(PY) bench/run_ann.py --n 100000 --out bench/RESULTS.md

demo: setup
	$(PY) -m lookalike.demo ./data

# Loopback URLs are allowed so the demo can ingest images served from this machine.
serve: setup
	$(PY) -m lookalike serve --data ./data --demo --allow-private-urls

clean:
	rm -rf $(VENV) target
