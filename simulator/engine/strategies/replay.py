"""`replay`: follow a recorded list of scheduling decisions exactly.

The decisions are (seq, actor index) pairs taken from a run's log; data
choices are re-derived from the same seed, so the whole run repeats.
Past the end of the list, or if a recorded actor is not enabled (the
run has diverged), the seeded random strategy takes over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.strategies.randomized import RandomStrategy

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor


class ReplayStrategy(RandomStrategy):
    name = "replay"

    def __init__(self, seed: int, decisions: list[tuple[int, int]]) -> None:
        super().__init__(seed)
        self.decisions = decisions
        self.pos = 0
        self.diverged_at: int | None = None

    def next_actor(self, current: Actor | None, enabled: list[Actor], seq: int) -> tuple[Actor, int]:
        if self.pos < len(self.decisions):
            at, idx = self.decisions[self.pos]
            if seq >= at:
                self.pos += 1
                for a in enabled:
                    if a.index == idx:
                        return a, self._run_to_next(seq)
                if self.diverged_at is None:
                    self.diverged_at = seq
            elif current is not None and current in enabled:
                return current, at - seq
        return super().next_actor(current, enabled, seq)

    def _run_to_next(self, seq: int) -> int:
        if self.pos < len(self.decisions):
            return max(1, self.decisions[self.pos][0] - seq)
        return 1 << 30
