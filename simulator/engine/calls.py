"""Xen's calls as the oracle sees them: hypercalls and flushes, who asked, for what, and when they returned.

An explanation needs to know which fences belong to which flush (the flush
Xen asked for when it unlinked a table, the flush on reuse of a frame), not
just the fences, and which hypercall dropped a reference or freed a frame.
The engine wraps the model's flush entry points (``p2m_tlb_flush``,
``filtered_flush_tlb_mask``) and its hypercalls after any bug or variant has
replaced them, so a mutated function is still seen for what it is: its
fences, SBI errors, puts and frees are attributed to it whatever its body does.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from simulator.ctree.bridge import callback_origin, greenlet_spawn, spawned_frames
from simulator.engine.history import Rows

if TYPE_CHECKING:
    from simulator.riscv.sbi import FenceRequest
    from simulator.xen.hypervisor import Xen


NOTHING_FILTERED: Mapping[int, int] = MappingProxyType({})
NO_HARTS: list[int] = []  # the mask of most flushes: one list, never changed (readers print and test it)


class Flush:
    """One call of a flush function, from its start (``seq``) to its return (``end``, -1 while running).

    ``mask`` and ``dirty`` are what the call said it fences and what
    d->dirty_cpumask held (None when the flush's own event never came, as in a
    variant that replaces the body); ``fences`` are the requests it sent and
    the local fence it ran, in order.
    """

    __slots__ = (
        "dirty",
        "dom",
        "end",
        "errors",
        "fences",
        "filtered",
        "fn",
        "frees_before",
        "hart",
        "locked",
        "mask",
        "mfn",
        "order",
        "ordinal",
        "seq",
        "stamp",
    )

    def __init__(self, seq: int, hart: int | None, fn: str, dom: int | None, mfn: int = -1, order: int = 0) -> None:
        self.seq = seq
        self.hart = hart
        self.fn = fn
        self.dom = dom
        self.mfn = mfn
        self.order = order
        self.mask: list[int] | None = None
        self.dirty: list[int] | None = None
        self.locked: bool | None = None
        # (most flushes send nothing and fail nothing: they share one empty tuple until their first)
        self.fences: Sequence[tuple[int, str, FenceRequest]] = ()
        self.errors: Sequence[tuple[int, int, str]] = ()  # (step, SBI error, printk)
        self.end = -1
        self.frees_before = 0  # frames freed before it began (orders it against a free of the same step)
        self.filtered: Mapping[int, int] = NOTHING_FILTERED  # harts tlbflush_filter took out: their tlbflush_time
        self.stamp = 0  # the pages' tlbflush timestamp the filter was given
        self.ordinal = 0  # its place among the run's flushes (FlushLog)

    def add_fence(self, fence: tuple[int, str, FenceRequest]) -> None:
        if not self.fences:
            self.fences = []
        self.fences.append(fence)  # type: ignore[attr-defined]

    def add_error(self, error: tuple[int, int, str]) -> None:
        if not self.errors:
            self.errors = []
        self.errors.append(error)  # type: ignore[attr-defined]

    def covers_frame(self, mfn: int) -> bool:
        return self.mfn <= mfn < self.mfn + (1 << self.order)

    def to_hart(self, hart: int) -> FenceRequest | None:
        """The request this flush sent to ``hart`` (or the local fence it ran there)."""
        for _seq, what, req in self.fences:
            if req.dst == hart and (what == "sent" or what == "local"):
                return req
        return None

    def targets(self) -> list[int]:
        return sorted({req.dst for _s, _w, req in self.fences})


_COUNT, _STRIDE = 13, 14  # the columns of a quiet row that say how many flushes its run holds, and how far apart


class FlushLog:
    """The flushes of one run; at most one open per hart (flushes do not nest).

    Most flushes fence nobody (populate_physmap's ``p2m_tlb_flush`` at each
    unlock, before any vCPU ran): a big guest has one per extent.  Such a
    flush, once it returns, is kept in a row of typed columns, not as an
    object, and made an object again (once, so it keeps its identity) only
    when an explanation reads ``all``.  One row holds a run of them: quiet
    flushes one after the other (no other flush between) that differ only in
    when they began, each the same number of steps after the one before and
    each as long, as populate's are extent after extent.
    """

    def __init__(self, nr_harts: int) -> None:
        self._kept: list[Flush] = []
        self.open: list[Flush | None] = [None] * nr_harts
        # ordinal seq end hart fn dom mfn order frees_before locked stamp mask dirty, and the run:
        # how many flushes the row holds and the steps from one's begin to the next's
        self._quiet = Rows("qqqosoqBqoqooIq")
        # the last row's run: what its flushes share, the ordinal and begin the next one would have, and
        # (as its row holds them) how many it holds, their stride, and the first one's begin
        self._run: tuple[tuple[Any, ...], int, int, int, int, int] | None = None
        self._made: dict[int, Flush] = {}  # ordinal -> the object a quiet flush was made into
        self._count = 0
        self._all: list[Flush] | None = None

    def begin(
        self, seq: int, hart: int | None, fn: str, dom: int | None, mfn: int = -1, order: int = 0, frees: int = 0
    ) -> None:
        f = Flush(seq, hart, fn, dom, mfn, order)
        f.frees_before = frees
        f.ordinal = self._count
        self._count += 1
        self._kept.append(f)
        self._all = None
        if hart is not None:
            self.open[hart] = f

    def current(self, hart: int | None) -> Flush | None:
        return self.open[hart] if hart is not None else None

    def end(self, seq: int, hart: int | None) -> None:
        f = self.current(hart)
        if f is not None and hart is not None:
            f.end = seq
            self.open[hart] = None
            if self._kept[-1] is f and _quiet(f):
                self._kept.pop()
                self._fold(f)

    @property
    def all(self) -> list[Flush]:
        """Every flush, in the order they began."""
        if self._all is None:
            made = [self._make(i, k) for i in range(len(self._quiet)) for k in range(self._quiet.value(i, _COUNT))]
            self._all = sorted(self._kept + made, key=lambda f: f.ordinal)
        return self._all

    def _fold(self, f: Flush) -> None:
        locked = None if f.locked is None else int(f.locked)
        mask = None if f.mask is None else 0
        dirty = None if f.dirty is None else 0
        shared = (f.hart, f.fn, f.dom, f.mfn, f.order, f.frees_before, locked, f.stamp, mask, dirty, f.end - f.seq)
        self._all = None
        run = self._run
        if run is not None and run[0] == shared and run[1] == f.ordinal:
            _shared, _next, at, count, stride, first = run
            last = len(self._quiet) - 1
            if count == 1:  # the second flush of a run sets its stride
                stride = f.seq - first
                self._quiet.put(last, _STRIDE, stride)
            if count == 1 or f.seq == at:
                self._quiet.put(last, _COUNT, count + 1)
                self._run = (shared, f.ordinal + 1, f.seq + stride, count + 1, stride, first)
                return
        self._quiet.append(
            f.ordinal, f.seq, f.end, f.hart, f.fn, f.dom, f.mfn, f.order, f.frees_before, locked, f.stamp, mask,
            dirty, 1, 0,
        )  # fmt: skip
        self._run = (shared, f.ordinal + 1, -1, 1, 0, f.seq)

    def _make(self, i: int, k: int) -> Flush:
        """Flush ``k`` of row ``i``'s run."""
        first, seq, end, hart, fn, dom, mfn, order, frees, locked, stamp, mask, dirty, _n, stride = self._quiet.row(i)
        ordinal = first + k
        f = self._made.get(ordinal)
        if f is None:
            f = self._made[ordinal] = Flush(seq + k * stride, hart, fn, dom, mfn, order)
            f.ordinal, f.end, f.frees_before, f.stamp = ordinal, end + k * stride, frees, stamp
            f.locked = None if locked is None else bool(locked)
            f.mask = None if mask is None else NO_HARTS
            f.dirty = None if dirty is None else NO_HARTS
        return f


def _quiet(f: Flush) -> bool:
    """A flush that sent nothing, failed nothing, filtered nothing and named no hart: all it was fits a row."""
    return (
        not f.fences
        and not f.errors
        and f.filtered is NOTHING_FILTERED
        and not f.mask
        and not f.dirty
        and 0 <= f.order < 256
        and (f.dom is None or 0 <= f.dom < 1 << 15)
        and f.locked in (None, True, False)
    )


HYPERCALLS = (
    "populate_physmap",
    "decrease_reservation",
    "map_foreign",
    "unmap_foreign",
    "map_mmio_regions",
    "domain_kill",
    "arch_set_paging_mempool_size",
)


def _observed_call(observer: Any, name: str, fn: Any) -> Any:
    async def call(d: Any, *args: Any, **kwargs: Any) -> Any:
        observer.call_begin(name, d.domain_id)
        try:
            return await fn(d, *args, **kwargs)
        finally:
            observer.call_end()

    return call


def observe(xen: Xen, observer: Any) -> None:
    """Wrap the hypercalls and flush entry points of this instance (after bugs and variants are applied)."""
    for name in HYPERCALLS:
        setattr(xen, name, _observed_call(observer, name, getattr(xen, name)))
    p2m_tlb_flush = xen.p2m_tlb_flush
    filtered = xen.filtered_flush_tlb_mask

    async def observed_p2m_tlb_flush(p2m: Any) -> None:
        observer.flush_begin("p2m_tlb_flush", p2m.domain.domain_id)
        try:
            await p2m_tlb_flush(p2m)
        finally:
            observer.flush_end()

    async def observed_filtered_flush_tlb_mask(mfn: int, order: int, *timestamp: int) -> None:
        observer.flush_begin("filtered_flush_tlb_mask", None, mfn, order)
        try:
            await filtered(mfn, order, *timestamp)
        finally:
            observer.flush_end()

    xen.p2m_tlb_flush = observed_p2m_tlb_flush  # type: ignore[method-assign]
    xen.filtered_flush_tlb_mask = observed_filtered_flush_tlb_mask  # type: ignore[method-assign]
    t = getattr(xen.conductor, "timing", None)
    if t is not None:  # a timed run: each call's duration too
        for name in HYPERCALLS:
            setattr(xen, name, t.timed(xen.conductor, "hypercalls", name, getattr(xen, name)))
        for name in ("p2m_tlb_flush", "filtered_flush_tlb_mask"):
            setattr(xen, name, t.timed(xen.conductor, "flushes", name, getattr(xen, name)))


_SKIP = ("/simulator/riscv/", "/simulator/engine/conductor", "/simulator/engine/calls", "/simulator/engine/oracle",
         "/simulator/engine/windows", "/simulator/ctree/bridge")  # fmt: skip
_CTREE = "/simulator/ctree/"


def _c_named(path: str, name: str) -> bool:
    """A frame of the hypervisor model (or of a user's variant or bug, whose functions carry the C names
    they replace), not the machine's, the engine's plumbing, a library's or a wrapper's."""
    if name.startswith(("_", "<", "observed_")) or name in ("apply", "body", "call", "main", "run_job"):
        return False
    if _CTREE in path:  # --xen-tree: the model's glue around the C (CXen's methods), not the plumbing
        return _is_model_function(name)
    if "/simulator/" in path:
        return not any(s in path for s in _SKIP)
    return "site-packages" not in path and "/lib/python" not in path


@functools.cache
def _is_model_function(name: str) -> bool:
    from simulator.xen.hypervisor import Xen  # (not at import: xen's modules import the engine's plumbing)

    return callable(getattr(Xen, name, None))


@functools.cache
def _actor_root() -> Any:
    from simulator.engine.conductor import Conductor

    return Conductor.run_actor.__code__


# code object -> (C-named, in simulator/ctree/): a pure function of the code, worked out once per function
_NAMED: dict[Any, tuple[bool, bool]] = {}
# a frame still on some stack -> the C names from it outward to its actor's root; the outer frames of a
# hypercall stay the same across the thousands of puts and flushes it makes, so a walk stops at one
_TAILS: dict[Any, tuple[str, ...]] = {}
_TAIL_AT = 3  # the frames a walk reads before it looks for (or keeps) a tail: the inner ones come and go


def forget_stacks() -> None:
    """Drop the kept tails (a run ended: its frames must not outlive it)."""
    _TAILS.clear()


def c_stack(depth: int = 1, limit: int = 64) -> list[str]:
    """The C-named functions on the current hart's stack, innermost first (coroutines that await one
    another share one Python stack).  What called what, as Xen's code did: for explanations, never
    for decisions.

    A frame's tail is kept only while the frame object is (a frame held here is never reused, so a
    kept tail is never another call's) and only from a walk that reached the actor's root through
    Python frames of the model alone: a Xen tree's C (``--xen-tree``) changes under a spawn's frame.
    """
    f = sys._getframe(depth)
    out: list[str] = []
    named = _NAMED
    bottom = _actor_root()
    spawn = greenlet_spawn.__code__
    tails = _TAILS
    walked = 0
    keep: Any = None  # the frame whose tail this walk will keep, and where in ``out`` that tail begins
    keep_at = 0
    plain = True
    named_spawn: Any = None  # the greenlet_spawn frame whose C functions a callback's walk already named
    while True:
        while f is not None and len(out) < limit:
            if walked >= _TAIL_AT:
                tail = tails.get(f)
                if tail is not None:
                    out.extend(tail)
                    return out[:limit]
                if keep is None:
                    keep, keep_at = f, len(out)
            walked += 1
            code = f.f_code
            if code is bottom:  # an actor's root: below it are the event loop and the simulation's driver
                break
            if code is spawn:  # a hypervisor function of a Xen tree's C (--xen-tree) is running here
                plain = False
                if f is not named_spawn:
                    out.extend(spawned_frames(f) or ())
            else:
                known = named.get(code)
                if known is None:
                    path = code.co_filename.replace("\\", "/")
                    known = named[code] = (_c_named(path, code.co_name), _CTREE in path)
                if known[1]:
                    plain = False
                # (a CXen method right after the C frame of the same name is that frame's glue: named once)
                if known[0] and not (known[1] and out and out[-1] == code.co_name):
                    out.append(code.co_name)
            f = f.f_back  # type: ignore[assignment]
        if f is not None or len(out) >= limit:
            break  # the actor's root, or the limit
        # the top of a greenlet: a Xen tree's C (--xen-tree) called back into Python here; the walk goes on
        # with the C functions it is in, then the Python that started the C, where its greenlet_spawn waits
        callback = callback_origin()
        if callback is None:
            break
        names, f = callback
        plain = False
        out.extend(names)
        named_spawn = f
    if plain and keep is not None and f is not None and f.f_code is bottom:
        if len(tails) >= 64:
            tails.clear()  # (the frames of calls long returned go with it)
        tails[keep] = tuple(out[keep_at:])
    return out[:limit]
