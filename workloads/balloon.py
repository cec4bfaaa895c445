"""balloon: a running guest gives memory back and takes other memory, over and over.

dom1 runs a vCPU on every hart but 0.  Its balloon driver, on one or two of
those vCPUs at once, gives pages back with ``decrease_reservation`` - batches
of 4K runs from its 4K-mapped chunks at 0x10000, or whole 2M superpages from
its row at 0x40000, now and then a whole 4K chunk (its level-0 table goes
back to the pool) - and then takes others with ``populate_physmap`` (4K pages
into the holes, 2M extents into empty superpage slots).  Its other vCPUs keep
translating, aimed at what is being given back.

Two things make the freed frames matter at once:

* dom0, the backend (its vCPU on hart 0), keeps some of dom1's 4K pages
  mapped foreign - grant mappings, in effect - and reads them.  When dom1
  balloons out a page dom0 maps, the page lives on, held by dom0's reference;
  dom0 then unmaps it, and ``p2m_free_subtree`` frees it at once, before the
  flush at unlock.
* Meanwhile the toolstack (on hart 0) builds another domain from the frames
  just returned: ``domain_create`` and ``populate_physmap`` take the most
  recently freed pages first.  The built domain runs for a while and is
  destroyed when the next one is built.

Two balloon operations on dom1's p2m from two harts, a foreign unmap racing a
domain build: the flush at unlock, its order against the unlock itself, and
the flush on reuse are what keep every hart off a frame handed out again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from simulator.engine.guest import subtract
from simulator.engine.scenario import Scenario, WorkloadError
from simulator.riscv.pte import ROOT_PAGES

if TYPE_CHECKING:
    from simulator.xen.domain import Domain

NAME = "balloon"
DESCRIPTION = "dom1 balloons 4K and 2M batches out and in under its vCPUs; dom0 drops grants; new domains reuse frames"
PARAMS = {
    "rounds": 8,  # balloon out / in cycles
    "small": 48,  # 4K pages mapped at the start of each of dom1's two 4K chunks
    "superpages": 4,  # dom1's 2M superpages (of 6 slots)
    "batch": 3,  # most 4K runs in one 4K batch
    "backend": 6,  # dom1 pages dom0 keeps mapped foreign
    "hot": 0.8,  # probability that a dom1 access aims at what is being given back
    "settle": 1000,  # steps the guests run before the first change
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (3, "dom0 on hart 0, dom1 on the others")
DOMAINS = 3  # the most domains alive at once

SMALL = (0x10000, 0x10200)  # dom1's two 4K chunks (1G region 0)
SUPER = 0x40000  # dom1's superpage slots (1G region 1)
SLOTS = 6
WINDOW = 0x80000  # dom0's foreign window
BUILD = 0x3000  # where a built domain's RAM goes
CHUNK = 512


def _runs(gfns: list[int]) -> list[tuple[int, int]]:
    """Sorted gfns as (first, count) runs."""
    out: list[tuple[int, int]] = []
    for g in sorted(gfns):
        if out and out[-1][0] + out[-1][1] == g:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((g, 1))
    return out


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    if not 4 <= p["small"] <= CHUNK or not 1 <= p["superpages"] <= SLOTS - 1:
        raise WorkloadError(f"balloon needs 4 <= small <= 512 and 1 <= superpages <= {SLOTS - 1}")
    if not 1 <= p["batch"] <= 32 or not 0 <= p["backend"] <= 64 or p["rounds"] < 1:
        raise WorkloadError("balloon needs 1 <= batch <= 32, 0 <= backend <= 64 and rounds >= 1")
    if not 0.0 <= p["hot"] <= 1.0:
        raise WorkloadError("balloon: hot is a probability")
    if sim.xen.memory.nr_frames < (SLOTS + 8) * CHUNK:
        raise WorkloadError("balloon: not enough memory for dom1's superpages (use --frames)")

    # dom1's pool: the tables above level 1 (one per level between the root and level 1, none in
    # Sv39x4), two level-1 tables, the two 4K chunks' level-0 tables, and one spare
    upper = sim.xen.gstage_mode.root_level - 2
    d1 = await sim.create_domain(1, vcpus=n - 1, pool_pages=upper + 5)
    small: set[int] = set()  # dom1's mapped 4K gfns
    for base in SMALL:
        await sim.populate(d1, base, p["small"])
        small.update(range(base, base + p["small"]))
    supers: set[int] = set(range(p["superpages"]))  # mapped superpage slots
    for s in sorted(supers):
        await sim.populate(d1, SUPER + s * CHUNK, CHUNK, order=9)

    # dom0: two level-1 and two level-0 tables, and the metadata page of the foreign window's table
    d0 = await sim.create_domain(0, vcpus=1, pool_pages=upper + 5)
    await sim.populate(d0, 0x100, 32)
    grants: dict[int, int] = {}  # slot of dom0's foreign window -> the dom1 gfn it maps

    async def grant(slot: int) -> None:
        g = rng.choice(sorted(small))
        rc = await sim.on(0, f"map_foreign(dom0, {WINDOW + slot:#x})", sim.xen.map_foreign, d0, WINDOW + slot, d1, g, 0)
        if rc == 0:
            grants[slot] = g
        # else the page is gone although dom1 still maps it (only an injected reference bug does
        # that, and the oracle reports it): the slot stays empty, the run goes on

    for slot in range(p["backend"]):
        await grant(slot)

    def dom1_ranges() -> list[tuple[int, int]]:
        return _runs(sorted(small)) + [(SUPER + s * CHUNK, CHUNK) for s in sorted(supers)]

    pats = [sim.pattern(dom1_ranges(), write_ratio=0.3) for _ in d1.vcpus]
    for i, v in enumerate(d1.vcpus):
        await sim.run_vcpu(v, 1 + i, pats[i])
    backend_reads = [(WINDOW, p["backend"])] if p["backend"] else []
    pat0 = sim.pattern([(0x100, 32)], hot=backend_reads, hot_prob=0.85 if backend_reads else 0.0)
    await sim.run_vcpu(d0.vcpus[0], 0, pat0)
    await sim.elapse(p["settle"])

    built: list[Domain] = []  # the domain built from the returned frames (at most one alive)

    async def build_domain(domid: int, nr: int) -> None:
        d = await sim.xen.domain_create(domid, 1, upper + 3 + ROOT_PAGES)
        await checked(sim.xen.populate_physmap, f"populate_physmap(dom{domid}, {BUILD:#x}, {nr})", d, BUILD, nr, 0)

    async def checked(fn: Callable[..., Awaitable[int]], label: str, *args: Any) -> None:
        rc = await fn(*args)
        if rc:
            raise WorkloadError(f"{label} failed: {rc}")

    def balloon_out(zone: int) -> tuple[str, list[tuple[int, int]], list[tuple[int, int, int]]]:
        """(label, ranges given back, what to populate later) for one batch in one zone; updates the books.

        A zone is one 4K chunk and every other superpage slot, so two balloon threads never
        touch the same gfns.
        """
        base = SMALL[zone]
        mine = sorted(g for g in small if base <= g < base + CHUNK)
        slots = range(zone, SLOTS, 2)
        full = [x for x in slots if x in supers]
        r = rng.random()
        if r < 0.35 and full:
            src = rng.choice(full)
            free = [x for x in slots if x not in supers]
            dst = rng.choice(free) if free else src
            supers.discard(src)
            supers.add(dst)
            return "2M batch", [(SUPER + src * CHUNK, CHUNK)], [(SUPER + dst * CHUNK, CHUNK, 9)]
        if r < 0.5 or len(mine) < 4:
            # a whole 4K chunk: its level-0 table goes back to the pool
            small.difference_update(mine)
            nr = 4 + rng.randrange(13)
            small.update(range(base, base + nr))
            return "4K chunk", [(base, CHUNK)], [(base, nr, 0)]
        gone: set[int] = set()
        granted = sorted(g for g in grants.values() if base <= g < base + CHUNK)
        for _ in range(1 + rng.randrange(p["batch"])):
            g = rng.choice(granted) if granted and rng.random() < 0.4 else rng.choice(mine)
            gone.update(x for x in range(g, g + 1 + rng.randrange(4)) if x in small)
        small.difference_update(gone)
        # the balloon takes as many 4K pages back elsewhere in the chunk
        holes = [g for g in range(base, base + CHUNK) if g not in small and g not in gone]
        back = sorted(rng.sample(holes, min(len(gone), len(holes))))
        small.update(back)
        return "4K batch", _runs(sorted(gone)), [(g, k, 0) for g, k in _runs(back)]

    for rnd in range(p["rounds"]):
        # one or two balloon threads of dom1 at once, each on the hart of one of its vCPUs
        nthreads = 2 if n > 3 and rng.random() < 0.5 else 1
        harts = rng.sample(range(1, n), nthreads)
        zones = [0, 1] if nthreads == 2 else [rng.randrange(2)]
        ops = [balloon_out(z) for z in zones]
        targets = [r for _, rs, _ in ops for r in rs]
        for pat in pats:
            pat.aim(targets, p["hot"])
        await sim.elapse(rng.randrange(300, 1000))

        async def give_back(rs: list[tuple[int, int]]) -> None:
            for g, k in rs:
                await checked(sim.xen.decrease_reservation, f"decrease_reservation(dom1, {g:#x}, {k})", d1, g, k)

        jobs = [
            sim.start(h, f"balloon out: {label} ({len(rs)} ranges)", give_back, rs)
            for h, (label, rs, _) in zip(harts, ops, strict=True)
        ]
        await sim.elapse(rng.randrange(20, 300))

        # the toolstack builds the next domain from whatever comes back (at most one alive)
        if built and rng.random() < 0.7:
            await sim.destroy(built.pop(), on=rng.randrange(n))
        domid = 10 + rnd
        build_on, nr = rng.randrange(1, n), 4 + rng.randrange(9)
        build = None
        if not built and rng.random() < 0.3:
            build = sim.start(build_on, f"domain_create(dom{domid}) + populate", build_domain, domid, nr)
        await sim.wait(*jobs)
        gone = {g for _, rs, _ in ops for r0, k in rs for g in range(r0, r0 + k)}
        for pat in pats:
            pat.cover(subtract(dom1_ranges(), [r for _, rs, _ in ops for r in rs]) or [(SMALL[0], 1)])

        # the backend drops its grants of the pages dom1 gave back, in one call from another
        # hart than its reader's: each page's last reference goes, the page is freed at once
        dropped = sorted(slot for slot, g in grants.items() if g in gone)
        regrant: list[int] = []
        if dropped:
            lo, hi = dropped[0], dropped[-1] + 1
            regrant = list(range(lo, hi))
            for slot in regrant:
                grants.pop(slot, None)
            unmap = sim.start(
                rng.randrange(1, n),
                f"unmap_foreign(dom0, {WINDOW + lo:#x}, {hi - lo})",
                sim.xen.unmap_foreign,
                d0,
                WINDOW + lo,
                hi - lo,
            )
            if build is None and not built:
                await sim.elapse(rng.randrange(0, 120))
                build = sim.start(build_on, f"domain_create(dom{domid}) + populate", build_domain, domid, nr)
            (rc,) = await sim.wait(unmap)
            if rc:
                raise WorkloadError(f"unmap_foreign(dom0, {WINDOW + lo:#x}, {hi - lo}) failed: {rc}")
        elif build is None and not built and rng.random() < 0.7:
            build = sim.start(build_on, f"domain_create(dom{domid}) + populate", build_domain, domid, nr)
        if build is not None:
            await sim.wait(build)
            d = sim.xen.domains[domid]
            built.append(d)
            await sim.run_vcpu(d.vcpus[0], rng.randrange(1, n), sim.pattern([(BUILD, 8)]))
        await sim.elapse(rng.randrange(100, 600))

        # balloon in: other pages, 4K and 2M, from the same harts
        async def take(fills: list[tuple[int, int, int]]) -> None:
            for g, k, order in fills:
                await checked(sim.xen.populate_physmap, f"populate_physmap(dom1, {g:#x}, {k})", d1, g, k, order)

        jobs = [
            sim.start(h, f"balloon in: {label}", take, fills) for h, (label, _, fills) in zip(harts, ops, strict=True)
        ]
        await sim.wait(*jobs)
        for pat in pats:
            pat.cover(dom1_ranges())
            pat.aim((), 0.0)
        for slot in regrant:
            await grant(slot)
        # the built domain's vCPU took a dom1 hart: give it back now and then
        for i, v in enumerate(d1.vcpus):
            if v.processor is None and rng.random() < 0.6:
                await sim.run_vcpu(v, 1 + i)
        await sim.elapse(rng.randrange(200, 800))

    for d in (*built, d1, d0):
        await sim.pause(d)
    for d in (*built, d1, d0):
        await sim.destroy(d, on=rng.randrange(n))


if __name__ == "__main__":
    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *__import__("sys").argv[1:]]))
