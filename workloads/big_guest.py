"""big-guest: a guest of many GiB built, run on every hart, and torn down.

The scale the table-freeing study needs: dom1 gets ``-p gib=N`` GiB of RAM
(``-p mib=M`` for a smaller one) in 4K pages, or in 2M superpages with
``-p order=9``, through ``populate_physmap`` in batches of ``batch`` extents.
Its vCPUs then run on every hart over the whole range (each access aimed at
a random page, so most are TLB misses and walks), and the toolstack tears
it down: ``domain_kill`` frees every table, every metadata page and every
page of RAM.  One domain and no concurrent change: this workload measures
what building and freeing a large p2m costs, and checks that a teardown of
that size leaves nothing behind.
"""

from __future__ import annotations

from simulator.engine.scenario import Scenario, WorkloadError

NAME = "big-guest"
DESCRIPTION = "one guest of -p gib=N GiB (4K pages, or -p order=9) built, run on every hart and torn down"
PARAMS = {
    "gib": 0,  # the guest's RAM in GiB, when set
    "mib": 64,  # or in MiB
    "order": 0,  # 0: 4K pages; 9: 2M superpages
    "batch": 4096,  # extents per populate_physmap call
    "run": 4000,  # steps the vCPUs run before the teardown
}
PCPUS = (1, "one vCPU per hart")
DOMAINS = 1
HUNT = False  # it measures scale: compare and matrix run it only when named

BASE = 0x80000  # dom1's RAM starts at 2 GiB, 1 GiB-aligned


def FRAMES(params: dict[str, int]) -> int:  # (upper case: p2msim reads it, as PARAMS)
    """The machine's frames this guest needs (its RAM, its tables, and Xen's), in whole 2 MiB."""
    pages = _pages(params)
    need = pages + pages // 256 + 4096
    return -(-need // 512) * 512


def STEPS(params: dict[str, int]) -> int:
    """The step budget: building and freeing take about 7 steps per 4K page (measured), and the run."""
    return 8 * _pages(params) + 4 * params["run"] + 100_000


def _pages(params: dict[str, int]) -> int:
    return (params["gib"] << 18) if params["gib"] else params["mib"] << 8


async def main(sim: Scenario) -> None:
    p = sim.params
    order = p["order"]
    if order not in (0, 9):
        raise WorkloadError(f"big-guest -p order={order}: 0 (4K pages) or 9 (2M superpages)")
    pages = _pages(p)
    if pages < 512 or pages % 512:
        raise WorkloadError(f"big-guest: the guest must be a whole number of 2 MiB, at least 2 MiB, not {pages} pages")
    frames = FRAMES(p)
    if sim.xen.memory.nr_frames < frames:
        raise WorkloadError(
            f"big-guest of {pages * 4 // 1024:,} MiB needs --frames {frames} (the machine has "
            f"{sim.xen.memory.nr_frames:,})"
        )
    # a level-0 table per 2 MiB (4K pages only), a level-1 table per GiB, the levels above
    tables = (pages // 512 if order == 0 else 0) + pages // (512 * 512) + 1 + sim.xen.gstage_mode.root_level
    d = await sim.create_domain(1, vcpus=sim.nr_harts, pool_pages=tables)
    extents = pages >> order
    step = max(1, p["batch"])
    for i in range(0, extents, step):
        nr = min(step, extents - i)
        await sim.populate(d, BASE + (i << order), nr << order, order)  # (populate_physmap's nr is in pages)
    prog = sim.pattern([(BASE, pages)], write_ratio=0.25)
    for h, v in enumerate(d.vcpus):
        await sim.run_vcpu(v, h, prog)
    await sim.elapse(p["run"])
    for h in range(sim.nr_harts):
        await sim.deschedule(h)
    await sim.destroy(d)
