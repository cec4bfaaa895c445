"""A Xen tree's own p2m.c, paging.c and vmid.c as the hypervisor's P2M, pool and VMIDs: the model's
functions of those files (``FROM_C``), run from the C.

``xen_class(tree)`` builds the tree (``build.py``) and returns a subclass of the
model's ``Xen`` whose p2m.c and vmid.c entry points call into the library
(paging.c is called by the C itself).  Everything else (the heap, the
scheduler's side of the context switch, SMP, teardown glue, foreign mapping)
is the Python model, chosen by ``--profile`` as without a tree; the fixed
profile's context-switch fixes are glue around the C's functions.

Invariants:

* the C runs only inside ``greenlet_spawn`` (``bridge.py``); each callback that
  is an action other harts can observe awaits the same conductor steps the
  Python model awaits at that point, so a run's schedule means the same thing
  with the C as without;
* a callback never lets an exception into the C: it records it, marks the
  call aborted and returns; the harness longjmps to the entry point and the
  exception is raised where the hypervisor called the C;
* one library is live per process; a new simulation re-initialises it
  (simulations in one process run one after another).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import cffi
import greenlet

from simulator.ctree.bridge import _Spawned, await_only, fail, greenlet_spawn
from simulator.ctree.build import Built, CTreeError, build
from simulator.riscv import memory as M
from simulator.riscv import pte as P
from simulator.xen.base import XenPanic
from simulator.xen.domain import Domain, Vcpu
from simulator.xen.fidelity import model
from simulator.xen.hypervisor import Xen
from simulator.xen.p2m import INVALID_MFN, P2MDomain, type_name
from simulator.xen.page_alloc import MEMF_no_owner
from simulator.xen.page_list import walk_pages

if TYPE_CHECKING:
    from simulator.xen.spinlock import RwLock

CDEF = """
struct harness_ctx;
struct domain;
int h_init(unsigned long nr_frames, unsigned int paging_levels, unsigned char *direct_map, unsigned int vmid_bits);
void h_in_c(int in_c);
int h_ctx_fault(struct harness_ctx *c, unsigned long *addr);
void h_set_op(int which, void *fn);
struct harness_ctx *h_ctx_new(int cpu);
void h_ctx_free(struct harness_ctx *c);
struct harness_ctx *h_ctx_switch(struct harness_ctx *c);
void h_abort_current(void);
int h_ctx_frames(struct harness_ctx *c, void **out, int max);
struct domain *h_domain_new(int domid, int gaddr_bits, int *rc);
void h_domain_set_dying(struct domain *d, int dying);
long h_p2m_get(struct domain *d, int field);
void h_p2m_set(struct domain *d, int field, long val);
long h_pages_last(struct domain *d);
long h_pages_prev(struct domain *d, unsigned long mfn);
unsigned long h_nr_frames(void);
void h_pages_del(struct domain *d, unsigned long mfn);
long h_md_pg(unsigned long mfn);
long h_used_entries(unsigned long mfn);
void h_set_used_entries(unsigned long mfn, long v);
void h_set_unpublished(unsigned long mfn);
int h_md_type(unsigned long md, unsigned int idx);
long h_pool_total(struct domain *d);
long h_pool_first(struct domain *d);
long h_pool_next(unsigned long mfn);
int h_map_regions_p2mt(struct harness_ctx *, struct domain *, unsigned long, unsigned long, unsigned long, int);
int h_p2m_set_range(struct harness_ctx *, struct domain *, unsigned long, unsigned long, unsigned long, int);
int h_p2m_set_entry(struct harness_ctx *, struct domain *, unsigned long, unsigned long, unsigned long, int);
int h_p2m_get_entry(struct harness_ctx *, struct domain *, unsigned long, unsigned long *, int *, unsigned int *);
int h_p2m_write_unlock(struct harness_ctx *, struct domain *);
int h_p2m_tlb_flush_sync(struct harness_ctx *, struct domain *);
int h_p2m_tlb_flush(struct harness_ctx *, struct domain *);
int h_p2m_set_allocation(struct harness_ctx *, struct domain *, unsigned long, int);
int h_p2m_free_page(struct harness_ctx *, struct domain *, unsigned long);
int h_p2m_free_metadata_page(struct harness_ctx *, struct domain *, unsigned long);
struct vcpu;
int h_boolean_param(const char *name, int val);
struct vcpu *h_vcpu_new(struct domain *d, int vcpu_id);
unsigned long h_vcpu_get(struct vcpu *v, int field);
void h_vcpu_set(struct vcpu *v, int field, unsigned long val);
void h_set_current(int cpu, struct vcpu *v);
unsigned long h_vmid_data_get(int cpu, int field);
void h_vmid_data_set(int cpu, int field, unsigned long val);
int h_vmid_init(struct harness_ctx *);
int h_vmid_flush_vcpu(struct harness_ctx *, struct vcpu *);
int h_vmid_handle_vmenter(struct harness_ctx *, struct vcpu *);
int h_p2m_ctxt_switch_from(struct harness_ctx *, struct vcpu *);
int h_p2m_ctxt_switch_to(struct harness_ctx *, struct vcpu *);
int h_p2m_handle_vmenter(struct harness_ctx *);
"""
H_ABORTED = -(1 << 31)
H_FAULTED = H_ABORTED + 1
SIGNALS = {11: "SIGSEGV", 7: "SIGBUS"}
ULONG = (1 << 64) - 1
# enum harness_lock_op / harness_pool_op (harness.h)
(WRITE_LOCK, WRITE_UNLOCK, READ_LOCK, READ_UNLOCK, IS_WRITE_LOCKED, IS_LOCKED, SPIN_LOCK, SPIN_UNLOCK,
 SPIN_IS_LOCKED) = range(9)  # fmt: skip
POOL_ADDED, POOL_REMOVED, FREE_DOMHEAP, ALLOC_DOMHEAP, PUT_PAGE, GET_PAGE, DOMAIN_CRASH, ISA_EXT = range(8)
C_MEMF_no_owner = 1 << 5  # xen/mm.h
ISA_EXTS = {1: "svade", 2: "svpbmt"}

# The model's functions a tree's p2m.c provides (what --xen-tree replaces); the README lists them.
FROM_C = (
    "p2m_init",
    "p2m_write_unlock",
    "p2m_tlb_flush",
    "p2m_tlb_flush_sync",
    "p2m_set_allocation",
    "p2m_alloc_root_table",
    "clear_and_clean_page",
    "p2m_alloc_page",
    "p2m_free_page",
    "p2m_free_metadata_page",
    "p2m_free_table",
    "p2m_get_root_pointer",
    "p2m_get_type",
    "p2m_set_type",
    "p2m_set_permission",
    "p2m_pte_from_mfn",
    "page_to_p2m_table",
    "p2m_write_pte",
    "p2m_clean_pte",
    "p2m_create_table",
    "p2m_next_level",
    "p2m_put_foreign_page",
    "p2m_put_4k_page",
    "p2m_put_2m_superpage",
    "p2m_put_page",
    "p2m_free_subtree",
    "p2m_split_superpage",
    "p2m_set_entry",
    "p2m_mapping_order",
    "p2m_set_range",
    "map_regions_p2mt",
    "check_outside_boundary",
    "p2m_get_entry",
    # paging.c
    "_paging_ret_to_domheap",
    "_paging_add_to_freelist",
    "paging_freelist_adjust",
    "paging_refill_from_domheap",
    "paging_ret_to_domheap",
    "paging_free_page",
    "paging_alloc_page",
    # vmid.c, and p2m.c's context switch
    "vmidlen_detect",
    "vmid_init",
    "vmid_flush_vcpu",
    "vmid_flush_hart",
    "vmid_handle_vmenter",
    "p2m_ctxt_switch_from",
    "p2m_ctxt_switch_to",
    "p2m_handle_vmenter",
)


class CLib:
    """The loaded library of one built tree, with the callbacks that reach the live simulation."""

    def __init__(self, built: Built) -> None:
        self.built = built
        self.ffi = cffi.FFI()
        self.ffi.cdef(CDEF)
        try:
            self.lib = self.ffi.dlopen(str(built.library))
        except OSError as exc:
            raise CTreeError(f"--xen-tree: cannot load {built.library}: {exc}") from None
        base = int(self.ffi.cast("uintptr_t", self.lib.h_init)) - dict(built.symbols)["h_init"]
        pairs = sorted((base + off, name) for name, off in built.symbols)
        self._addrs = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]
        self.xen: CXen | None = None
        self._frames_buf = self.ffi.new("void *[64]")
        self._sync_ctx: Any = None  # the context of a call_sync in progress
        self.stalled_in: list[str] = []  # the C functions an interrupt found the C in
        self._keep: list[Any] = []
        sigs = (
            ("void(unsigned long, int *)", self._cb_map),
            ("void(unsigned long, unsigned int, uint64_t, int)", self._cb_write_pte),
            ("void(unsigned long, int)", self._cb_stored),
            ("void(unsigned long)", self._cb_clear),
            ("long(int, int)", self._cb_lock),
            ("long(int, int, long, long)", self._cb_pool),
            ("int(int, unsigned long, unsigned long)", self._cb_sbi),
            ("void(int, char *, char *, int)", self._cb_assert),
            ("void(char *)", self._cb_printk),
            ("void(int, unsigned long, unsigned int, unsigned int, uint64_t, int)", self._cb_leaf),
            ("void(int, unsigned long)", self._cb_free_page),
            ("void(unsigned long)", self._cb_hgatp),
            ("void(void)", self._cb_local_hfence),
            ("void(int, int, unsigned int, uint64_t)", self._cb_vmid_assigned),
            ("void(void)", self._cb_step),
        )
        for i, (sig, fn) in enumerate(sigs):
            cb = self.ffi.callback(sig, self._guarded(fn, sig))
            self._keep.append(cb)
            self.lib.h_set_op(i, cb)

    # -- the C's call stack --------------------------------------------------------------

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self._addrs, addr) - 1
        return self._names[i] if i >= 0 else f"{addr:#x}"

    def frames(self, ctx: Any) -> list[str]:
        """The C functions ``ctx``'s call is in, innermost first (harness functions are not instrumented)."""
        n = self.lib.h_ctx_frames(ctx, self._frames_buf, 64)
        return [self.name(int(self.ffi.cast("uintptr_t", self._frames_buf[i]))) for i in range(n)]

    # -- calls into the C ----------------------------------------------------------------

    def _ctx(self) -> Any:
        cpu = self.xen.running_hart() if self.xen is not None else None
        return self.lib.h_ctx_new(-1 if cpu is None else cpu)

    async def call(self, fn: Callable[..., int], *args: Any) -> int:
        """Run one entry point of the harness as the current hart's hypervisor code."""
        ctx = self._ctx()
        try:
            rc = await greenlet_spawn(
                fn, ctx, *args, enter=lambda: self.lib.h_ctx_switch(ctx), frames=lambda: self.frames(ctx)
            )
            if rc == H_FAULTED:
                raise XenPanic(self._fault(ctx))
        except KeyboardInterrupt:  # the watchdog's (or Ctrl-C): say where the C was
            self.stalled_in = self.stalled_in or self.frames(ctx)
            raise
        finally:
            self.lib.h_ctx_free(ctx)
        if rc == H_ABORTED:
            raise CTreeError("the tree's C was stopped without a reason (a harness bug: please report it)")
        return rc

    def _fault(self, ctx: Any) -> str:
        addr = self.ffi.new("unsigned long *")
        sig = self.lib.h_ctx_fault(ctx, addr)
        where = " <- ".join(self.frames(ctx)[:8]) or "?"
        if sig < 0:
            return f"the tree's C recursed more than 4096 calls deep (Xen's stack overflows) in {where} <- ..."
        return f"the tree's C faulted: {SIGNALS.get(sig, sig)} at address {int(addr[0]):#x} in {where}"

    def call_sync(self, fn: Callable[..., int], *args: Any, cpu: int | None = None) -> int:
        """A call from synchronous Python (p2m_get_entry, vmid_init): its callbacks must not await."""
        ctx = self._ctx() if cpu is None else self.lib.h_ctx_new(cpu)
        old = self.lib.h_ctx_switch(ctx)
        self.sync_failure: BaseException | None = None
        self._sync_ctx = ctx
        try:
            rc = fn(ctx, *args)
            if rc == H_FAULTED:
                raise XenPanic(self._fault(ctx))
        finally:
            self._sync_ctx = None
            self.lib.h_ctx_switch(old)
            self.lib.h_ctx_free(ctx)
        if self.sync_failure is not None:
            raise self.sync_failure
        return rc

    def _guarded(self, fn: Callable[..., Any], sig: str) -> Callable[..., Any]:
        default: Any = self.ffi.NULL if sig.startswith("void *") else (None if sig.startswith("void") else 0)

        in_c = self.lib.h_in_c

        def cb(*args: Any) -> Any:
            try:
                in_c(0)  # Python runs now: a fault here is not the C's
                return fn(*args)
            except BaseException as exc:  # never into the C: raised where the hypervisor called it
                if isinstance(exc, KeyboardInterrupt) and not self.stalled_in:
                    self.stalled_in = self.frames_now()  # (the watchdog's interrupt: where the C was)
                if isinstance(greenlet.getcurrent(), _Spawned):
                    fail(exc)
                elif getattr(self, "sync_failure", None) is None:
                    self.sync_failure = exc
                self.lib.h_abort_current()
                return default
            finally:
                in_c(1)

        return cb

    # -- callbacks: what the C asks of the simulation ------------------------------------------

    def _x(self) -> CXen:
        assert self.xen is not None, "the tree's C called back with no simulation live"
        return self.xen

    def _cb_map(self, mfn: int, snapshot: Any) -> None:
        mem = self._x().memory
        if mem.state[mfn] in (M.FREE, M.POOL):
            mem.observer.on_hyp_access(mfn, -1, False)  # Xen maps a frame that is nobody's table
        snapshot[0] = 1 if mem.state[mfn] == M.METADATA else 0
        mem.table(mfn)  # the frame's contents are the machine's from now on (the oracle reads them)

    def _cb_write_pte(self, mfn: int, idx: int, val: int, private: int) -> None:
        xen = self._x()
        mem = xen.memory
        if val & 0xF == P.PTE_V:  # a table link: where the child's entries map, for the log's gfn
            parent = xen._tbl_gfn.get(mfn)
            if parent is not None:
                xen._tbl_gfn[P.pte_ppn(val)] = (parent[0] + (idx << (9 * parent[1])), parent[1] - 1)
        if private:  # a table no walker can reach yet, as p2m_split_superpage fills it: no step
            if mem.state[mfn] in (M.FREE, M.POOL):
                mem.observer.on_hyp_access(mfn, idx, True)
            mem.table(mfn)[idx] = val
            mem.ghosts[mfn][idx] = mem.clock
            return
        await_only(xen.step())
        mem.write_pte(mfn, idx, val)

    def _cb_stored(self, mfn: int, data: int) -> None:
        mem = self._x().memory
        if data:  # metadata slots stored by plain C stores
            mem.written[mfn] = 1
            mem.scrubbed[mfn] = 0
        else:
            mem.stored(mfn)

    def _cb_clear(self, mfn: int) -> None:
        mem = self._x().memory
        # clear_and_clean_page: the page becomes one of Xen's live tables, zeroed, then Xen's
        mem.clear_page(mfn, "clear_and_clean_page")
        mem.assign(mfn, M.NO_OWNER)

    def _cb_lock(self, op: int, domid: int) -> int:
        xen = self._x()
        d = xen.domains[domid]
        lock = d.p2m.lock
        if op == IS_WRITE_LOCKED:
            return int(lock.writer is not None)
        if op == IS_LOCKED:
            return int(lock.writer is not None or bool(lock.readers))
        if op == SPIN_IS_LOCKED:
            return int(xen.spin_is_locked(d.arch_paging.lock))
        await_only(xen._c_lock_op(op, d))
        return 0

    def _cb_pool(self, op: int, domid: int, arg: int, arg2: int) -> int:
        xen = self._x()
        if op == ISA_EXT:
            return int(xen.riscv_isa_extension_available(ISA_EXTS.get(arg, "?")))
        if op == PUT_PAGE:
            await_only(xen._c_put_page(arg))
            return 0
        if op == FREE_DOMHEAP:
            await_only(xen.free_domheap_page(arg))
            return 0
        d = xen.domains[domid]
        if op == GET_PAGE:
            return int(xen.get_page(arg, d))
        if op == DOMAIN_CRASH:
            xen.domain_crash(d)
            return 0
        if op in (POOL_ADDED, POOL_REMOVED):
            xen._c_pool_list(op, d, arg, arg2, self.frames_now())
            return 0
        result: Any = await_only(xen._c_heap_op(op, d, arg, arg2, self.frames_now()))
        return int(result)

    def frames_now(self) -> list[str]:
        """The C functions the call now calling back is in (innermost first)."""
        g = greenlet.getcurrent()
        if isinstance(g, _Spawned) and g.frames is not None:
            return g.frames()
        return self.frames(self._sync_ctx) if self._sync_ctx is not None else []

    def _cb_sbi(self, maskid: int, start: int, size: int) -> int:
        xen = self._x()
        return int(await_only(xen._c_sbi_remote_hfence_gvma(maskid, start, size)))

    def _cb_assert(self, kind: int, expr: Any, file: Any, line: int) -> None:
        xen = self._x()
        what = self.ffi.string(expr).decode(errors="replace")
        where = f"{self.ffi.string(file).decode(errors='replace')}:{line}"
        frames = self.frames_now()
        fn = f" in {frames[0]}" if frames else ""
        if kind == 1:
            raise XenPanic(f"Xen BUG at {where}{fn}: BUG_ON({what})")
        if kind == 2:
            xen.ASSERT_UNREACHABLE(f"{frames[0] if frames else '?'} at {where}")
            return
        # a workload's driver poking Xen's state runs on no hart: nothing to log it against
        xen.ASSERT(False, f"{what} at {where}{fn}", note=xen.running_hart() is not None)

    def _cb_printk(self, text: Any) -> None:
        xen = self._x()
        line = self.ffi.string(text).decode(errors="replace").rstrip("\n")
        if xen._c_booting:  # vmid_init's messages: the console at bring-up, not the run's log
            xen.boot_messages.append(line)
            return
        xen._vmid_rollover_seen()
        xen.emit("printk", text=line)

    def _cb_hgatp(self, val: int) -> None:
        xen = self._x()
        xen._vmid_rollover_seen()
        await_only(xen.step())  # as the model: a step, then the write
        xen.this_hart().write_hgatp(val)

    def _cb_local_hfence(self) -> None:
        xen = self._x()
        xen._vmid_rollover_seen()
        await_only(xen._c_local_hfence())  # on the hart's stack, where the C frames are named (no step)

    def _cb_step(self) -> None:
        await_only(self._x().step())

    def _cb_vmid_assigned(self, domid: int, vcpu_id: int, vmid: int, generation: int) -> None:
        xen = self._x()
        xen._vmid_rollover_seen()
        xen.emit("vmid.assign", dom=domid, vcpu=vcpu_id, vmid=vmid, generation=generation)

    def _cb_free_page(self, domid: int, mfn: int) -> None:
        """The probe in p2m_free_page: a table page p2m_free_table frees (the model's narrative event)."""
        xen = self._x()
        # called by p2m_free_table itself (not for its metadata page), whatever the frame: as the model says
        if self.frames_now()[1:2] == ["p2m_free_table"]:
            xen.emit("p2m_free_subtree.table_freed", dom=domid, mfn=mfn)

    def _cb_leaf(self, domid: int, table: int, idx: int, level: int, pte: int, t: int) -> None:
        xen = self._x()
        base = xen._tbl_gfn.get(table)
        gfn = base[0] + (idx << (9 * level)) if base is not None and base[1] == level else -1
        xen.emit(
            "p2m_free_subtree.leaf",
            dom=domid,
            table=table,
            idx=idx,
            level=level,
            pte=pte,
            mfn=P.pte_ppn(pte),
            type=type_name(t),
            gfn=gfn,
        )


_LIBS: dict[str, CLib] = {}


def load(tree: str) -> CLib:
    """The library of ``tree`` (built or taken from the cache), loaded once per process."""
    built = build(tree)
    key = str(built.library)
    if key not in _LIBS:
        _LIBS[key] = CLib(built)
    return _LIBS[key]


def _page_list(lib: Any, first: int, step: Callable[[int], int], what: str) -> list[int]:
    """A page list of the C from ``first`` along ``step``; a panic if it comes back on itself."""
    return walk_pages(int(first), lambda pg: int(step(pg)), lib.h_nr_frames(), what)


class CPageList:
    """p2m->pages of the C, as the model's glue and invariants use p2m.pages (a dict of frames, oldest first)."""

    def __init__(self, lib: Any, cdom: Any) -> None:
        self._lib = lib
        self._cdom = cdom

    def __iter__(self) -> Iterator[int]:
        return iter(self._walk())

    def _walk(self) -> list[int]:
        lib, cdom = self._lib, self._cdom
        return _page_list(lib, lib.h_pages_last(cdom), lambda pg: lib.h_pages_prev(cdom, pg), "p2m->pages")

    def __len__(self) -> int:
        return len(self._walk())

    def __bool__(self) -> bool:
        return self._lib.h_pages_last(self._cdom) >= 0

    def __contains__(self, mfn: object) -> bool:
        return mfn in self._walk()

    def pop(self, mfn: int, default: Any = None) -> Any:
        """page_list_del (the glue takes the root pages off the list before freeing them to the heap)."""
        if mfn in self:
            self._lib.h_pages_del(self._cdom, mfn)
            return None
        return default


class CPool:
    """d->arch.paging of the C: the freelist (head first) and total_pages, as the model's PagingDomain."""

    def __init__(self, lib: Any, cdom: Any, lock: Any) -> None:
        self._lib = lib
        self._cdom = cdom
        self.lock = lock

    @property
    def total_pages(self) -> int:
        """An unsigned long: paging_alloc_page decrements it on an empty freelist too, and it wraps."""
        return int(self._lib.h_pool_total(self._cdom)) & ULONG

    @property
    def freelist(self) -> list[int]:
        lib = self._lib
        return _page_list(lib, lib.h_pool_first(self._cdom), lib.h_pool_next, "d->arch.paging.freelist")


class CP2MDomain(P2MDomain):
    """struct p2m_domain of the C, seen by the model's glue: its fields are read from (and written to) the C."""

    def __init__(self, d: Domain, lock: RwLock, lib: CLib, cdom: Any) -> None:
        self.domain = d
        self.lock = lock
        self._lib = lib.lib
        self.cdom = cdom
        self.pages = CPageList(lib.lib, cdom)  # type: ignore[assignment]  # p2m->pages, read from the C

    @property  # type: ignore[override]
    def root(self) -> int:
        return int(self._lib.h_p2m_get(self.cdom, 0))

    @property  # type: ignore[override]
    def need_flush(self) -> bool:
        return bool(self._lib.h_p2m_get(self.cdom, 1))

    @need_flush.setter
    def need_flush(self, v: bool) -> None:
        self._lib.h_p2m_set(self.cdom, 1, int(v))

    @property  # type: ignore[override]
    def lowest_mapped_gfn(self) -> int:
        return int(self._lib.h_p2m_get(self.cdom, 2)) & ULONG

    @lowest_mapped_gfn.setter
    def lowest_mapped_gfn(self, v: int) -> None:
        self._lib.h_p2m_set(self.cdom, 2, v if v < 1 << 63 else v - (1 << 64))

    @property  # type: ignore[override]
    def max_mapped_gfn(self) -> int:
        return int(self._lib.h_p2m_get(self.cdom, 3)) & ULONG

    @max_mapped_gfn.setter
    def max_mapped_gfn(self, v: int) -> None:
        self._lib.h_p2m_set(self.cdom, 3, v)

    @property  # type: ignore[override]
    def md(self) -> dict[int, int]:
        """table page -> its metadata page (page_info.v.md.pg of each of p2m->pages)."""
        out = {}
        for pg in self.pages:
            md = self._lib.h_md_pg(pg)
            if md >= 0:
                out[pg] = int(md)
        return out


class CDomain(Domain):
    """struct domain whose ``is_dying`` the C reads (p2m_set_range refuses a dying domain)."""

    cdom: Any = None
    clib: Any = None

    @property  # type: ignore[override]
    def is_dying(self) -> bool:
        return bool(self.__dict__.get("is_dying", False))

    @is_dying.setter
    def is_dying(self, v: bool) -> None:
        self.__dict__["is_dying"] = v
        if self.cdom is not None:
            self.clib.h_domain_set_dying(self.cdom, int(v))


class CVcpu(Vcpu):
    """struct vcpu of the C: v->arch.vmid is read from (and written to) the C."""

    cv: Any = None
    clib: Any = None

    @property  # type: ignore[override]
    def vmid(self) -> int:
        return int(self.clib.h_vcpu_get(self.cv, 0))

    @vmid.setter
    def vmid(self, v: int) -> None:
        self.clib.h_vcpu_set(self.cv, 0, v)

    @property  # type: ignore[override]
    def vmid_generation(self) -> int:
        return int(self.clib.h_vcpu_get(self.cv, 1))

    @vmid_generation.setter
    def vmid_generation(self, v: int) -> None:
        self.clib.h_vcpu_set(self.cv, 1, v)


def _cvcpu(v: Vcpu) -> Any:
    assert isinstance(v, CVcpu), "a vCPU the tree's C does not know"
    return v.cv


class CVmidData:
    """this_cpu(vmid_data) of one hart in the C, as the model's VmidData (a test may set it, as a debugger)."""

    _FIELDS = ("generation", "next_vmid", "max_vmid", "used")

    def __init__(self, lib: Any, cpu: int) -> None:
        object.__setattr__(self, "_lib", lib)
        object.__setattr__(self, "_cpu", cpu)

    def __getattr__(self, name: str) -> int:
        if name not in self._FIELDS:
            raise AttributeError(name)
        return int(self._lib.h_vmid_data_get(self._cpu, self._FIELDS.index(name)))

    def __setattr__(self, name: str, v: int) -> None:
        if name not in self._FIELDS:
            raise AttributeError(name)
        self._lib.h_vmid_data_set(self._cpu, self._FIELDS.index(name), int(v))


class _UsedEntries:
    """page_info.u.md.used_entries, kept in the C's frame table (the model's heap resets it on allocation)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    def __getitem__(self, mfn: int) -> int:
        return int(self._lib.h_used_entries(mfn))

    def __setitem__(self, mfn: int, v: int) -> None:
        self._lib.h_set_used_entries(mfn, v)


class CXen(Xen):
    """The model's hypervisor with a tree's p2m.c: the C functions in FROM_C run from the library."""

    clib: CLib
    FROM_C = FROM_C

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lib = self.clib.lib
        if self.memory.direct_map is None:
            raise CTreeError("a tree's C needs the machine's memory as one direct map (Memory(contiguous=True))")
        self._direct_map = self.clib.ffi.from_buffer("unsigned char[]", self.memory.direct_map)
        self.gaddr_bits = lib.h_init(
            self.memory.nr_frames, self.gstage_mode.root_level, self._direct_map, self.vmid_bits
        )
        if self.gaddr_bits < 0:
            raise CTreeError(f"the tree's p2m.c has no G-stage mode with {self.gstage_mode.root_level} levels")
        if not lib.h_boolean_param(b"vmid", int(self.opt_vmid)) and not self.opt_vmid:
            raise CTreeError('--xen-opt vmid=0: the tree\'s vmid.c has no boolean_param("vmid", ...)')
        self.clib.xen = self
        self.clib.stalled_in = []
        self.u_md_used_entries = _UsedEntries(lib)  # type: ignore[assignment]
        # table page -> (first gfn it maps, level of its entries), from the links the C stores
        self._tbl_gfn: dict[int, tuple[int, int]] = {}
        # the harts' bring-up, now that the C can run (Xen.__init__'s calls came before the library was set up)
        self.vmid_data = [CVmidData(lib, h.id) for h in self.harts]  # type: ignore[misc]
        self._vmid_generation = [0] * len(self.harts)  # this_cpu(vmid_data).generation the log last told
        self._c_ready = True
        self.boot_messages = []  # the console's lines at bring-up (vmid_init's printk)
        for h in self.harts:
            self.vmid_init(h.id)

    # -- struct domain and struct p2m_domain ------------------------------------------------

    @model("the C's p2m_init(d, config) on the C's struct domain; the model's glue sees it through CP2MDomain")
    def p2m_init(self, d: Domain) -> None:
        lib, ffi = self.clib.lib, self.clib.ffi
        rc = ffi.new("int *")
        ctx = self.clib._ctx()
        old = lib.h_ctx_switch(ctx)
        try:
            cdom = lib.h_domain_new(d.domain_id, self.gaddr_bits, rc)
        finally:
            lib.h_ctx_switch(old)
            lib.h_ctx_free(ctx)
        if rc[0]:
            raise XenPanic(f"p2m_init(dom{d.domain_id}) of the tree's C failed: {rc[0]}")
        d.__class__ = CDomain
        assert isinstance(d, CDomain)
        d.cdom, d.clib = cdom, lib
        d.is_dying = d.__dict__.get("is_dying", False)
        d.p2m = CP2MDomain(d, d.p2m.lock, self.clib, cdom)
        d.arch_paging = CPool(lib, cdom, d.arch_paging.lock)  # type: ignore[assignment]

    def _cdom(self, p2m: P2MDomain) -> Any:
        assert isinstance(p2m, CP2MDomain), "a p2m the tree's C does not know"
        return p2m.cdom

    @model("p2m_md_type read from the C's 4-byte struct md_t")
    def p2m_md_type(self, md: int, idx: int) -> int:
        return int(self.clib.lib.h_md_type(md, idx))

    # -- the model's p2m.c entry points, run from the C -----------------------------------------

    async def p2m_write_unlock(self, p2m: P2MDomain) -> None:  # type: ignore[override]
        await self.clib.call(self.clib.lib.h_p2m_write_unlock, self._cdom(p2m))

    async def p2m_tlb_flush_sync(self, p2m: P2MDomain) -> None:  # type: ignore[override]
        await self.clib.call(self.clib.lib.h_p2m_tlb_flush_sync, self._cdom(p2m))

    async def p2m_force_tlb_flush_sync(self, p2m: P2MDomain) -> None:  # type: ignore[override]
        await self.clib.call(self.clib.lib.h_p2m_tlb_flush, self._cdom(p2m))

    async def p2m_set_allocation(self, d: Domain, pages: int, can_preempt: bool) -> int:  # type: ignore[override]
        had_root = d.p2m.root != INVALID_MFN
        rc = await self.clib.call(self.clib.lib.h_p2m_set_allocation, self._cdom(d.p2m), pages, int(can_preempt))
        if not had_root and d.p2m.root != INVALID_MFN:  # for the oracle, as the model's p2m_alloc_root_table says
            self.emit("p2m_alloc_root_table", dom=d.domain_id, mfn=d.p2m.root)
            top = self.gstage_mode.root_level
            for k in range(P.ROOT_PAGES):
                self._tbl_gfn[d.p2m.root + k] = ((k * 512) << (9 * top), top)
        return rc

    async def p2m_free_page(self, p2m: P2MDomain, pg: int) -> None:  # type: ignore[override]
        await self.clib.call(self.clib.lib.h_p2m_free_page, self._cdom(p2m), pg)

    async def p2m_free_metadata_page(self, p2m: P2MDomain, table: int) -> None:  # type: ignore[override]
        await self.clib.call(self.clib.lib.h_p2m_free_metadata_page, self._cdom(p2m), table)

    async def p2m_set_entry(self, p2m: P2MDomain, gfn: int, page_order: int, mfn: int, t: int) -> int:  # type: ignore[override]
        return await self.clib.call(self.clib.lib.h_p2m_set_entry, self._cdom(p2m), gfn, page_order, mfn & ULONG, t)

    async def p2m_set_range(self, p2m: P2MDomain, sgfn: int, nr: int, smfn: int, t: int) -> int:  # type: ignore[override]
        return await self.clib.call(self.clib.lib.h_p2m_set_range, self._cdom(p2m), sgfn, nr, smfn & ULONG, t)

    async def map_regions_p2mt(self, d: Domain, gfn: int, nr: int, mfn: int, p2mt: int) -> int:  # type: ignore[override]
        return await self.clib.call(self.clib.lib.h_map_regions_p2mt, self._cdom(d.p2m), gfn, nr, mfn & ULONG, p2mt)

    def p2m_get_entry(self, p2m: P2MDomain, gfn: int) -> tuple[int, int, int]:  # type: ignore[override]
        ffi = self.clib.ffi
        mfn, t, order = ffi.new("unsigned long *"), ffi.new("int *"), ffi.new("unsigned int *")
        self.clib.call_sync(self.clib.lib.h_p2m_get_entry, self._cdom(p2m), gfn, mfn, t, order)
        m = int(mfn[0])
        return (INVALID_MFN if m == ULONG else m), int(t[0]), int(order[0])

    # -- vmid.c, and the context switch of p2m.c ------------------------------------------------

    _c_ready = False  # the library is set up for this simulation
    _c_booting = False  # vmid_init runs: its printk is the boot console's
    boot_messages: list[str]

    @model("vcpu_create: the vCPU's struct vcpu is the C's (its arch.vmid is what vmid.c reads and writes)")
    def vcpu_create(self, d: Domain, vcpu_id: int) -> Vcpu:
        v = super().vcpu_create(d, vcpu_id)
        assert isinstance(d, CDomain)
        v.__dict__.pop("vmid", None)
        v.__dict__.pop("vmid_generation", None)
        v.__class__ = CVcpu
        assert isinstance(v, CVcpu)
        v.cv, v.clib = self.clib.lib.h_vcpu_new(d.cdom, vcpu_id), self.clib.lib
        return v

    def vmid_init(self, cpu: int) -> None:
        if not self._c_ready:
            return  # from Xen.__init__, before the library is set up: CXen.__init__ calls it again
        self._c_booting = True
        try:
            self.clib.call_sync(self.clib.lib.h_vmid_init, cpu=cpu)
        finally:
            self._c_booting = False
        self._vmid_generation[cpu] = self.vmid_data[cpu].generation

    def vmid_flush_vcpu(self, v: Vcpu) -> None:
        self.clib.call_sync(self.clib.lib.h_vmid_flush_vcpu, _cvcpu(v))

    async def vmid_handle_vmenter(self, v: Vcpu) -> bool:
        need_flush = await self.clib.call(self.clib.lib.h_vmid_handle_vmenter, _cvcpu(v))
        self._vmid_rollover_seen()
        return bool(need_flush)

    def vmids_used(self, cpu: int) -> bool:
        return bool(self.vmid_data[cpu].used)

    def _vmid_rollover_seen(self) -> None:
        """The model's vmid.rollover event, told at the C's next observable action after vmid_flush_hart
        moved this hart's generation on (nothing the C does in between is seen by anyone)."""
        cpu = self.running_hart()
        if cpu is None or not self._c_ready:
            return
        gen = self.vmid_data[cpu].generation
        if gen != self._vmid_generation[cpu]:
            self._vmid_generation[cpu] = gen
            self.emit("vmid.rollover", generation=gen)

    def ctxt_switch_from(self, prev: Vcpu) -> None:
        super().ctxt_switch_from(prev)
        self.clib.lib.h_set_current(self.this_hart().id, self.clib.ffi.NULL)  # the idle vCPU

    def ctxt_switch_to(self, nxt: Vcpu) -> None:
        super().ctxt_switch_to(nxt)
        self.clib.lib.h_set_current(self.this_hart().id, _cvcpu(nxt))  # set_current(next)

    async def p2m_ctxt_switch_from(self, p: Vcpu) -> None:
        await self.clib.call(self.clib.lib.h_p2m_ctxt_switch_from, _cvcpu(p))
        if self.profile.hgatp_bare_on_switch_out:
            await self.step()
            self.this_hart().write_hgatp(0)  # fix: no speculative walk through a root that may be freed

    async def p2m_ctxt_switch_to(self, n: Vcpu) -> None:
        """The C's, with the fixed profile's VMID fixes as glue around it (the order of the model's)."""
        hart = self.this_hart()
        if self.profile.vmid_flush_on_migration and n.last_processor not in (None, hart.id):
            self.vmid_flush_vcpu(n)  # fix: the tree has no caller of vmid_flush_vcpu
        n.last_processor = hart.id
        need_flush = False
        if self.profile.vmid_before_hgatp:
            # fix: a valid VMID before the C's csr_write(CSR_HGATP) names this p2m
            need_flush = await self.vmid_handle_vmenter(n)
        await self.clib.call(self.clib.lib.h_p2m_ctxt_switch_to, _cvcpu(n))
        if need_flush:
            self.local_hfence_gvma_all()
        if not self.vmids_used(hart.id) and self.profile.flush_on_switch_without_vmids:
            self.local_hfence_gvma_all()  # fix: VMID 0 is everybody's, as x86 SVM flushes for ASID 0

    async def p2m_handle_vmenter(self) -> None:
        if self.curr_vcpu[self.this_hart().id] is None:
            return  # the idle vCPU never returns to a guest (the tree BUG_ONs)
        await self.clib.call(self.clib.lib.h_p2m_handle_vmenter)
        self._vmid_rollover_seen()

    # -- what the callbacks await (the same steps as the Python model at the same points) -------

    async def _c_lock_op(self, op: int, d: Domain) -> None:
        hart = self.this_hart()
        who = f"hart{hart.id}"
        if op == WRITE_LOCK:  # p2m_write_lock
            await hart.tick()
            await d.p2m.lock.write_lock(who, hart.wait_until)
        elif op == WRITE_UNLOCK:  # in p2m_write_unlock, after its flush
            await self.step()
            d.p2m.lock.write_unlock(who)
        elif op == READ_LOCK:
            await hart.tick()
            await d.p2m.lock.read_lock(who, hart.wait_until)
        elif op == READ_UNLOCK:
            await self.step()
            d.p2m.lock.read_unlock(who)
        elif op == SPIN_LOCK:
            await self.spin_lock(d.arch_paging.lock)
        elif op == SPIN_UNLOCK:
            self.spin_unlock(d.arch_paging.lock)

    async def _c_local_hfence(self) -> None:
        self.local_hfence_gvma_all()

    async def _c_put_page(self, mfn: int) -> None:
        await self.step()  # as the model's p2m_put_foreign_page: the put is one atomic action
        await self.put_page(mfn)

    def _c_pool_list(self, op: int, d: Domain, mfn: int, md_table: int, frames: list[str]) -> None:
        """A page entered or left d's pool freelist in paging.c: the frame's life changes as the model's
        paging_free_page and paging_alloc_page change it (entering from the heap, or leaving for it, does not)."""
        fn = frames[0] if frames else ""
        if op == POOL_ADDED and fn == "paging_free_page":
            why = frames[1] if len(frames) > 1 else fn  # the C that freed it (p2m_free_page, say)
            self.memory.retire(mfn, M.POOL, f"{why} -> dom{d.domain_id} p2m pool (tail)")
        elif op == POOL_REMOVED and fn == "paging_alloc_page":
            md = "p2m_set_type" in frames
            state, why = (M.METADATA, f"metadata of table {md_table:#x}") if md else (M.TABLE, "p2m table")
            self.memory.hand_out(mfn, state, M.NO_OWNER, f"dom{d.domain_id} p2m pool -> {why}")
            if not md:
                self.clib.lib.h_set_unpublished(mfn)

    async def _c_heap_op(self, op: int, d: Domain, arg: int, arg2: int, frames: list[str]) -> int:
        if op == ALLOC_DOMHEAP:
            flags = MEMF_no_owner if arg2 & C_MEMF_no_owner else 0
            if "_paging_add_to_freelist" in frames:
                state, why = M.POOL, f"dom{d.domain_id} p2m pool"
            else:
                state, why = M.TABLE, f"p2m root of dom{d.domain_id}"
            mfn = await self.alloc_domheap_pages(d, arg, flags, state, why)
            return -1 if mfn is None else mfn
        raise CTreeError(f"the harness asked for heap operation {op}, which p2msim does not know")

    async def _c_sbi_remote_hfence_gvma(self, maskid: int, start: int, size: int) -> int:
        if maskid < 0:  # cpu_online_map
            return await self.sbi_remote_hfence_gvma(self.cpu_online_map(), start, size)
        d = self.domains[maskid]
        self.observer.flush_begin("p2m_tlb_flush", d.domain_id)  # type: ignore[attr-defined]
        try:
            return await self._p2m_remote_flush(d)
        finally:
            self.observer.flush_end()  # type: ignore[attr-defined]


def xen_class(tree: str) -> type[CXen]:
    """A CXen bound to ``tree``'s library (built now if it is not in the cache)."""
    lib = load(tree)
    return type("CXen", (CXen,), {"clib": lib})


README_BEGIN, README_END = "<!-- ctree-functions:begin -->\n", "\n<!-- ctree-functions:end -->"


def readme_block() -> str:
    """The README's list of the model functions a tree's C provides (a test checks it is current)."""
    return ", ".join(f"`{n}`" for n in FROM_C) + "."


def write_readme(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(README_BEGIN, 1)
    _old, tail = rest.split(README_END, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + README_BEGIN + readme_block() + README_END + tail)


def stalled_in() -> list[str]:
    """Where an interrupt found a tree's C (innermost first), if it came while the C ran."""
    return next((lib.stalled_in for lib in _LIBS.values() if lib.stalled_in), [])
