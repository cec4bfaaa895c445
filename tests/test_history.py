"""FrameHistory keeps each frame's events compact and gives back exactly what a dict of lists would."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from simulator.engine.history import KINDS, Chained, FrameHistory, SlotHeads, SlotLast

EVENT = st.tuples(
    st.integers(0, 7),  # mfn
    st.integers(0, 1 << 40),  # seq
    st.one_of(st.none(), st.integers(0, 1023)),  # hart (None: the driver)
    st.sampled_from(KINDS),
    st.integers(0, 1 << 62),  # stamp
    st.sampled_from(["", "p2m table", "dom1 p2m pool -> p2m table", "last reference dropped"]),
    st.integers(0, 1 << 40),  # gen
    st.integers(0, 7),  # state
    st.integers(-1, 1 << 15),  # owner
)


@given(st.lists(EVENT, max_size=60))
def test_a_frames_events_come_back_oldest_first_as_added(events: list[tuple]) -> None:  # type: ignore[type-arg]
    h = FrameHistory(8)
    model: dict[int, list[tuple]] = {}  # type: ignore[type-arg]
    for mfn, *ev in events:
        h.add(mfn, *ev)
        model.setdefault(mfn, []).append(tuple(ev))
    for mfn in range(8):
        assert (mfn in h) == (mfn in model)
        assert h.get(mfn, ()) == model.get(mfn, ())
        for kind in KINDS:
            want = [e[0] for e in model.get(mfn, ()) if e[2] == kind]
            assert h.last(mfn, kind) == (want[-1] if want else -1)
    assert 9 not in h and h.get(9) is None


SLOT_EVENT = st.tuples(
    st.sampled_from([0, 5, 1 << 20]),  # table (one far beyond any per-frame array)
    st.integers(0, 511),  # idx
    st.integers(0, 1 << 40),  # seq
    st.one_of(st.none(), st.integers(0, 3)),  # hart
    st.integers(0, (1 << 64) - 1),  # old PTE
    st.integers(0, (1 << 64) - 1),  # new PTE
    st.sampled_from(["guest", "decrease_reservation", "domain_kill"]),
)


@given(st.lists(SLOT_EVENT, max_size=60))
def test_a_slots_stores_come_back_as_a_dict_of_lists_would_keep_them(events: list[tuple]) -> None:  # type: ignore[type-arg]
    hist, last = Chained("QoQQs", SlotHeads()), SlotLast()
    model: dict[int, list[tuple]] = {}  # type: ignore[type-arg]
    final: dict[tuple[int, int], tuple] = {}  # type: ignore[type-arg]
    for table, idx, seq, hart, old, new, op in events:
        hist.add(table << 9 | idx, seq, hart, old, new, op)
        last.set(table, idx, seq, hart, new)
        model.setdefault(table << 9 | idx, []).append((seq, hart, old, new, op))
        final[(table, idx)] = (seq, hart, new)
    for key in {*model, 0, 5 << 9 | 7}:
        assert hist.get(key, ()) == model.get(key, ())
        assert last.get(key >> 9, key & 511) == final.get((key >> 9, key & 511))


FRAME_EVENT = st.tuples(
    st.integers(0, 3),  # mfn
    st.sampled_from(["alloc", "reuse", "assign", "scrub", "free"]),
    st.sampled_from([None, 0, 1]),  # hart
    st.integers(0, 2),  # gen
    st.integers(0, 2),  # state
    st.integers(-1, 1),  # owner
    st.integers(0, 5),  # steps since the event before
)


@given(st.lists(FRAME_EVENT, max_size=60))
def test_a_frames_life_comes_back_as_a_list_per_frame_would_keep_it(events: list[tuple]) -> None:  # type: ignore[type-arg]
    """An assign kept on its hand-out's row comes back as its own event, in its place, and ``last``
    finds it, as if every event had had its own row."""
    h = FrameHistory(4)
    model: dict[int, list[tuple]] = {}  # type: ignore[type-arg]
    seq = 0
    for mfn, kind, hart, gen, state, owner, steps in events:
        seq += steps
        if kind == "assign":
            h.add_assign(mfn, seq, hart, gen, state, owner)
            ev = (seq, hart, "assign", 0, "", gen, state, owner)
        else:
            h.add(mfn, seq, hart, kind, 7, "why", gen, state, owner)
            ev = (seq, hart, kind, 7, "why", gen, state, owner)
        model.setdefault(mfn, []).append(ev)
    for mfn in range(4):
        assert h.get(mfn, ()) == model.get(mfn, ())
        for kind in ("alloc", "assign", "free"):
            assert h.last(mfn, kind) == max((e[0] for e in model.get(mfn, ()) if e[2] == kind), default=-1)


def test_an_assign_after_its_hand_out_takes_no_row() -> None:
    h = FrameHistory(4)
    h.add(1, 10, 0, "alloc", 7, "alloc_domheap_pages", 1, 3, 1)
    h.add_assign(1, 12, 0, 1, 3, 1)
    h.add_assign(2, 13, 0, 1, 3, 1)  # nothing handed out before: a row of its own
    assert len(h) == 2
    assert h.get(1) == [(10, 0, "alloc", 7, "alloc_domheap_pages", 1, 3, 1), (12, 0, "assign", 0, "", 1, 3, 1)]


def test_a_free_keeps_what_the_freeing_hart_was_doing() -> None:
    h = FrameHistory(4)
    h.add(2, 10, 0, "alloc", 7, "p2m table", 1, 1, -1)
    h.add(2, 20, 1, "free", 1, "p2m_free_page -> pool", 1, 2, -1, "decrease_reservation")
    h.add(2, 30, None, "reuse", 8, "p2m table", 2, 1, -1)
    assert h.get(2) == [
        (10, 0, "alloc", 7, "p2m table", 1, 1, -1),
        (20, 1, "free", 1, "p2m_free_page -> pool", 1, 2, -1),
        (30, None, "reuse", 8, "p2m table", 2, 1, -1),
    ]
    assert h.free_op(2, 20, "?") == "decrease_reservation" and h.free_op(2, 30, "?") == "?"
    assert h.last(2, "free") == 20 and h.last(2, "scrub") == -1 and h.last(3, "free") == -1


def test_flushlog_folds_quiet_flushes_and_gives_them_back_in_order():
    """A flush that fenced nobody is kept as a row; ``all`` makes it an object again, in begin order,
    with every field it had, and the same object each time it is read."""
    from simulator.engine.calls import NO_HARTS, FlushLog

    log = FlushLog(2)
    log.begin(10, 0, "p2m_tlb_flush", 1, frees=3)
    quiet = log.current(0)
    quiet.mask, quiet.dirty, quiet.locked = NO_HARTS, NO_HARTS, True
    log.begin(11, 1, "filtered_flush_tlb_mask", None, mfn=0x40, order=2)
    loud = log.current(1)
    loud.mask = [0]
    log.end(12, 0)  # not the newest open flush: it stays an object
    log.end(13, 1)
    log.begin(14, 0, "p2m_tlb_flush", 2)
    log.current(0).mask, log.current(0).locked = NO_HARTS, False
    log.end(15, 0)  # quiet and the newest: folded
    assert len(log._kept) == 2 and len(log._quiet) == 1
    got = log.all
    assert [f.seq for f in got] == [10, 11, 14] and got[0] is quiet and got[1] is loud
    folded = got[2]
    assert (folded.fn, folded.dom, folded.hart, folded.end, folded.mask, folded.dirty, folded.locked) == (
        "p2m_tlb_flush",
        2,
        0,
        15,
        [],
        None,
        False,
    )
    assert log.all[2] is folded  # made once
    log.begin(16, 1, "p2m_tlb_flush", 2)
    assert [f.seq for f in log.all] == [10, 11, 14, 16] and log.all[2] is folded


def test_flushlog_keeps_a_run_of_quiet_flushes_in_one_row():
    """populate's flushes, one per extent at the same stride, fold into one row; a flush at another
    stride, of another length, or after a flush that fenced someone starts a new row, and ``all`` gives
    every flush back with the begin, end and ordinal it had."""
    from simulator.engine.calls import NO_HARTS, FlushLog

    log = FlushLog(1)
    want = []

    def quiet(seq: int, length: int = 2) -> None:
        log.begin(seq, 0, "p2m_tlb_flush", 1)
        log.current(0).mask, log.current(0).locked = NO_HARTS, True
        log.end(seq + length, 0)
        want.append((seq, seq + length))

    for seq in (10, 17, 24, 31):  # a run: stride 7, length 2
        quiet(seq)
    quiet(40)  # another stride
    quiet(47, length=3)  # another length
    log.begin(60, 0, "p2m_tlb_flush", 1)
    log.current(0).mask = [0]  # fenced hart 0: kept as an object
    log.end(61, 0)
    want.append((60, 61))
    quiet(70)
    quiet(77)  # after a loud flush: a new run
    assert len(log._quiet) == 4 and len(log._kept) == 1
    got = log.all
    assert [(f.seq, f.end) for f in got] == want
    assert [f.ordinal for f in got] == list(range(len(want)))
    assert all(f.locked is True and f.mask == [] for f in got if f.seq != 60)
    assert log.all[2] is got[2]  # made once


def test_put_paths_keep_each_frames_last_path_and_each_path_once() -> None:
    from simulator.engine.history import PutPaths

    p = PutPaths(8)
    p.set(1, ["put_page", "p2m_put_4k_page"])
    p.set(2, ["put_page", "p2m_put_4k_page"])
    p.set(1, ["put_page", "relinquish"])
    p.set(1 << 40, ["put_page"])  # beyond memory (MMIO)
    assert p.get(1, []) == ["put_page", "relinquish"] and p.get(2, []) == ["put_page", "p2m_put_4k_page"]
    assert p.get(3, ["none"]) == ["none"] and p.get(1 << 40, []) == ["put_page"]
    assert len(p._paths) == 3


def test_a_kept_stack_tail_is_what_a_fresh_walk_finds(monkeypatch: Any) -> None:
    """c_stack stops at a frame whose C names outward it kept from an earlier walk: every call of a
    whole run (a teardown, flushes, fences, a bug's findings) gives what a walk to the root gives."""
    from simulator.engine import calls, oracle, windows
    from simulator.engine.simulation import Config, run

    real = calls.c_stack
    kept: list[bool] = []

    def checked(depth: int = 1, limit: int = 64) -> list[str]:
        cached = real(depth + 1, limit)
        at, calls._TAIL_AT = calls._TAIL_AT, 1 << 30  # (no tail is looked for or kept)
        try:
            fresh = real(depth + 1, limit)
        finally:
            calls._TAIL_AT = at
        assert cached == fresh
        kept.append(bool(calls._TAILS))
        return cached

    monkeypatch.setattr(oracle, "c_stack", checked)
    monkeypatch.setattr(windows, "c_stack", checked)
    run(Config("teardown-under-load", seed=1))
    r = run(Config("foreign-unmap-reuse", seed=2, bugs=("no-reuse-flush",)))
    assert sum(kept) > len(kept) // 2, "most walks should stop at a kept tail"
    assert r.violations
    assert not calls._TAILS, "a run's frames are let go when it ends"


def test_every_free_reason_names_the_function_that_freed_the_frame(monkeypatch: Any) -> None:
    """The explanations name the freeing C function from a free's reason: every reason the model gives
    (frees to the heap and to a pool, a domain's teardown, double frees) names a function of the model,
    and a finding's cause never names a word of the prose ("missing in last")."""
    from simulator.engine import oracle
    from simulator.engine.history import freed_by
    from simulator.engine.simulation import Config, run
    from simulator.xen.hypervisor import Xen

    whys: set[str] = set()
    on_retire = oracle.Oracle.on_retire

    def kept(self: Any, mfn: int, old: int, new: int, gen: int, why: str) -> None:
        whys.add(why)
        on_retire(self, mfn, old, new, gen, why)

    monkeypatch.setattr(oracle.Oracle, "on_retire", kept)
    runs = [
        run(Config("teardown-under-load", seed=1)),
        run(Config("foreign-unmap-reuse", seed=0, bugs=("no-reuse-flush",))),
        run(Config("pool-churn", seed=2, profile="upstream+handle_guest_page_faults")),  # double frees
    ]
    assert any(w.startswith("last reference") for w in whys) and any(w.startswith("p2m root of") for w in whys)
    # a double free's reason wraps the free's own (free_heap_pages writes it; these runs need not reach it)
    whys |= {f"double free ({w})" for w in list(whys)}
    named = {w: freed_by(w, "") for w in whys}
    assert all(callable(getattr(Xen, fn, None)) for fn in named.values()), named
    functions = {v.cause.function for r in runs for v in r.violations if v.cause is not None}
    assert "free_domheap_page" in functions and not functions & {"last", "double", "p2m", "struct"}, functions
