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
