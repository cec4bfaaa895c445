"""`timed`: the actor whose next action is earliest in virtual time runs (see TimedConductor).

Harts run in parallel in virtual time, so durations mean something: a
hypercall's, the p2m lock's hold, a vCPU's stall under incoming fences.  The
clocks are the conductor's; this strategy only picks: the least clock, a tie
broken by the seeded ``schedule`` stream, and it says until when the pick may
run (``horizon``, the next enabled actor's clock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.strategies.base import Strategy

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor


class TimedStrategy(Strategy):
    name = "timed"

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.horizon = 0

    def next_actor(self, current: Actor | None, enabled: list[Actor], seq: int) -> tuple[Actor, int]:
        if len(enabled) == 1:
            self.horizon = 1 << 62
            return enabled[0], 1 << 30
        least = min(a.t for a in enabled)
        first = [a for a in enabled if a.t == least]
        nxt = first[0] if len(first) == 1 else first[self.sched.randrange(len(first))]
        self.horizon = min(a.t for a in enabled if a is not nxt)
        return nxt, 1 << 30
