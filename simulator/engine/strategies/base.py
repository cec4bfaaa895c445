"""What every strategy is: start an execution, pick the next actor, hand out randomness.

The shape is AWS Shuttle's.  Data choices (which GFN a guest touches, which
TLB entry is evicted, whether a pending fence is taken now) also come from
here, from independent seeded streams, so a change in one kind of choice
does not shift the others.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.engine.conductor import Actor


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 64-bit seed per (run seed, purpose); never Python's salted hash()."""
    digest = hashlib.blake2b(f"{seed}/{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class Strategy:
    name = "base"
    record_stays = False  # does the conductor record a pick that keeps the yielding actor?

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}
        self.sched = self.stream("schedule")

    def stream(self, purpose: str) -> random.Random:
        """The random stream for one purpose (e.g. ``guest/hart2``, ``tlb/hart0``)."""
        rng = self._streams.get(purpose)
        if rng is None:
            rng = random.Random(derive_seed(self.seed, purpose))
            self._streams[purpose] = rng
        return rng

    def new_execution(self, actors: list[Actor]) -> None:
        self.actors = actors

    def next_actor(self, current: Actor | None, enabled: list[Actor], seq: int) -> tuple[Actor, int]:
        """Pick who runs next and for how many steps before asking again."""
        raise NotImplementedError

    def on_yield(self, actor: Actor) -> None:
        """The actor reached a natural switch point (end of a guest quantum)."""

    def describe(self) -> str:
        return self.name
