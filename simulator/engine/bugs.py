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


def _no_flush_before_table_free(xen: Xen) -> None:
    """p2m_free_subtree frees tables without its p2m_tlb_flush_sync (the flush waits for unlock)."""
    depth = [0] * len(xen.harts)
    free_subtree = xen.p2m_free_subtree
    flush_sync = xen.p2m_tlb_flush_sync

    async def p2m_free_subtree(p2m: Any, entry: int, level: int, p2mt: int | None = None) -> None:
        cpu = xen.smp_processor_id()
        depth[cpu] += 1
        try:
            await free_subtree(p2m, entry, level, p2mt)
        finally:
            depth[cpu] -= 1

    async def p2m_tlb_flush_sync(p2m: Any) -> None:
        if depth[xen.smp_processor_id()]:
            return  # the missing step
        await flush_sync(p2m)

    xen.p2m_free_subtree = p2m_free_subtree  # type: ignore[method-assign]
    xen.p2m_tlb_flush_sync = p2m_tlb_flush_sync  # type: ignore[method-assign]


def _async_remote_fence(xen: Xen) -> None:
    xen.sbi.wait_for_acks = False


def _no_reuse_flush(xen: Xen) -> None:
    async def flush_on_reuse(mfn: int, order: int) -> None:
        xen.emit("page_alloc.reuse_flush_skipped", mfn=mfn, order=order)

    xen.flush_on_reuse = flush_on_reuse  # type: ignore[method-assign]


BUGS: dict[str, Bug] = {}


def register_bug(name: str, description: str, apply: Callable[[Xen], None], shape_of: str = "") -> Bug:
    """Register a bug under ``name`` (workload scripts may add their own)."""
    if not name or " " in name:
        raise ValueError(f"bug name must be one word, not {name!r}")
    bug = Bug(name, description, shape_of, apply)
    BUGS[name] = bug
    return bug


register_bug(
    "no-flush-before-table-free",
    "p2m_free_subtree returns table pages to the pool without p2m_tlb_flush_sync first",
    _no_flush_before_table_free,
    "Xen XSA-480 (deferred flush, eager free to a pool); arm64 Linux 285994a62c80",
)
register_bug(
    "async-remote-fence",
    "sbi_remote_hfence_gvma returns once the requests are sent, without waiting for acknowledgements",
    _async_remote_fence,
    "the SBI spec's weaker promise (request sent, not executed)",
)
register_bug(
    "no-reuse-flush",
    "alloc_heap_pages hands out pages that need a TLB flush without fencing any hart",
    _no_reuse_flush,
    "Xen Arm 6718787797 (reference dropped before the flush, a reuse path that skips it)",
)
