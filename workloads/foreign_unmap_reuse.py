"""foreign-unmap-reuse: dom0 drops foreign mappings while its vCPUs still read them.

dom0 maps pages of dom1 as foreign, 4K at a time as ARM maps them (``-p
superpages=N`` adds N foreign 2M mappings: the model's extension, the only way
to reach ``p2m_put_2m_superpage``), and reads them from vCPUs on several
harts. dom1 is destroyed: its pages outlive it, held by dom0's references.
Then dom0 unmaps the whole foreign range in one call from hart 0.
``p2m_free_subtree`` puts every foreign page - the last reference, so each is
freed at once - BEFORE the flush at unlock. While that runs, another of dom0's
vCPUs creates dom2 (the toolstack at work). The host is short of memory (dom9
holds all but ``reserve`` free pages), so dom2's allocations must take the
pages just freed - dirty ones, since their owner died, which the heap hands
out only when no clean page is left. Only the flush on reuse stands between
dom0's stale translations and dom2's memory; this is the claim in the comment
of ``p2m_put_foreign_page``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.scenario import Scenario, WorkloadError
from simulator.xen.base import HypercallFailed
from simulator.xen.p2m import INVALID_MFN

if TYPE_CHECKING:
    from simulator.xen.domain import Domain

NAME = "foreign-unmap-reuse"
DESCRIPTION = "dom0 unmaps foreign pages of a dead dom1 while reading them; dom2 is built from the freed frames"
PARAMS = {
    "small": 16,  # foreign 4K mappings
    "superpages": 0,  # foreign 2M mappings (the model's extension; ARM maps foreign pages 4K at a time)
    "hot": 0.85,  # probability that a dom0 access reads the foreign range
    "settle": 1500,  # steps the guests run before the first change
    "reserve": 8,  # free pages left once dom9 took the rest of memory (-1: no memory pressure)
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (3, "dom0 maps and unmaps from hart 0 while its vCPUs read the foreign pages on two others")
DOMAINS = 3  # dom0, dom1 and dom9 (the memory pressure)

RETRIES = 50  # the toolstack's attempts when memory is short
FOREIGN = 0x80000  # dom0 gfn of the foreign window
U_SMALL = 0x10000  # dom1 gfn of the 4K pages it lends
U_SUPER = 0x10200  # dom1 gfn of its first superpage


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
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

    if p["reserve"] >= 0:
        # the rest of the host's memory belongs to a big guest that is not part of the story
        d9 = await sim.create_domain(9, vcpus=1, pool_pages=4, on=0)
        await sim.squeeze(d9, 0x100000, p["reserve"])

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

    # the toolstack builds dom2 a few pages at a time; with memory this short, -ENOMEM means
    # "wait for the unmap to free more" and it retries (it gives up only if memory never comes back,
    # which takes a reference leak: the invariants report that one)
    want = small + 64 * supers
    d2 = None
    for _ in range(RETRIES):
        try:
            d2 = await sim.create_domain(2, vcpus=1, pool_pages=4, on=builder)
            break
        except HypercallFailed:
            await sim.elapse(40)
    gfn, tries = 0x4000, 0
    while d2 is not None and gfn < 0x4000 + want and tries < RETRIES:
        k = min(8, 0x4000 + want - gfn)
        rc = await sim.on(builder, f"populate_physmap(dom2, {gfn:#x}, {k})", sim.xen.populate_physmap, d2, gfn, k, 0)
        gfn += len(_mapped(sim, d2, gfn, k))
        if rc:
            tries += 1
            await sim.elapse(40)
    await sim.wait(unmap)
    for pat in readers:
        pat.aim((), 0.0)  # dom0 no longer reads the window it unmapped
    if d2 is not None and gfn > 0x4000:
        await sim.run_vcpu(d2.vcpus[0], builder, sim.pattern([(0x4000, gfn - 0x4000)]))
    await sim.elapse(rng.randrange(500, 1500))

    built = [d0] + ([d2] if d2 is not None else [])
    for d in built:
        await sim.pause(d)
    for d in built:
        await sim.destroy(d, on=rng.randrange(n))


def _mapped(sim: Scenario, d: Domain, gfn: int, k: int) -> list[int]:
    """The gfns of [gfn, gfn + k) that are mapped now (a failed populate_physmap maps a prefix)."""
    return [g for g in range(gfn, gfn + k) if sim.xen.p2m_get_entry(d.p2m, g)[0] != INVALID_MFN]


if __name__ == "__main__":
    import sys

    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *sys.argv[1:]]))
