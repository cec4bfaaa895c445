"""Profiles: named presets of the modelled code's policy knobs.

A profile says which version of Xen's bookkeeping runs; a bug (engine/bugs.py)
is a mutation applied on top.  ``upstream`` is the Xen tree at c447b7308b,
function by function (what the tree lacks - SMP, context switch, teardown,
foreign mapping - is glue taken from ARM, the same on every profile);
``fixed`` is ``upstream`` plus labelled fixes and must stay silent.  Every
knob defaults to what ``fixed`` does; the comment says what the tree does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

UPSTREAM_COMMIT = "c447b7308b1330ec6dcfef37220736c28f41daa0"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    # what a run on it can and cannot show (printed by `p2msim list`)
    shows: str = ""
    # fix: dirty_cpumask set before switch-in, cleared only after a flush reached that hart
    # (the tree never sets a bit: every p2m flush goes to an empty mask)
    maintain_dirty_mask: bool = True
    # fix: hgatp written Bare when a vCPU leaves a hart (the tree zeroes only VSATP)
    hgatp_bare_on_switch_out: bool = True
    # fix: vmid_flush_vcpu() when a vCPU runs on another hart than last time (the tree has no caller)
    vmid_flush_on_migration: bool = True
    # fix: switch-in assigns the VMID before hgatp is written (the tree writes hgatp with the
    # vCPU's previous VMID in p2m_ctxt_switch_to and fixes it in p2m_handle_vmenter)
    vmid_before_hgatp: bool = True
    # fix: with VMIDs off every switch-in fences the hart, as x86 SVM does (the tree does not)
    flush_on_switch_without_vmids: bool = True
    # alloc_heap_pages() fences every online hart when a page needs it (v5 added it; always on)
    flush_on_reuse: bool = True
    # fix: ... and does so before the pages are scrubbed (the tree: scrub, then flush)
    flush_before_scrub: bool = True
    # fix: populate_physmap never batches the reuse flush (the tree passes MEMF_no_tlbflush
    # while the domain is being built and flushes once at the end of the hypercall)
    no_build_flush_batching: bool = True
    # fix: p2m_set_entry reads a replaced leaf's type before p2m_set_type stores the new one
    # (the tree reads it in p2m_free_subtree, after the slot was cleared: a foreign page is never put)
    read_replaced_type_first: bool = True
    # fix: the idle scrubber leaves pages that still need a TLB flush for the allocation to scrub
    # after its flush (ARM's scrub_free_pages cleans them while stale translations may remain)
    scrub_skips_unflushed: bool = True
    # fix: guest-page faults are handled as ARM does (do_trap_stage2_abort_guest: a fault on an
    # address the p2m maps is resolved and retried, any other is the guest's); the tree's do_trap
    # has no case for them: do_unexpected_trap -> die()
    handle_guest_page_faults: bool = True
    # fix: p2m_free_subtree walks the 512 entries of the table below the entry (the tree loops
    # P2M_PAGETABLE_ENTRIES(p2m, level) of the entry's own level: 2048 below a root entry, so it
    # reads the three frames after the table as PTEs and frees what they point to)
    free_subtree_table_entries: bool = True
    # paging_alloc_page() decrements total_pages even when the freelist is empty (the tree does)
    pool_total_underflow: bool = False
    # the seed's v5 as posted: p2m_get_type/p2m_set_type panic on external types ...
    ext_types_panic: bool = False
    # ... put_page() is BUG_ON("unimplemented") (until 71fc690ee7) ...
    put_page_unimplemented: bool = False
    # ... and so is page_set_tlbflush_timestamp() (until 1055177445)
    tlbflush_timestamp_unimplemented: bool = False
    # ARM style: p2m flushes go to every online hart
    broadcast_flush: bool = False
    # ARM style: one VMID per domain for its whole life (no per-hart generations)
    vmid_per_domain: bool = False
    # policy (no built-in profile; switch it on as base+tlbflush_clock): x86's TLB flush clock - a full
    # flush stamps its harts, a freed page its time, and the reuse flush skips harts that flushed since
    tlbflush_clock: bool = False
    # table-freeing policies (the seed's "XXX: Should we defer the free of the page table to avoid the
    # flush?"); none set: flush-per-table, the tree's p2m_tlb_flush_sync before each p2m_free_table.
    # gather: p2m_free_subtree puts the unlinked table on p2m->deferred_tables; p2m_write_unlock
    # flushes once, then frees the list (Linux's mmu_gather / tlb_remove_table shape)
    gather_tables: bool = False
    # pool-stamp: the table goes to the pool at once, stamped with the TLB flush clock (implies
    # tlbflush_clock); paging_alloc_page fences the harts that have not flushed since, only when it
    # hands that table out again (and a stamped page the pool gives back keeps need_tlbflush)
    pool_stamp_tables: bool = False
    # unsafe control (XSA-480's shape): the table goes to the pool at once with no flush; the one at
    # p2m_write_unlock comes later.  It must be caught.
    deferred_flush_pool_free: bool = False

    def differences(self) -> list[str]:
        """The knobs where this profile departs from ``fixed``, as ``name=value``."""
        base = PROFILES["fixed"]
        return [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name not in ("name", "description", "shows") and getattr(self, f.name) != getattr(base, f.name)
        ]


_UPSTREAM = dict(
    maintain_dirty_mask=False,
    hgatp_bare_on_switch_out=False,
    vmid_flush_on_migration=False,
    vmid_before_hgatp=False,
    flush_on_switch_without_vmids=False,
    flush_before_scrub=False,
    no_build_flush_batching=False,
    read_replaced_type_first=False,
    free_subtree_table_entries=False,
    scrub_skips_unflushed=False,
    handle_guest_page_faults=False,
    pool_total_underflow=True,
)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "fixed",
            "upstream plus labelled fixes: dirty_cpumask upkeep, Bare hgatp on switch-out, VMID before hgatp, "
            "vmid_flush_vcpu on migration, a fence per switch-in without VMIDs, reuse flush before the scrub and "
            "never batched, the replaced leaf's type read before it is overwritten, p2m_free_subtree bounded by the "
            "table it frees",
            "the reference: must stay silent on every workload, with speculation on",
        ),
        Profile(
            "upstream",
            f"the Xen tree at {UPSTREAM_COMMIT[:10]}: its p2m, paging, VMID and heap code function by function; "
            "SMP, context switch, teardown and foreign mapping are glue from ARM (stubs in the tree)",
            "findings about the tree's own code once SMP and the ARM-style glue exist; races that need "
            "speculation show with --speculate above 0 (on by default)",
            **_UPSTREAM,
        ),
        Profile(
            "seed-v5",
            "the seed patch as posted (v5, 11/18): as upstream, but put_page() and page_set_tlbflush_timestamp() "
            'are BUG_ON("unimplemented") and external p2m types panic',
            "only what happens before the first page with an owner is freed or put: table freeing and flushing "
            "under the p2m lock; any decrease_reservation, foreign unmap or teardown ends in a panic finding",
            **_UPSTREAM,
            ext_types_panic=True,
            put_page_unimplemented=True,
            tlbflush_timestamp_unimplemented=True,
        ),
        Profile(
            "arm-broadcast",
            "ARM's approach: one VMID per domain for life, every p2m flush broadcast to all harts",
            "a second clean baseline: must stay silent like fixed",
            maintain_dirty_mask=False,
            vmid_flush_on_migration=False,
            broadcast_flush=True,
            vmid_per_domain=True,
        ),
    )
}

# old names: still accepted, with a one-line note
ALIASES = {"riscv-tree": "upstream"}


def resolve(name: str) -> tuple[str, str | None]:
    """(profile name, deprecation note or None); the name is returned unchanged if unknown."""
    if name in ALIASES:
        new = ALIASES[name]
        return new, f"profile {name!r} is now called {new!r} (pinned to {UPSTREAM_COMMIT[:10]}); using {new!r}"
    return name, None


KNOBS = tuple(f.name for f in fields(Profile) if f.name not in ("name", "description", "shows"))
POLICIES = ("tlbflush_clock", "gather_tables", "pool_stamp_tables", "deferred_flush_pool_free")  # no profile sets
# them: base+policy switches one on
TABLE_FREE = {  # the table-freeing strategies of `p2msim study table-free`, as the policy each switches on
    "flush-per-table": None,
    "gather": "gather_tables",
    "pool-stamp": "pool_stamp_tables",
    "deferred-flush-pool-free": "deferred_flush_pool_free",
}


def lookup(name: str) -> Profile:
    """A profile by name; ``base+knob+...`` is ``base`` with those knobs set as ``fixed`` sets them
    (a policy knob, which no profile sets, is switched on).

    ``upstream+handle_guest_page_faults`` is the tree with one labelled fix: a
    Xen developer checks which fix a finding needs.  Raises ValueError naming
    what is unknown.
    """
    base, *knobs = name.split("+")
    if base not in PROFILES:
        raise ValueError(f"unknown profile {base!r} (choose from {', '.join(PROFILES)})")
    p = PROFILES[base]
    if not knobs:
        return p
    bad = [k for k in knobs if k not in KNOBS]
    if bad:
        raise ValueError(f"unknown knob {bad[0]!r} in profile {name!r} (knobs: {', '.join(KNOBS)})")
    table_free = [k for k in knobs if k in TABLE_FREE.values()]
    if len(set(table_free)) > 1:
        raise ValueError(f"profile {name!r} names two table-freeing policies ({', '.join(table_free)}): choose one")
    if "pool_stamp_tables" in knobs and "tlbflush_clock" not in knobs:
        knobs.append("tlbflush_clock")  # the stamp is the TLB flush clock's
    fixed = PROFILES["fixed"]
    fixes = [k for k in knobs if k not in POLICIES]
    policies = [k for k in knobs if k in POLICIES]
    with_ = ([f"with {', '.join(fixes)} as fixed has it"] if fixes else []) + (
        [f"with the policy {', '.join(policies)}"] if policies else []
    )
    return replace(
        p,
        name=name,
        description=f"{p.description}; {'; '.join(with_)}",
        **{k: True if k in POLICIES else getattr(fixed, k) for k in knobs},
    )
