"""Options every test suite of the repository shares (the core's and the plugins').

``--long-faults`` (or ``OBJIO_LONG_FAULTS=1``) runs the fault suite with its long trial counts: at
least 50 killed writers per backend and 10,000 fuzzed files. CI runs the short counts. When
``OBJIO_RELIABILITY_LOG`` names a file, fault tests append what they tried and saw to it, one JSON
object a line; ``python tools/reliability_report.py`` turns that into docs/reliability.rst.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

LONG_FAULTS_ENV = "OBJIO_LONG_FAULTS"
RELIABILITY_LOG_ENV = "OBJIO_RELIABILITY_LOG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long-faults",
        action="store_true",
        default=False,
        help="run the fault suite with its long trial counts (see docs/reliability.rst)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Test modules read the environment when hypothesis settings are built, at import; child
    # processes of fault tests inherit it.
    if config.getoption("--long-faults"):
        os.environ[LONG_FAULTS_ENV] = "1"


def long_faults() -> bool:
    """Whether this run asked for the long fault trials."""
    return os.environ.get(LONG_FAULTS_ENV, "") not in ("", "0")


@pytest.fixture
def fault_trials() -> Callable[[int, int], int]:
    """``fault_trials(short, long)``: how many trials to run, the short count in CI."""
    return lambda short, long: long if long_faults() else short


@pytest.fixture
def fault_log(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``fault_log(fault=..., trials=..., **outcome)``: record a fault test's counts for the reliability page."""

    def record(**fields: object) -> None:
        path = os.environ.get(RELIABILITY_LOG_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(json.dumps({"test": request.node.nodeid, **fields}) + "\n")

    return record
