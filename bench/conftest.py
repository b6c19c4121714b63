"""pytest configuration for the benchmark suite in bench/ (never part of `pytest tests/`).

How to run (from the repository root, in a venv with the bench extras: `make bench` installs them
into .venv, or use any venv with faiss-cpu, hnswlib, pytest-benchmark):

    pytest bench/                      # correctness only: recall asserted, each benchmark run once
                                       # (as with --benchmark-disable, which is the default here)
    pytest bench/ --benchmark-enable   # the timings: single-query latency of each engine
    pytest bench/ --benchmark-enable --benchmark-columns=mean,median,ops --benchmark-sort=mean

The project's pyproject.toml sets `testpaths = ["tests"]`, so the normal test run does not
collect this folder. Warnings are not turned into errors here (third-party libraries emit
DeprecationWarnings on import).
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Default to --benchmark-disable unless --benchmark-enable was given (pytest-benchmark's own
    # pytest_configure runs trylast, after this one, and reads the option then).
    if hasattr(config.option, "benchmark_disable") and not config.getoption("benchmark_enable", False):
        config.option.benchmark_disable = True
    # pyproject's filterwarnings = ["error"] is meant for tests/; later lines take precedence.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore::PendingDeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore::UserWarning")
