"""Shared helpers: run an inline scenario through the real engine."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, Result, run


def simulate(main: Callable[[Scenario], Awaitable[None]], **config: Any) -> Result:
    """Run ``main`` as the workload driver of a fresh simulation and return the result."""
    return run(Config(workload="inline-test", **config), main=main)


pytest_plugins = ["pytester"]

# the xdist group of the tests that use ``tiny_study`` (test_schema's outputs, test_study's report): one
# worker makes it, once
TINY_STUDY_GROUP = "schema"


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """``p2msim study table-free --grid tiny --json --jobs 1 -o DIR``: what it printed, and DIR (its report).

    The tiny study is 25-30 s of runs; its JSON is one of the outputs test_schema holds to a schema and its
    report is what test_study reads, so both take it from this one run of the command.
    """
    out = tmp_path_factory.mktemp("tiny-study")
    p = subprocess.run(
        [sys.executable, "-m", "simulator", "study", "table-free", "--grid", "tiny", "--json", "--jobs", "1",
         "-o", str(out)],
        cwd=out, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return p.stdout, out


def pytest_configure(config: Any) -> None:
    """Byte-compile the package once, in the controller, before any worker starts.

    Many tests run p2msim in a fresh process; with PYTHONDONTWRITEBYTECODE set
    (as on some CI machines) each of those would compile every module again
    (0.15 s a process): Python still reads .pyc files it is told not to write.
    """
    if hasattr(config, "workerinput"):
        return
    import compileall
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for tree in ("simulator", "workloads"):
        compileall.compile_dir(root / tree, quiet=1)
