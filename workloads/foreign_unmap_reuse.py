"""foreign-unmap-reuse: dom0 drops foreign mappings while its vCPUs still read them.

dom0 maps pages of dom1 as foreign (4K pages and one 2M superpage) and reads
them from vCPUs on several harts.  dom1 is destroyed: its pages outlive it,
held by dom0's references.  Then dom0 unmaps the whole foreign range in one
call from hart 0.  ``p2m_free_subtree`` puts every foreign page - the last
reference, so each is freed at once - BEFORE the flush at unlock.  While that
runs, another of dom0's vCPUs creates dom2 (the toolstack at work), whose
allocations take exactly those pages.  Only the flush on reuse stands between
dom0's stale translations and dom2's memory; this is the claim in the
comment of ``p2m_put_foreign_page``.
"""

from __future__ import annotations

from simulator.engine.scenario import Scenario, WorkloadError

NAME = "foreign-unmap-reuse"
DESCRIPTION = "dom0 unmaps foreign pages of a dead dom1 while reading them; dom2 is built from the freed frames"
PARAMS = {
    "small": 16,  # foreign 4K mappings
    "superpages": 1,  # foreign 2M mappings
    "hot": 0.85,  # probability that a dom0 access reads the foreign range
    "settle": 1500,
}

FOREIGN = 0x80000  # dom0 gfn of the foreign window
U_SMALL = 0x10000  # dom1 gfn of the 4K pages it lends
U_SUPER = 0x10200  # dom1 gfn of its first superpage


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    if n < 3:
        raise WorkloadError("foreign-unmap-reuse needs at least 3 harts (--pcpus 3)")
    small, supers = p["small"], p["superpages"]
    if not 1 <= small <= 512 or not 0 <= supers <= 4:
        raise WorkloadError("foreign-unmap-reuse needs 1 <= small <= 512 and 0 <= superpages <= 4")

    d0 = await sim.create_domain(0, vcpus=n, pool_pages=8)
    await sim.populate(d0, 0x100, 32)
    d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
    await sim.populate(d1, U_SMALL, small)
    for s in range(supers):
        await sim.populate(d1, U_SUPER + s * 512, 512, order=9)

    # dom0 maps them: 4K ones one by one, superpages whole
    for i in range(small):
        rc = await sim.on(0, "map_foreign", sim.xen.map_foreign, d0, FOREIGN + i, d1, U_SMALL + i, 0)
        if rc:
            raise WorkloadError(f"map_foreign of dom1 gfn {U_SMALL + i:#x} failed: {rc}")
    for s in range(supers):
        rc = await sim.on(0, "map_foreign", sim.xen.map_foreign, d0, FOREIGN + 512 * (s + 1), d1, U_SUPER + 512 * s, 9)
        if rc:
            raise WorkloadError(f"map_foreign of dom1's superpage {s} failed: {rc}")

    foreign = [(FOREIGN, small)] + [(FOREIGN + 512 * (s + 1), 512) for s in range(supers)]
    own = [(0x100, 32)]
    readers = [sim.pattern(own, hot=foreign, hot_prob=p["hot"], write_ratio=0.2) for _ in range(n)]
    await sim.run_vcpu(d1.vcpus[0], 0, sim.pattern([(U_SMALL, small)]))
    for h in range(1, n):
        await sim.run_vcpu(d0.vcpus[h], h, readers[h])
    await sim.elapse(p["settle"])

    # dom1 dies; its lent pages stay alive, held by dom0's mappings
    await sim.destroy(d1, on=0)
    await sim.run_vcpu(d0.vcpus[0], 0, readers[0])
    await sim.elapse(rng.randrange(200, 1200))

    # dom0 unmaps everything in one call while its toolstack builds dom2 on another hart
    end = FOREIGN + 512 * (supers + 1)
    unmap = sim.start(
        0, f"unmap_foreign(dom0, {FOREIGN:#x}, {end - FOREIGN})", sim.xen.unmap_foreign, d0, FOREIGN, end - FOREIGN
    )
    await sim.elapse(rng.randrange(20, 400))
    builder = 1 + rng.randrange(n - 1)

    async def build_dom2() -> None:
        d2 = await sim.xen.domain_create(2, 1, 4)
        await sim.xen.populate_physmap(d2, 0x4000, small + 64 * supers, 0)

    await sim.wait(sim.start(builder, "domain_create(dom2) + populate", build_dom2))
    await sim.wait(unmap)
    for pat in readers:
        pat.aim((), 0.0)  # dom0 no longer reads the window it unmapped
    d2 = sim.xen.domains[2]
    await sim.run_vcpu(d2.vcpus[0], builder, sim.pattern([(0x4000, small + 64 * supers)]))
    await sim.elapse(rng.randrange(500, 1500))

    for d in (d0, d2):
        await sim.pause(d)
    for d in (d0, d2):
        await sim.destroy(d, on=rng.randrange(n))


if __name__ == "__main__":
    import sys

    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *sys.argv[1:]]))
