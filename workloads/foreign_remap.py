"""foreign-remap: dom0 puts RAM (or MMIO) where a foreign page was mapped.

dom0 maps pages of dom1 as foreign, 4K at a time as ARM maps them, and reads
them from vCPUs on several harts; dom1 dies (its lent pages live on, held by
dom0's references).  Then dom0 populates RAM over some of those GFNs, one
hypercall each, as ``XENMEM_populate_physmap`` over a foreign GFN would (or
maps MMIO there with ``-p mmio=true``).  ``p2m_set_entry`` replaces a valid
foreign leaf by a RAM leaf: the page the foreign entry held must be put.

In the tree at c447b7308b it is not: ``p2m_pte_from_mfn`` -> ``p2m_set_type``
stores the new entry's type first (clearing the metadata slot), and
``p2m_free_subtree`` then reads the old entry's type from that slot.  A
release build finds ``p2m_invalid`` there and puts nothing (the foreign page,
and its dying owner, are never freed); a debug build fails the ASSERT in
``p2m_get_type``; and when the slot was the table's last used one, the
metadata page is already gone and ``p2m_get_type`` maps a NULL page.
``-p remap`` sets how many GFNs get RAM: all of them (``-p remap=16``)
reaches the last used slot.
"""

from __future__ import annotations

from simulator.engine.scenario import Scenario, WorkloadError

NAME = "foreign-remap"
DESCRIPTION = "dom0 populates RAM (or maps MMIO) over GFNs where it mapped foreign pages of a dying dom1"
PARAMS = {
    "small": 16,  # foreign 4K mappings
    "remap": 4,  # how many of them dom0 replaces by RAM
    "mmio": False,  # replace them by MMIO (map_mmio_regions) instead of RAM
    "dying": True,  # dom1 dies before the remap (its pages live on, held by dom0)
    "hot": 0.7,  # probability that a dom0 access reads the foreign window
    "settle": 800,  # steps the guests run before the first change
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (1, "")
DOMAINS = 2  # the most domains alive at once

FOREIGN = 0x80000  # dom0 gfn of the foreign window
LENT = 0x10000  # dom1 gfn of the pages it lends


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    small, remap = p["small"], p["remap"]
    if not 1 <= small <= 512 or not 0 <= remap <= small:
        raise WorkloadError("foreign-remap needs 1 <= small <= 512 and 0 <= remap <= small")

    d0 = await sim.create_domain(0, vcpus=n, pool_pages=8)
    await sim.populate(d0, 0x100, 32)
    d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
    await sim.populate(d1, LENT, small)
    for i in range(small):
        rc = await sim.on(0, "map_foreign", sim.xen.map_foreign, d0, FOREIGN + i, d1, LENT + i, 0)
        if rc:
            raise WorkloadError(f"map_foreign of dom1 gfn {LENT + i:#x} failed: {rc}")

    readers = [sim.pattern([(0x100, 32)], hot=[(FOREIGN, small)], hot_prob=p["hot"], write_ratio=0.2) for _ in range(n)]
    await sim.run_vcpu(d1.vcpus[0], 0, sim.pattern([(LENT, small)]))
    for h in range(1, n):
        await sim.run_vcpu(d0.vcpus[h], h, readers[h])
    await sim.elapse(p["settle"])
    if p["dying"]:
        await sim.destroy(d1, on=0)

    # dom0 puts RAM (or MMIO) over some of the foreign GFNs, one hypercall each, from hart 0
    chosen = sorted(rng.sample(range(small), remap))
    for k in chosen:
        gfn = FOREIGN + k
        if p["mmio"]:
            mmio = sim.xen.memory.nr_frames + k  # a device frame, outside RAM
            rc = await sim.on(0, f"map_mmio_regions(dom0, {gfn:#x}, 1)", sim.xen.map_mmio_regions, d0, gfn, 1, mmio)
            if rc:
                raise WorkloadError(f"map_mmio_regions(dom0, {gfn:#x}) failed: {rc}")
        else:
            await sim.populate(d0, gfn, 1, on=0)
        await sim.elapse(rng.randrange(20, 200))
    remapped = [(FOREIGN + k, 1) for k in chosen]
    for pat in readers:
        pat.aim(remapped or [(FOREIGN, small)], p["hot"])
    await sim.elapse(rng.randrange(300, 1200))

    await sim.pause(d0)
    await sim.destroy(d0, on=rng.randrange(n))
    if not p["dying"]:
        await sim.pause(d1)
        await sim.destroy(d1, on=0)


if __name__ == "__main__":
    import sys

    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *sys.argv[1:]]))
