"""Scheduling strategies, one per module, chosen by name."""

from __future__ import annotations

from simulator.engine.strategies.base import Strategy, derive_seed
from simulator.engine.strategies.pct import PctStrategy
from simulator.engine.strategies.randomized import RandomStrategy
from simulator.engine.strategies.replay import ReplayStrategy
from simulator.engine.strategies.timed import TimedStrategy

STRATEGIES = {
    "random": "seeded uniform choice among runnable actors, held for random run lengths",
    "pct": "probabilistic concurrency testing: random priorities, depth-1 change points",
    "timed": "virtual time: the actor whose next action is earliest runs (costs from --costs); reports durations",
    "uncontrolled": "no conductor: plain checkpoints, the event loop decides (not reproducible; for comparison)",
}


def make_strategy(name: str, seed: int, *, pct_depth: int = 3, horizon: int = 100_000) -> Strategy:
    if name == "random":
        return RandomStrategy(seed)
    if name == "pct":
        return PctStrategy(seed, depth=pct_depth, horizon=horizon)
    if name == "timed":
        return TimedStrategy(seed)
    if name == "uncontrolled":
        return RandomStrategy(seed)  # only its data streams are used
    raise KeyError(name)


__all__ = [
    "STRATEGIES",
    "PctStrategy",
    "RandomStrategy",
    "ReplayStrategy",
    "Strategy",
    "TimedStrategy",
    "derive_seed",
    "make_strategy",
]
