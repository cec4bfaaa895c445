"""`random`: a seeded uniform choice among enabled actors, held for a random run.

Switching on every step would make long hypervisor sequences (a whole
``p2m_free_subtree``) almost never overlap a remote walk at the interesting
point; runs of geometric-ish length give both short and long interleavings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.strategies.base import Strategy

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor


class RandomStrategy(Strategy):
    name = "random"

    def __init__(self, seed: int, max_run: int = 200) -> None:
        super().__init__(seed)
        self.max_run = max_run

    def next_actor(self, current: Actor | None, enabled: list[Actor], seq: int) -> tuple[Actor, int]:
        rng = self.sched
        nxt = enabled[0] if len(enabled) == 1 else enabled[rng.randrange(len(enabled))]
        # a third of the runs are short (1..8), the rest long (1..max_run)
        run = 1 + rng.randrange(8 if rng.random() < 0.3 else self.max_run)
        return nxt, run
