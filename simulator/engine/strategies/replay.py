"""`replay`: follow a recorded list of scheduling decisions.

The decisions are (seq, actor index) pairs: the conductor's switches.  Between
them the current actor keeps running; if it blocks where the list says
nothing, the runnable actor with the lowest index takes over (the *sticky*
fallback, which adds as few switches as possible).  An exact recording never
needs the fallback; a shrunk one relies on it.  Data choices are re-derived
from the same seed, so the whole run repeats.

If a recorded actor cannot run at its step, the run has diverged: the first
such step is kept in ``diverged_at`` and the fallback takes over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.strategies.base import Strategy

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor


class ReplayStrategy(Strategy):
    """``fallback``: ``exact`` keeps the current actor where the list says nothing (and the
    lowest-index runnable actor when it blocks) - right for a recorded run; ``fair`` also
    moves on, round robin, at every yield and block - what a shrunk schedule runs with, so
    that dropping a preemption does not starve the workload driver."""

    name = "replay"

    def __init__(self, seed: int, decisions: list[tuple[int, int]], fallback: str = "exact") -> None:
        super().__init__(seed)
        if fallback not in ("exact", "fair"):
            raise ValueError(f"unknown replay fallback {fallback!r}")
        self.decisions = decisions
        self.fallback = fallback
        self.record_stays = fallback == "fair"
        self.pos = 0
        self.diverged_at: int | None = None
        self._yielded: Actor | None = None

    def on_yield(self, actor: Actor) -> None:
        self._yielded = actor

    def next_actor(self, current: Actor | None, enabled: list[Actor], seq: int) -> tuple[Actor, int]:
        yielded, self._yielded = self._yielded, None
        decisions = self.decisions
        while self.pos < len(decisions) and seq >= decisions[self.pos][0]:
            idx = decisions[self.pos][1]
            self.pos += 1
            for a in enabled:
                if a.index == idx:
                    return a, self._run_to_next(seq)
            if self.diverged_at is None:
                self.diverged_at = seq
        runnable = current is not None and current in enabled
        if runnable and not (self.fallback == "fair" and yielded is current and len(enabled) > 1):
            return current, self._run_to_next(seq)  # type: ignore[return-value]
        if self.fallback == "fair" and current is not None:
            after = [a for a in enabled if a.index > current.index and a is not current]
            return (after[0] if after else min(enabled, key=lambda a: a.index)), self._run_to_next(seq)
        return min(enabled, key=lambda a: a.index), self._run_to_next(seq)

    def _run_to_next(self, seq: int) -> int:
        if self.pos < len(self.decisions):
            return max(1, self.decisions[self.pos][0] - seq)
        return 1 << 30
