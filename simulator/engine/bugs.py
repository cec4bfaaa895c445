"""Injectable bugs: named mutations of the hypervisor model or the firmware.

The model's source stays faithful; a bug replaces one function (or flips one
firmware behaviour) on one simulation's instances.  Each bug names the real
bug whose shape it has, so a finding reads as "this is how XSA-480 looks".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulator.xen.hypervisor import Xen


@dataclass(frozen=True)
class Bug:
    name: str
    description: str
    shape_of: str
    apply: Callable[[Xen], None]
    workloads: tuple[str, ...] = ()  # built-in workloads that can expose it (for `p2msim matrix`)
    config: tuple[tuple[str, Any], ...] = ()  # run options it needs there (e.g. speculation on)

    def replaces(self) -> set[str]:
        """The hypervisor's methods ``apply`` replaces, found by applying it to a recorder (no run)."""
        rec = _Recorder()
        try:
            self.apply(rec)  # type: ignore[arg-type]
        except Exception:  # a bug that needs a real machine at apply time: say nothing replaced
            return set()
        return rec.replaced


class _Recorder:
    """Stands in for a hypervisor instance: every attribute exists, assignments are recorded."""

    def __init__(self) -> None:
        object.__setattr__(self, "replaced", set())

    def __getattr__(self, name: str) -> Any:
        return _Anything()

    def __setattr__(self, name: str, value: Any) -> None:
        self.replaced.add(name)


class _Anything:
    def __getattr__(self, name: str) -> Any:
        return _Anything()

    def __setattr__(self, name: str, value: Any) -> None:
        pass

    def __call__(self, *a: Any, **k: Any) -> Any:
        return _Anything()

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


def _inside_free_subtree(xen: Xen) -> list[int]:
    """Wrap p2m_free_subtree so a mutation can tell it runs inside it (per hart)."""
    depth = [0] * len(xen.harts)
    free_subtree = xen.p2m_free_subtree

    async def p2m_free_subtree(p2m: Any, entry: int, ctx: Any) -> None:
        cpu = xen.smp_processor_id()
        depth[cpu] += 1
        try:
            await free_subtree(p2m, entry, ctx)
        finally:
            depth[cpu] -= 1

    xen.p2m_free_subtree = p2m_free_subtree  # type: ignore[method-assign]
    return depth


def _no_flush_before_table_free(xen: Xen) -> None:
    """p2m_free_subtree frees tables without flushing, and drops need_flush as if it had."""
    depth = _inside_free_subtree(xen)
    flush_sync = xen.p2m_tlb_flush_sync

    async def p2m_tlb_flush_sync(p2m: Any) -> None:
        if depth[xen.smp_processor_id()]:
            p2m.need_flush = False  # the missing step: nothing flushes this unlink, not even unlock
            return
        await flush_sync(p2m)

    xen.p2m_tlb_flush_sync = p2m_tlb_flush_sync  # type: ignore[method-assign]


def _async_remote_fence(xen: Xen) -> None:
    xen.sbi.wait_for_acks = False


def _no_reuse_flush(xen: Xen) -> None:
    async def filtered_flush_tlb_mask(mfn: int, order: int, tlbflush_timestamp: int = 0) -> None:
        xen.emit("page_alloc.reuse_flush_skipped", mfn=mfn, order=order)

    xen.filtered_flush_tlb_mask = filtered_flush_tlb_mask  # type: ignore[method-assign]


def _flush_after_table_free(xen: Xen) -> None:
    """The table goes to the pool, then the flush is issued."""
    depth = _inside_free_subtree(xen)
    flush_sync, free_page = xen.p2m_tlb_flush_sync, xen.p2m_free_page

    async def p2m_tlb_flush_sync(p2m: Any) -> None:
        if not depth[xen.smp_processor_id()]:
            await flush_sync(p2m)

    async def p2m_free_page(p2m: Any, pg: int) -> None:
        await free_page(p2m, pg)
        if depth[xen.smp_processor_id()]:
            p2m.need_flush = True
            await flush_sync(p2m)  # too late: the page is already in the pool

    xen.p2m_tlb_flush_sync = p2m_tlb_flush_sync  # type: ignore[method-assign]
    xen.p2m_free_page = p2m_free_page  # type: ignore[method-assign]


def _deferred_flush_pool_free(xen: Xen) -> None:
    """Tables go to the pool; the flush is left to p2m_write_unlock (XSA-480)."""
    depth = _inside_free_subtree(xen)
    flush_sync = xen.p2m_tlb_flush_sync

    async def p2m_tlb_flush_sync(p2m: Any) -> None:
        if not depth[xen.smp_processor_id()]:
            await flush_sync(p2m)  # only the one at unlock runs

    xen.p2m_tlb_flush_sync = p2m_tlb_flush_sync  # type: ignore[method-assign]


def _local_fence_only(xen: Xen) -> None:
    def p2m_flush_mask(d: Any) -> list[int]:
        return [xen.smp_processor_id()]

    xen.p2m_flush_mask = p2m_flush_mask  # type: ignore[method-assign]


def _dirty_mask_cleared_on_switch_out(xen: Xen) -> None:
    switch_from = xen.ctxt_switch_from

    def ctxt_switch_from(prev: Any) -> None:
        switch_from(prev)
        cpu = xen.smp_processor_id()
        if cpu not in prev.domain.running_on:
            prev.domain.dirty_cpumask[cpu] = False  # the hart may still cache its entries

    xen.ctxt_switch_from = ctxt_switch_from  # type: ignore[method-assign]


def _vmid_rollover_no_flush(xen: Xen) -> None:
    """vmid_handle_vmenter never asks for the flush a new generation needs (VMID 1 handed out)."""
    handle_vmenter = xen.vmid_handle_vmenter

    async def vmid_handle_vmenter(v: Any) -> bool:
        if await handle_vmenter(v):
            xen.emit("vmid.rollover_flush_skipped", vmid=v.vmid)
        return False

    xen.vmid_handle_vmenter = vmid_handle_vmenter  # type: ignore[method-assign]


def _vmid_kept_on_migration(xen: Xen) -> None:
    def vmid_flush_vcpu(v: Any) -> None:
        pass  # the vCPU keeps its VMID and generation on the new hart

    xen.vmid_flush_vcpu = vmid_flush_vcpu  # type: ignore[method-assign]


def _flush_after_unlock(xen: Xen) -> None:
    flush_sync = xen.p2m_tlb_flush_sync

    async def p2m_write_unlock(p2m: Any) -> None:
        await xen.step()
        p2m.lock.write_unlock(f"hart{xen.smp_processor_id()}")
        await xen.step()  # an instruction boundary: another hart may take the lock here
        await flush_sync(p2m)  # by now another hart may have changed the p2m, and cleared need_flush

    xen.p2m_write_unlock = p2m_write_unlock  # type: ignore[method-assign]


def _root_freed_while_loaded(xen: Xen) -> None:
    """hgatp is left pointing at the root when a vCPU leaves, so teardown frees a loaded root."""

    async def p2m_ctxt_switch_from(prev: Any) -> None:
        pass  # hgatp stays as it was

    xen.p2m_ctxt_switch_from = p2m_ctxt_switch_from  # type: ignore[method-assign]


def _put_foreign_twice(xen: Xen) -> None:
    put_foreign = xen.p2m_put_foreign_page

    async def p2m_put_foreign_page(pg: int) -> None:
        await put_foreign(pg)
        await xen.put_page(pg)

    xen.p2m_put_foreign_page = p2m_put_foreign_page  # type: ignore[method-assign]


def _leak_foreign_ref(xen: Xen) -> None:
    async def p2m_put_foreign_page(pg: int) -> None:
        await xen.step()  # the reference is never dropped

    xen.p2m_put_foreign_page = p2m_put_foreign_page  # type: ignore[method-assign]


BUGS: dict[str, Bug] = {}


def register_bug(
    name: str,
    description: str,
    apply: Callable[[Xen], None],
    shape_of: str = "",
    workloads: tuple[str, ...] = (),
    **config: Any,
) -> Bug:
    """Register a bug under ``name``; a workload script may add its own (see the README).

    ``apply(xen)`` mutates one simulation's hypervisor instance: replace a method
    (``xen.p2m_free_page = ...``), or flip firmware behaviour (``xen.sbi``).
    """
    if not name or " " in name:
        raise ValueError(f"bug name must be one word, not {name!r}")
    bug = Bug(name, description, shape_of, apply, tuple(workloads), tuple(sorted(config.items())))
    BUGS[name] = bug
    return bug


register_bug(
    "no-flush-before-table-free",
    "p2m_free_subtree frees table pages without p2m_tlb_flush_sync, and nothing flushes the unlink later",
    _no_flush_before_table_free,
    "arm64 Linux 285994a62c80 (page-table pages freed without the TLB invalidation)",
    workloads=("teardown-under-load", "pool-churn"),
)
register_bug(
    "async-remote-fence",
    "sbi_remote_hfence_gvma returns once the requests are sent, without waiting for acknowledgements",
    _async_remote_fence,
    "the SBI spec's weaker promise (request sent, not executed)",
    workloads=("teardown-under-load", "foreign-unmap-reuse"),
)
register_bug(
    "no-reuse-flush",
    "alloc_heap_pages hands out pages that need a TLB flush without fencing any hart",
    _no_reuse_flush,
    "Xen Arm 6718787797 (reference dropped before the flush, a reuse path that skips it)",
    workloads=("foreign-unmap-reuse", "balloon"),
)
register_bug(
    "flush-after-table-free",
    "p2m_free_subtree puts the table page in the pool first and flushes after (shows with --strict: the pool "
    "rarely hands the page on, written, before the flush completes)",
    _flush_after_table_free,
    "a free-then-flush reordering (the flush arrives after the page can be reused)",
    workloads=("teardown-under-load", "pool-churn"),  # strict: where fixed leaves no freed page reachable
    strict=True,
)
register_bug(
    "deferred-flush-pool-free",
    "table pages go to the pool while the flush is left to p2m_write_unlock",
    _deferred_flush_pool_free,
    "Xen XSA-480 (x86 EPT, 2026): deferred flush, eager free to a pool",
    workloads=("teardown-under-load", "pool-churn"),
)
register_bug(
    "local-fence-only",
    "p2m_tlb_flush fences only the calling hart",
    _local_fence_only,
    "a local flush where a broadcast was needed",
    workloads=("teardown-under-load", "vcpu-migration"),
)
register_bug(
    "dirty-mask-cleared-on-switch-out",
    "a hart leaves dirty_cpumask as soon as the vCPU leaves it, before any flush",
    _dirty_mask_cleared_on_switch_out,
    "Xen Arm 607ad85d85; RISC-V KVM 'stale TLB when host CPU changes'",
    workloads=("teardown-under-load", "vcpu-migration"),
)
register_bug(
    "vmid-rollover-no-flush",
    "a new VMID generation starts without the local full HFENCE.GVMA",
    _vmid_rollover_no_flush,
    "Xen Arm 80ede1ac29; RISC-V KVM VMID rollover",
    workloads=("vmid-rollover",),
    vmid_bits=2,
)
register_bug(
    "vmid-kept-on-migration",
    "a vCPU keeps its VMID and generation when it moves to another hart",
    _vmid_kept_on_migration,
    "x86 ASIDs without hvm_asid_flush_vcpu on migration",
    workloads=("vcpu-migration", "teardown-under-load"),
)
register_bug(
    "flush-after-unlock",
    "p2m_write_unlock releases the lock before the flush",
    _flush_after_unlock,
    "Linux mremap (2018): flush after the serialising lock is dropped",
    workloads=("teardown-under-load",),  # strict: only where fixed leaves no freed page reachable
    strict=True,
)
register_bug(
    "root-freed-while-loaded",
    "hgatp is not made Bare when a vCPU leaves, so teardown frees a root a hart still names (needs --speculate)",
    _root_freed_while_loaded,
    "Linux/Xen 'stale cr3 when unpinning'",
    workloads=("vmid-rollover", "teardown-under-load", "foreign-unmap-reuse"),
    speculate=0.05,
)
register_bug(
    "put-foreign-twice",
    "p2m_put_foreign_page drops the reference twice",
    _put_foreign_twice,
    "a double put: refcount underflow, early free",
    workloads=("foreign-unmap-reuse",),
)
register_bug(
    "leak-foreign-ref",
    "p2m_put_foreign_page never drops the reference",
    _leak_foreign_ref,
    "Xen XSA-299 family (teardown loses reference accounting)",
    workloads=("foreign-unmap-reuse",),
)
