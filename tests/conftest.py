"""Shared helpers: run an inline scenario through the real engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from simulator.engine.scenario import Scenario
from simulator.engine.simulation import Config, Result, run


def simulate(main: Callable[[Scenario], Awaitable[None]], **config: Any) -> Result:
    """Run ``main`` as the workload driver of a fresh simulation and return the result."""
    return run(Config(workload="inline-test", **config), main=main)


pytest_plugins = ["pytester"]


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
