"""Profiles: named presets of the modelled code's policy knobs.

A profile says which version of Xen's bookkeeping runs; a bug (engine/bugs.py)
is a mutation applied on top.  ``fixed`` is the reference that must stay
silent; ``riscv-tree`` is what the Xen tree does today and is expected to race.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    # dirty_cpumask: set before switch-in, cleared only after that hart flushed
    maintain_dirty_mask: bool = True
    # hgatp written Bare when a vCPU leaves a hart
    hgatp_bare_on_switch_out: bool = True
    # vmid_flush_vcpu() when a vCPU runs on another hart than last time
    vmid_flush_on_migration: bool = True
    # alloc_heap_pages() fences every online hart when a page needs it
    flush_on_reuse: bool = True
    # ... and does so before the pages are handed out and scrubbed (Xen: scrub, then flush)
    flush_before_scrub: bool = True
    # paging_alloc_page() decrements total_pages even when the freelist is empty [I]
    pool_total_underflow: bool = False
    # p2m_get_type() panics on external types (the seed's v5)
    ext_types_panic: bool = False
    # ARM style: p2m flushes go to every online hart
    broadcast_flush: bool = False
    # ARM style: one VMID per domain for its whole life (no per-hart generations)
    vmid_per_domain: bool = False


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "fixed",
            "the tree's code plus the bookkeeping it lacks (dirty mask, Bare hgatp, VMID reset on migration, "
            "flush before scrub on reuse)",
        ),
        Profile(
            "riscv-tree",
            "the Xen tree today: dirty_cpumask never maintained, hgatp left loaded, no vmid_flush_vcpu",
            maintain_dirty_mask=False,
            hgatp_bare_on_switch_out=False,
            vmid_flush_on_migration=False,
            flush_before_scrub=False,
            pool_total_underflow=True,
        ),
        Profile(
            "seed-v5",
            "the seed patch (v5) as posted: external p2m types panic, flush on reuse unimplemented, no dirty mask",
            maintain_dirty_mask=False,
            hgatp_bare_on_switch_out=False,
            vmid_flush_on_migration=False,
            flush_on_reuse=False,
            flush_before_scrub=False,
            pool_total_underflow=True,
            ext_types_panic=True,
        ),
        Profile(
            "arm-broadcast",
            "ARM's approach: one VMID per domain for life, every p2m flush broadcast to all harts",
            maintain_dirty_mask=False,
            vmid_flush_on_migration=False,
            broadcast_flush=True,
            vmid_per_domain=True,
        ),
    )
}
