"""`pct`: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

Each actor gets a random distinct priority; the highest-priority enabled actor
runs.  At d-1 change points drawn uniformly over the expected run length, the
running actor drops below every initial priority.  A bug of depth d is found
with probability at least 1/(n k^(d-1)).

Guest quanta end in a yield; as in Shuttle, a yield drops the actor's
priority below every other, otherwise a hart spinning in guest code (which
never finishes) would starve the workload driver once a change point has
lowered the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.strategies.base import Strategy

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor


class PctStrategy(Strategy):
    name = "pct"

    def __init__(self, seed: int, depth: int = 3, horizon: int = 100_000) -> None:
        super().__init__(seed)
        if depth < 1:
            raise ValueError("pct depth must be at least 1")
        self.depth = depth
        self.horizon = horizon

    def new_execution(self, actors: list[Actor]) -> None:
        super().new_execution(actors)
        rng = self.sched
        n = len(actors)
        order = list(range(n))
        rng.shuffle(order)
        # priorities above `depth` so change points can go below them
        self.priority = [0] * n
        for rank, idx in enumerate(order):
            self.priority[idx] = self.depth + 1 + rank
        self.change_points = sorted(rng.randrange(1, self.horizon) for _ in range(self.depth - 1))
        self.changes_done = 0
        self.low = self.depth  # next priority given at a change point

    def on_yield(self, actor: Actor) -> None:
        self.priority[actor.index] = min(self.priority) - 1

    def next_actor(self, current: Actor | None, enabled: list[Actor], seq: int) -> tuple[Actor, int]:
        cps = self.change_points
        while self.changes_done < len(cps) and seq >= cps[self.changes_done]:
            self.changes_done += 1
            if current is not None:
                self.priority[current.index] = self.low
                self.low -= 1
        prio = self.priority
        best = enabled[0]
        for a in enabled[1:]:
            if prio[a.index] > prio[best.index]:
                best = a
        if self.changes_done < len(cps):
            run = max(1, cps[self.changes_done] - seq)
        else:
            run = 1 << 30
        return best, run

    def describe(self) -> str:
        return f"pct(depth={self.depth})"
