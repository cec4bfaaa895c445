"""The conductor: one simulated actor runs at a time, and the strategy picks which.

Reproducibility cannot rest on trio's or asyncio's scheduler (trio shuffles
its run batches from an unseeded source), so every actor - each hart task and
the workload driver - parks on its own event and only the conductor sets one.

Invariants:

* Exactly one actor is *current*; every other actor is parked on its event,
  finished, or not yet started.  ``step`` asserts the caller is current, so a
  task the event loop ran behind the conductor's back is caught at once.
* ``seq`` counts atomic actions.  It is the logical time of every log line.
* The fast path - the strategy keeps the current actor - is a few integer
  operations and no await; it is what makes a TLB hit cost about a microsecond.
  ``run_left`` is how many more actions the current actor may take before the
  strategy is asked again; hot loops may consume it inline (see ``riscv.hart``).
* Anything that can make a parked actor runnable (a lock release, a message,
  an acknowledgement) calls ``notify``, which forces the next ``step`` to ask
  the strategy again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import sniffio
import trio
from anyio.lowlevel import checkpoint

from simulator.engine.timing import Timing
from simulator.riscv.costs import ZERO

if TYPE_CHECKING:
    from simulator.engine.strategies import Strategy

Cond = Callable[[], bool]


class SimulationStop(Exception):
    """Raised inside the current actor to end the run (budget, violation stop)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Deadlock(Exception):
    """No actor can run while some have not finished."""


class ConductorError(Exception):
    """The conductor's invariant broke: a bug in p2msim, not in the model."""


class _TrioBaton:
    """A one-shot wake-up for one parked actor: trio's own park/reschedule, no Event machinery."""

    __slots__ = ("_set", "_task")

    def __init__(self) -> None:
        self._set = False
        self._task: Any = None

    async def wait(self) -> None:
        if self._set:
            return
        self._task = trio.lowlevel.current_task()

        def abort(_raise_cancel: Any) -> Any:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def set(self) -> None:
        self._set = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


class _AsyncioBaton:
    """The same on asyncio: one future."""

    __slots__ = ("_fut", "_set")

    def __init__(self) -> None:
        self._set = False
        self._fut: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        if self._set:
            return
        self._fut = asyncio.get_running_loop().create_future()
        await self._fut

    def set(self) -> None:
        self._set = True
        fut, self._fut = self._fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)


Baton = _TrioBaton | _AsyncioBaton


def new_baton() -> Baton:
    """Actors park on the cheapest primitive of the running backend (anyio picks the backend)."""
    return _TrioBaton() if sniffio.current_async_library() == "trio" else _AsyncioBaton()


class Actor:
    __slots__ = ("cond", "done", "event", "index", "name", "started", "t", "waiting_for", "wake_at", "woken")

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index
        self.event: Baton | None = None
        self.cond: Cond | None = None  # set while blocked
        self.waiting_for = ""
        self.done = False
        self.started = False
        self.wake_at = 0  # for timed waits; 0 = none
        self.t = 0  # virtual cycles at which its next action starts (the timed strategy; else 0)
        self.woken = False  # blocked, and its wait has ended (TimedConductor brought its clock up)

    def runnable(self) -> bool:
        if self.done:
            return False
        cond = self.cond
        return cond is None or cond()

    def __repr__(self) -> str:
        return f"Actor({self.name})"


class Conductor:
    def __init__(self, strategy: Strategy, budget: int) -> None:
        self.strategy = strategy
        self.budget = budget
        self.seq = 0
        self.run_left = 0
        self.dirty = True
        self.actors: list[Actor] = []
        self.current: Actor | None = None
        self.switches = 0
        self.stop_reason: str | None = None
        self.next_timer = 1 << 62
        self.decisions: list[tuple[int, int]] = []  # (seq, actor index) at each switch
        self._baton_cls: type[_TrioBaton] | type[_AsyncioBaton] | None = None
        # per decision: was it a preemption (the previous actor could have gone on)?  Switches
        # forced by blocking are not choices; preemptions are what a schedule really decides.
        self.preemptive: list[bool] = []
        self.yielding: Actor | None = None  # the actor whose yield asked for this pick

    # -- set-up ---------------------------------------------------------------

    def add_actor(self, name: str) -> Actor:
        actor = Actor(name, len(self.actors))
        self.actors.append(actor)
        return actor

    def _baton(self) -> Baton:
        if self._baton_cls is None:
            self._baton_cls = type(new_baton())
        return self._baton_cls()

    async def run_actor(self, actor: Actor, body: Callable[[], Awaitable[None]]) -> None:
        """Run ``body`` as ``actor``: wait for the first turn, run, hand over."""
        if actor.event is None:
            actor.event = self._baton()
        await actor.event.wait()
        actor.started = True
        try:
            await body()
        finally:
            actor.done = True
            actor.cond = None
        self._hand_over(actor)

    def begin(self) -> None:
        """Pick the first actor; called once after every actor is registered."""
        self.strategy.new_execution(self.actors)
        for a in self.actors:
            if a.event is None:
                a.event = self._baton()
        first = self._pick(None)
        self.current = first
        assert first.event is not None
        first.event.set()

    # -- the hot path -----------------------------------------------------------

    async def step(self, actor: Actor) -> None:
        """One atomic action of ``actor`` follows; maybe let another actor go first."""
        if actor is not self.current:
            raise ConductorError(f"{actor.name} ran while {self.current} was current")
        self.seq += 1
        self.run_left -= 1
        if self.run_left > 0 and not self.dirty:
            return
        await self._reschedule(actor)

    async def yield_(self, actor: Actor) -> None:
        """A natural switch point (end of a guest quantum): the strategy may deprioritise."""
        self.strategy.on_yield(actor)
        self.dirty = True
        self.yielding = actor
        await self.step(actor)
        self.yielding = None

    def notify(self) -> None:
        self.dirty = True

    def charge(self, cycles: int) -> None:
        """Virtual time: nothing to charge on a conductor without a clock."""

    def held(self, name: str, cycles: int) -> None:
        """A lock's write hold ended (its length is reported by timed runs)."""

    costs = ZERO
    timed = False  # does this conductor keep virtual time (TimedConductor)?
    horizon = 1 << 62  # the clock the current actor may run up to (TimedConductor's; unbounded here)

    def now(self) -> int:
        """The virtual time of the running action, in cycles (0 when the run is not timed)."""
        return 0

    # -- blocking ---------------------------------------------------------------

    async def block(self, actor: Actor, cond: Cond, what: str) -> None:
        """Park ``actor`` until ``cond()`` holds and the strategy picks it."""
        actor.cond = cond
        actor.waiting_for = what
        try:
            self.dirty = True
            await self.step(actor)
            if not cond():
                raise ConductorError(f"{actor.name} resumed while blocked on {what}")
        finally:
            actor.cond = None
            actor.waiting_for = ""

    async def sleep_until(self, actor: Actor, seq: int, what: str = "logical time") -> None:
        if self.seq >= seq:
            await self.step(actor)
            return
        actor.wake_at = seq
        self.next_timer = min(self.next_timer, seq)
        try:
            await self.block(actor, lambda: self.seq >= seq, f"{what} (step {seq})")
        finally:
            actor.wake_at = 0
            self._recompute_timer()

    def _recompute_timer(self) -> None:
        t = 1 << 62
        for a in self.actors:
            if a.wake_at and not a.done and a.wake_at < t:
                t = a.wake_at
        self.next_timer = t

    # -- scheduling ---------------------------------------------------------------

    def _pick(self, current: Actor | None) -> Actor:
        if self.seq >= self.budget:
            self.stop_reason = "budget"
            raise SimulationStop("budget")
        enabled = [a for a in self.actors if a.runnable()]
        if not enabled and self.seq < self.next_timer < (1 << 62):
            # everyone idle but a sleeper: logical time jumps to its wake-up
            if self.next_timer >= self.budget:
                self.seq = self.budget
                self.stop_reason = "budget"
                raise SimulationStop("budget")
            self.seq = self.next_timer
            enabled = [a for a in self.actors if a.runnable()]
        if not enabled:
            raise Deadlock(self.describe_waits())
        nxt, run = self._choose(current, enabled)
        limit = min(self.budget, self.next_timer) - self.seq
        if limit < 1:
            limit = 1
        self.run_left = run if run < limit else limit
        self.dirty = False
        if nxt is not current:
            self.switches += 1
            self.decisions.append((self.seq, nxt.index))
            # a switch at a yield is the fair thing to do, not a preemption (as in CHESS)
            self.preemptive.append(current is not None and current in enabled and self.yielding is not current)
        elif current is not None and self.yielding is current and self.strategy.record_stays:
            # a fair replay moves on at every yield, so staying there is a decision to record
            self.decisions.append((self.seq, nxt.index))
            self.preemptive.append(False)
        return nxt

    def _choose(self, current: Actor | None, enabled: list[Actor]) -> tuple[Actor, int]:
        return self.strategy.next_actor(current, enabled, self.seq)

    async def _reschedule(self, actor: Actor) -> None:
        nxt = self._pick(actor)
        if nxt is actor:
            return
        self.current = nxt
        my_event = self._baton()
        actor.event = my_event
        assert nxt.event is not None
        nxt.event.set()
        await my_event.wait()
        if self.current is not actor:
            raise ConductorError(f"{actor.name} woke while {self.current} is current")

    def _hand_over(self, actor: Actor) -> None:
        if all(a.done for a in self.actors):
            self.current = None
            return
        self.seq += 1  # finishing is an action: the hand-over decision gets its own step
        try:
            nxt = self._pick(None)
        except SimulationStop:
            # the budget ran out as this actor finished: stop everyone else
            self.current = None
            raise
        self.current = nxt
        assert nxt.event is not None
        nxt.event.set()

    def describe_waits(self) -> str:
        waits = [f"{a.name} waits for {a.waiting_for}" for a in self.actors if not a.done and a.cond]
        return "; ".join(waits) or "no actor is waiting"


class TimedConductor(Conductor):
    """Strategy ``timed``: every actor keeps a virtual clock, in cycles; the earliest next action runs.

    Invariants:

    * Each step costs ``costs.step`` and the actions the machine and Xen charge
      (``charge``) on top; an actor's clock (``Actor.t``) never goes back.
    * The strategy is asked only at the points every run of these actions has
      in common: a wake-up (``dirty``), a timer, a block.  Then an actor whose
      wait just ended is brought to the clock of the actor that ended it (it
      waited that long) - at that point and no other, so a replay, which asks
      at fewer points, computes the same clocks.
    * The picked actor runs while its clock is below ``horizon``, the next
      enabled actor's; at a tie the seeded ``schedule`` stream picks, and since
      every step costs at least a cycle, actors at one time take turns.  Under a
      replay the recorded decisions pick and ``horizon`` is unbounded.
    """

    timed = True

    def __init__(self, strategy: Strategy, budget: int, costs: Any) -> None:
        super().__init__(strategy, budget)
        self.costs = costs
        self.step_cost: int = costs.step
        self.horizon = 0
        self.timing = Timing()
        self._last = 0  # the clock of the actor that finished last (a hand-over has no current)

    def now(self) -> int:
        cur = self.current
        return cur.t if cur is not None else self._last

    def charge(self, cycles: int) -> None:
        """The running actor's action took ``cycles`` more."""
        cur = self.current
        if cur is not None:
            cur.t += cycles

    def held(self, name: str, cycles: int) -> None:
        self.timing.add("lock_holds", name, cycles)

    async def step(self, actor: Actor) -> None:
        if actor is not self.current:
            raise ConductorError(f"{actor.name} ran while {self.current} was current")
        self.seq += 1
        actor.t += self.step_cost
        self.run_left -= 1
        if self.run_left > 0 and not self.dirty and actor.t < self.horizon:
            return
        await self._reschedule(actor)

    def _hand_over(self, actor: Actor) -> None:
        self._last = actor.t
        self.dirty = True  # the finish may have ended someone's wait (a join)
        super()._hand_over(actor)

    def _choose(self, current: Actor | None, enabled: list[Actor]) -> tuple[Actor, int]:
        if self.dirty or self.seq >= self.next_timer:
            now = current.t if current is not None else self._last
            for a in self.actors:
                if a.cond is not None and not a.done:
                    if a in enabled:
                        if not a.woken:
                            a.woken = True
                            if a.t < now:
                                a.t = now  # it waited until the actor that just ran ended the wait
                    else:
                        a.woken = False
        nxt, run = self.strategy.next_actor(current, enabled, self.seq)
        self.horizon = getattr(self.strategy, "horizon", 1 << 62)  # (a replay has none: its decisions pick)
        return nxt, run

    async def block(self, actor: Actor, cond: Cond, what: str) -> None:
        actor.woken = False
        await super().block(actor, cond, what)


class UncontrolledConductor(Conductor):
    """Strategy ``uncontrolled``: no serialisation; the event loop's own scheduler decides.

    Every step is a plain checkpoint, so trio (which shuffles its run batches
    with an unseeded random source) or asyncio picks who runs next.  It exists
    to measure what the conductor is worth; its runs are not reproducible.
    Data choices still come from the seeded streams.
    """

    async def run_actor(self, actor: Actor, body: Callable[[], Awaitable[None]]) -> None:
        actor.started = True
        self.current = actor
        try:
            await body()
        finally:
            actor.done = True
            actor.cond = None

    def begin(self) -> None:
        self.strategy.new_execution(self.actors)
        self.run_left = 0  # no inline bursts: every action goes through step()

    async def step(self, actor: Actor) -> None:
        self.seq += 1
        if self.seq >= self.budget:
            self.stop_reason = "budget"
            raise SimulationStop("budget")
        await checkpoint()
        if self.current is not actor:
            self.switches += 1
        self.current = actor
        self.run_left = 0

    async def yield_(self, actor: Actor) -> None:
        await self.step(actor)

    async def block(self, actor: Actor, cond: Cond, what: str) -> None:
        actor.cond = cond
        actor.waiting_for = what
        try:
            while not cond():
                await self.step(actor)  # spinning costs steps, so the budget bounds a livelock
        finally:
            actor.cond = None
            actor.waiting_for = ""

    async def sleep_until(self, actor: Actor, seq: int, what: str = "logical time") -> None:
        await self.block(actor, lambda: self.seq >= seq, what)
