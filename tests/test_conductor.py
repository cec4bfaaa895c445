"""The conductor: one actor at a time, seeded and replayable schedules, budget, deadlock, locks.

Async tests run under trio (pytest-trio's trio_mode); the cross-backend tests
drive the same scenario with ``anyio.run(..., backend="asyncio")`` and
``backend="trio"`` and compare the traces.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest

from simulator.engine.conductor import Actor, Conductor, ConductorError, Deadlock, SimulationStop
from simulator.engine.strategies import PctStrategy, RandomStrategy, ReplayStrategy, Strategy
from simulator.xen.spinlock import LockError, SpinLock

Body = Callable[[Conductor, Actor, "Run"], Awaitable[None]]


@dataclass
class Run:
    conductor: Conductor
    trace: list[tuple[str, int]] = field(default_factory=list)
    inside: str | None = None  # the actor between "enter" and "exit" of a step's action
    overlaps: list[str] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)  # conductor.seq at each action of the trace
    extra: dict[str, object] = field(default_factory=dict)


async def simulate(
    strategy: Strategy,
    bodies: dict[str, Body],
    *,
    budget: int = 100_000,
    setup: Callable[[Run], None] | None = None,
) -> Run:
    """Register one actor per body, start them all, let the conductor pick the first."""
    c = Conductor(strategy, budget)
    run = Run(c)
    actors = {name: c.add_actor(name) for name in bodies}
    async with anyio.create_task_group() as tg:
        for name, body in bodies.items():
            actor = actors[name]

            async def go(body: Body = body, actor: Actor = actor) -> None:
                await body(c, actor, run)

            tg.start_soon(c.run_actor, actor, go)
        c.begin()
        if setup is not None:
            setup(run)
    return run


def counter(steps: int) -> Body:
    """An actor that does ``steps`` actions, each one step; inside an action it yields to the event loop."""

    async def body(c: Conductor, actor: Actor, run: Run) -> None:
        for i in range(steps):
            await c.step(actor)
            if run.inside is not None or c.current is not actor:
                run.overlaps.append(f"{actor.name} step {i} while {run.inside} inside, {c.current} current")
            run.inside = actor.name
            run.trace.append((actor.name, i))
            run.stamps.append(c.seq)
            # a plain event-loop checkpoint: no other simulated actor may run here
            await anyio.lowlevel.checkpoint()
            if run.inside != actor.name:
                run.overlaps.append(f"{run.inside} ran inside {actor.name}'s step {i}")
            run.inside = None

    return body


def counters(n: int = 3, steps: int = 40) -> dict[str, Body]:
    return {f"a{k}": counter(steps) for k in range(n)}


def runs_of(trace: list[tuple[str, int]]) -> list[str]:
    """Actor names, one per maximal run of consecutive actions."""
    out: list[str] = []
    for name, _ in trace:
        if not out or out[-1] != name:
            out.append(name)
    return out


async def random_trace(seed: int, n: int = 3, steps: int = 40) -> list[tuple[str, int]]:
    run = await simulate(RandomStrategy(seed, max_run=6), counters(n, steps))
    assert not run.overlaps
    return run.trace


def first_exception(eg: BaseExceptionGroup, kind: type[BaseException]) -> BaseException:  # type: ignore[type-arg]
    matched, _ = eg.split(kind)
    assert matched is not None, f"no {kind.__name__} in {eg!r}"
    leaves: list[BaseException] = []

    def flatten(g: BaseExceptionGroup) -> None:  # type: ignore[type-arg]
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                flatten(e)
            else:
                leaves.append(e)

    flatten(matched)
    assert len(leaves) == 1, leaves
    return leaves[0]


# -- one actor at a time, seeded ------------------------------------------------------


async def test_one_actor_at_a_time() -> None:
    run = await simulate(RandomStrategy(3, max_run=6), counters(4, 50))
    assert run.overlaps == []
    assert len(run.trace) == 200
    # each actor's actions are in order and complete
    for k in range(4):
        assert [i for name, i in run.trace if name == f"a{k}"] == list(range(50))
    # and they really interleaved
    assert len(runs_of(run.trace)) > 8
    c = run.conductor
    assert c.seq == 200 + 3  # every action, plus the hand-over of each actor that finished before the last
    assert c.current is None
    assert all(a.done and a.started for a in c.actors)
    assert c.switches == len(c.decisions) >= len(runs_of(run.trace))
    assert c.stop_reason is None


async def test_same_seed_same_trace() -> None:
    a = await random_trace(11)
    b = await random_trace(11)
    assert a == b


async def test_different_seed_different_trace() -> None:
    a = await random_trace(11)
    b = await random_trace(12)
    assert sorted(a) == sorted(b)  # same actions...
    assert a != b  # ...in another order


def test_same_trace_on_asyncio_and_trio() -> None:
    on_asyncio = anyio.run(random_trace, 11, backend="asyncio")
    on_trio = anyio.run(random_trace, 11, backend="trio")
    assert on_asyncio == on_trio
    assert anyio.run(random_trace, 11, backend="asyncio") == on_asyncio
    assert anyio.run(random_trace, 12, backend="asyncio") != on_asyncio


async def test_trio_test_matches_asyncio_run() -> None:
    # this test itself runs under trio (trio_mode); asyncio is run in a worker thread
    here = await random_trace(5)
    there = await anyio.to_thread.run_sync(lambda: anyio.run(random_trace, 5, backend="asyncio"))
    assert here == there


def test_decisions_are_recorded_at_switches() -> None:
    run = anyio.run(simulate, RandomStrategy(21, max_run=6), counters(3, 30), backend="asyncio")
    c = run.conductor
    # begin() records the first pick at seq 0, and that actor does the first action
    assert c.decisions[0] == (0, int(run.trace[0][0][1:]))
    seqs = [s for s, _ in c.decisions]
    assert seqs == sorted(seqs)
    # after a decision (s, idx) and before the next one, only actor idx acts
    bounds = [*c.decisions, (c.seq + 1, -1)]
    for (s, idx), (s2, _) in itertools.pairwise(bounds):
        between = {name for (name, _), t in zip(run.trace, run.stamps, strict=True) if s < t < s2}
        assert between <= {f"a{idx}"}, (s, idx, s2, between)
    assert len(runs_of(run.trace)) <= len(c.decisions)
    # logical time never goes back
    assert run.stamps == sorted(run.stamps)
    assert run.stamps[-1] <= c.seq == 90 + 2  # 90 actions and two hand-overs


# -- budget ---------------------------------------------------------------------------


async def budget_run(budget: int) -> Run:
    runs: list[Run] = []
    stops: list[BaseException] = []
    try:
        await simulate(RandomStrategy(1, max_run=6), counters(3, 100), budget=budget, setup=runs.append)
    except* SimulationStop as eg:
        stops.append(first_exception(eg, SimulationStop))
    assert len(stops) == 1, "the budget did not stop the run"
    exc = stops[0]
    assert isinstance(exc, SimulationStop)
    assert exc.reason == "budget"
    assert str(exc) == "budget"
    (run,) = runs
    return run


def check_budget_stop(run: Run, budget: int) -> None:
    c = run.conductor
    assert c.stop_reason == "budget"
    assert c.seq == budget
    assert run.overlaps == []
    # no action ran at or past the budget; the last one ran just before it
    assert max(run.stamps) == budget - 1
    # every seq number was used by one action, except the step that hit the budget and the
    # steps that parked actors took before they were switched out (their actions never ran)
    acted = {name for name, _ in run.trace}
    unfinished = [a for a in c.actors if a.started and sum(1 for n, _ in run.trace if n == a.name) < 100]
    assert acted == {a.name for a in unfinished}  # 100-step actors: nobody finished in the budget
    assert len(run.trace) == budget - len(unfinished)
    assert len(set(run.stamps)) == len(run.stamps)


async def test_budget_stops_the_run() -> None:
    run = await budget_run(25)
    check_budget_stop(run, 25)


def test_budget_stops_the_run_on_asyncio() -> None:
    run = anyio.run(budget_run, 40, backend="asyncio")
    check_budget_stop(run, 40)
    assert run.trace == anyio.run(budget_run, 40, backend="trio").trace


async def test_budget_stop_raises_exception_group() -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(SimulationStop, match="^budget$")):
        await simulate(RandomStrategy(2), counters(2, 100), budget=10)


async def test_budget_not_reached() -> None:
    run = await simulate(RandomStrategy(2), counters(2, 10), budget=22)  # 20 actions + 1 hand-over
    assert len(run.trace) == 20
    assert run.conductor.stop_reason is None


# -- deadlock -------------------------------------------------------------------------


def stuck(what: str) -> Body:
    async def body(c: Conductor, actor: Actor, run: Run) -> None:
        await c.step(actor)
        run.trace.append((actor.name, 0))
        await c.block(actor, lambda: False, what)
        run.trace.append((actor.name, 1))  # never reached

    return body


async def test_deadlock_names_both_actors() -> None:
    with pytest.RaisesGroup(Deadlock) as info:
        await simulate(RandomStrategy(4), {"alice": stuck("the red flag"), "bob": stuck("the blue flag")})
    msg = str(info.value.exceptions[0])
    assert "alice waits for the red flag" in msg
    assert "bob waits for the blue flag" in msg


async def test_deadlock_after_last_runnable_actor_finishes() -> None:
    """The deadlock shows when the only runnable actor ends: finished actors are not named."""

    async def finisher(c: Conductor, actor: Actor, run: Run) -> None:
        alice, bob = c.actors[0], c.actors[1]
        await c.block(actor, lambda: alice.cond is not None and bob.cond is not None, "both to block")
        run.trace.append((actor.name, 0))

    caught: list[BaseException] = []
    try:
        await simulate(
            RandomStrategy(9),
            {"alice": stuck("lock A"), "bob": stuck("lock B"), "carol": finisher},
        )
    except* Deadlock as eg:
        caught.append(first_exception(eg, Deadlock))
    assert len(caught) == 1
    msg = str(caught[0])
    assert "alice waits for lock A" in msg
    assert "bob waits for lock B" in msg
    assert "carol" not in msg


def test_deadlock_on_asyncio() -> None:
    async def go() -> str:
        found = ["no deadlock"]
        try:
            await simulate(RandomStrategy(4), {"x": stuck("ack from y"), "y": stuck("ack from x")})
        except* Deadlock as eg:
            found[0] = str(first_exception(eg, Deadlock))
        return found[0]

    msg = anyio.run(go, backend="asyncio")
    assert "x waits for ack from y" in msg
    assert "y waits for ack from x" in msg


# -- conductor invariants ---------------------------------------------------------------


async def test_step_by_non_current_actor_is_an_error() -> None:
    async def rogue(c: Conductor, actor: Actor, run: Run) -> None:
        await c.step(actor)
        other = next(a for a in c.actors if a is not actor)
        await c.step(other)  # acting for a parked actor

    with pytest.RaisesGroup(pytest.RaisesExc(ConductorError, match="ran while")):
        await simulate(RandomStrategy(0), {"r1": rogue, "r2": rogue})


async def test_block_returns_when_condition_holds() -> None:
    flag = [False]

    async def waiter(c: Conductor, actor: Actor, run: Run) -> None:
        await c.block(actor, lambda: flag[0], "flag")
        run.trace.append((actor.name, c.seq))
        assert flag[0]
        assert actor.cond is None and actor.waiting_for == ""

    async def setter(c: Conductor, actor: Actor, run: Run) -> None:
        for i in range(10):
            await c.step(actor)
            run.trace.append((actor.name, i))
        flag[0] = True
        c.notify()
        for i in range(10, 15):
            await c.step(actor)
            run.trace.append((actor.name, i))

    run = await simulate(RandomStrategy(8), {"waiter": waiter, "setter": setter})
    names = [n for n, _ in run.trace]
    # the waiter resumed only after the setter's 10th action
    assert names.index("waiter") > names.index("setter") + 9
    assert len(run.trace) == 16


async def test_sleep_until_wakes_no_earlier_than_asked() -> None:
    async def sleeper(c: Conductor, actor: Actor, run: Run) -> None:
        await c.sleep_until(actor, 30)
        run.extra["woke"] = c.seq

    run = await simulate(RandomStrategy(6, max_run=50), {"s": sleeper, "busy": counter(80)})
    assert run.extra["woke"] >= 30  # type: ignore[operator]
    assert run.conductor.next_timer == 1 << 62  # the timer was cleared again


def test_sleep_until_alone_advances_time() -> None:
    """A timed wait is not a deadlock: when every unfinished actor is asleep, time should jump ahead.

    This is what ``Scenario.elapse`` does while every hart is idle (no guest running).
    """

    async def sleeper(c: Conductor, actor: Actor, run: Run) -> None:
        await c.step(actor)
        await c.sleep_until(actor, 20, "time to pass")
        run.extra["woke"] = c.seq

    async def idle(c: Conductor, actor: Actor, run: Run) -> None:
        await c.block(actor, lambda: run.extra.get("woke") is not None, "work (idle)")

    runs: list[Run] = []
    deadlocks: list[str] = []

    async def go() -> None:
        try:
            await simulate(RandomStrategy(0), {"driver": sleeper, "hart0": idle}, setup=runs.append)
        except* Deadlock as eg:
            deadlocks.append(str(first_exception(eg, Deadlock)))

    anyio.run(go, backend="trio")
    # observed: "hart0 waits for work (idle); driver waits for time to pass (step 20)"
    assert deadlocks == []
    assert runs[0].extra["woke"] >= 20  # type: ignore[operator]


# -- SpinLock -----------------------------------------------------------------------


def locker(lock: SpinLock, rounds: int, stats: dict[str, int]) -> Body:
    async def body(c: Conductor, actor: Actor, run: Run) -> None:
        async def wait(cond: Callable[[], bool], what: str) -> None:
            stats["waits"] += 1
            stats[f"what:{what}"] = stats.get(f"what:{what}", 0) + 1
            await c.block(actor, cond, what)

        for i in range(rounds):
            await c.step(actor)
            await lock.acquire(actor.name, wait)
            if run.inside is not None or lock.holder != actor.name:
                run.overlaps.append(f"{actor.name} round {i}: {run.inside} inside, holder {lock.holder}")
            run.inside = actor.name
            for j in range(3):
                await c.step(actor)
                run.trace.append((actor.name, i * 3 + j))
                if run.inside != actor.name or lock.holder != actor.name:
                    run.overlaps.append(f"{actor.name} lost the lock in round {i}")
            run.inside = None
            lock.release(actor.name)
            stats["sections"] += 1

    return body


def lock_bodies(stats: dict[str, int], rounds: int, n: int) -> tuple[dict[str, Body], list[SpinLock]]:
    """``n`` actors sharing one SpinLock; the lock needs the conductor, so it is made on first use."""
    locks: list[SpinLock] = []

    def lock_user() -> Body:
        async def body(c: Conductor, actor: Actor, run: Run) -> None:
            if not locks:
                locks.append(SpinLock(c, "pool_lock"))
            await locker(locks[0], rounds, stats)(c, actor, run)

        return body

    return {f"h{k}": lock_user() for k in range(n)}, locks


async def spinlock_run(strategy: Strategy, n: int = 2, rounds: int = 25) -> tuple[Run, dict[str, int]]:
    stats = {"waits": 0, "sections": 0}
    bodies, locks = lock_bodies(stats, rounds, n)
    run = await simulate(strategy, bodies)
    assert locks[0].holder is None
    return run, stats


async def test_spinlock_mutual_exclusion_under_contention() -> None:
    run, stats = await spinlock_run(RandomStrategy(3, max_run=4))
    assert run.overlaps == []
    assert stats["sections"] == 50
    assert stats["waits"] > 0  # the lock really was contended
    assert any(k.startswith("what:pool_lock held by h") for k in stats)
    assert len(run.trace) == 150


def test_spinlock_mutual_exclusion_on_asyncio_three_harts() -> None:
    run, stats = anyio.run(spinlock_run, RandomStrategy(17, max_run=3), 3, 20, backend="asyncio")
    assert run.overlaps == []
    assert stats["sections"] == 60
    assert stats["waits"] > 0


async def test_spinlock_misuse() -> None:
    c = Conductor(RandomStrategy(0), 100)
    lock = SpinLock(c, "l")

    async def never(cond: Callable[[], bool], what: str) -> None:
        raise AssertionError("must not wait")

    await lock.acquire("a", never)
    assert lock.holder == "a"
    with pytest.raises(LockError, match="twice"):
        await lock.acquire("a", never)
    with pytest.raises(LockError, match="held by a"):
        lock.release("b")
    c.dirty = False
    lock.release("a")
    assert lock.holder is None
    assert c.dirty  # release notifies the conductor


# -- PCT ----------------------------------------------------------------------------


async def test_pct_depth1_runs_highest_priority_first() -> None:
    strategy = PctStrategy(13, depth=1)
    run = await simulate(strategy, counters(4, 10))
    assert strategy.change_points == []
    prio = strategy.priority
    assert len(set(prio)) == 4
    by_priority = sorted(range(4), key=lambda k: -prio[k])
    # no change points: each actor runs to completion, highest priority first
    assert runs_of(run.trace) == [f"a{k}" for k in by_priority]
    assert run.conductor.switches == 4


async def test_pct_depth1_highest_enabled_actor_runs() -> None:
    """When the top actor blocks, the next one runs; as soon as it is enabled again it preempts."""
    strategy = PctStrategy(29, depth=1)
    flag = [False]
    roles: dict[str, str] = {}

    def assign(run: Run) -> None:
        order = sorted(run.conductor.actors, key=lambda a: -strategy.priority[a.index])
        roles.update({order[0].name: "top", order[1].name: "mid", order[2].name: "low"})

    async def body(c: Conductor, actor: Actor, run: Run) -> None:
        role = roles[actor.name]
        await c.step(actor)
        run.trace.append((role, 0))
        if role == "top":
            await c.block(actor, lambda: flag[0], "flag")
        elif role == "low":
            flag[0] = True
            c.notify()
        for i in range(1, 4):
            await c.step(actor)
            run.trace.append((role, i))

    run = await simulate(strategy, {"p": body, "q": body, "r": body}, setup=assign)
    assert sorted(roles.values()) == ["low", "mid", "top"]
    assert run.trace == [
        ("top", 0),
        ("mid", 0), ("mid", 1), ("mid", 2), ("mid", 3),
        ("low", 0),
        ("top", 1), ("top", 2), ("top", 3),
        ("low", 1), ("low", 2), ("low", 3),
    ]  # fmt: skip


async def test_pct_same_seed_same_trace() -> None:
    a = await simulate(PctStrategy(3, depth=3, horizon=100), counters(3, 40))
    b = await simulate(PctStrategy(3, depth=3, horizon=100), counters(3, 40))
    assert a.trace == b.trace
    assert a.overlaps == []


# -- replay -------------------------------------------------------------------------


async def budget_limited(strategy: Strategy, budget: int, bodies: dict[str, Body]) -> Run:
    """Run until the budget stops it (no actor finishes), return the run."""
    runs: list[Run] = []
    try:
        await simulate(strategy, bodies, budget=budget, setup=runs.append)
    except* SimulationStop:
        pass
    (run,) = runs
    assert run.conductor.stop_reason == "budget"
    return run


async def test_replay_reproduces_budget_limited_run() -> None:
    original = await budget_limited(RandomStrategy(31, max_run=5), 300, counters(3, 1000))
    decisions = list(original.conductor.decisions)
    assert len(decisions) > 20
    replay = ReplayStrategy(999, decisions)  # another seed: only the decisions matter
    again = await budget_limited(replay, 300, counters(3, 1000))
    assert again.trace == original.trace
    assert again.stamps == original.stamps
    assert again.conductor.decisions == decisions
    assert replay.diverged_at is None
    assert replay.pos == len(decisions)


async def test_replay_reproduces_blocking_run() -> None:
    stats = {"waits": 0, "sections": 0}
    original = await budget_limited(RandomStrategy(3, max_run=4), 400, lock_bodies(stats, 1000, 3)[0])
    assert stats["waits"] > 0
    assert original.overlaps == []
    replay = ReplayStrategy(12345, list(original.conductor.decisions))
    stats2 = {"waits": 0, "sections": 0}
    again = await budget_limited(replay, 400, lock_bodies(stats2, 1000, 3)[0])
    assert again.trace == original.trace
    assert stats2 == stats
    assert replay.diverged_at is None


def test_replay_across_backends() -> None:
    original = anyio.run(budget_limited, RandomStrategy(77, max_run=5), 200, counters(3, 1000), backend="trio")
    replay = ReplayStrategy(0, list(original.conductor.decisions))
    again = anyio.run(budget_limited, replay, 200, counters(3, 1000), backend="asyncio")
    assert again.trace == original.trace


def test_replay_reproduces_random_run() -> None:
    # sync test: the failing assert must not come wrapped in pytest-trio's exception group
    original = anyio.run(simulate, RandomStrategy(31, max_run=5), counters(3, 40), backend="trio")
    decisions = list(original.conductor.decisions)
    replay = ReplayStrategy(999, decisions)
    again = anyio.run(simulate, replay, counters(3, 40), backend="trio")
    assert again.trace == original.trace


def test_replay_of_run_to_completion_minimal() -> None:
    """The smallest case: PCT runs the top actor to completion, then the other; replay must match."""
    original = anyio.run(simulate, PctStrategy(1, depth=1), counters(2, 3), backend="asyncio")
    top = original.trace[0][0]
    other = "a1" if top == "a0" else "a0"
    assert original.trace == [(top, 0), (top, 1), (top, 2), (other, 0), (other, 1), (other, 2)]
    # the switch happened when `top` finished, after its action at seq 3: the hand-over is step 4
    assert original.conductor.decisions == [(0, int(top[1])), (4, int(other[1]))]
    again = anyio.run(
        simulate, ReplayStrategy(0, list(original.conductor.decisions)), counters(2, 3), backend="asyncio"
    )
    # observed instead: [top0, top1, other0, other1, other2, top2]
    assert again.trace == original.trace


async def test_replay_notices_divergence() -> None:
    # the decision at seq 2 names an actor that does not exist: the replay has diverged there
    replay = ReplayStrategy(0, [(0, 0), (1, 1), (2, 7)])
    run = await simulate(replay, {"a0": counter(3), "a1": counter(3)})
    assert replay.diverged_at == 2
    assert sorted(run.trace) == sorted([("a0", i) for i in range(3)] + [("a1", i) for i in range(3)])
