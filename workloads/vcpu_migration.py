"""vcpu-migration: vCPUs hop between harts while the p2m of their domain changes.

Three domains share the harts, with more vCPUs than harts, and a scheduler
that keeps moving them: a vCPU migrates to another hart, a hart is given to
a waiting vCPU (the one it switches out queues), a vCPU leaves a hart and
comes back to the same one later, and now and then a hart goes idle.  All
three domains map RAM at the same guest-physical addresses, so a VMID that
names one vCPU on one hart and another vCPU elsewhere aliases real entries.

Meanwhile dom1 - the domain whose vCPUs hop the most - changes its p2m from
one hart while its vCPUs hop on the others.  Its space at 0x40000 is a row of
2 MiB chunks, each mapped with 4K pages (and so owning a level-0 table) or
with one superpage, and the pool is tight:

* **shift**: one range covers a whole 4K chunk and the first pages of the
  superpage after it, in one p2m lock hold: the 4K chunk's table is freed to
  the pool and the split takes it straight back; the chunk is repopulated as
  a superpage and the split pages as 4K pages.
* **wrap**: a 4K chunk is given back whole (its table to the pool), then a
  few pages inside another superpage (the split takes the table).
* **churn**: a few 4K pages inside a 4K chunk are given back and repopulated.

Which harts the flushes reach is ``dirty_cpumask``'s business: a hart the
vCPU has left may still cache its entries, under a VMID that survives only
as long as the vCPU comes back to the same hart in the same generation;
a vCPU that moves must get a new VMID there (``vmid_flush_vcpu``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from simulator.engine.guest import subtract
from simulator.engine.scenario import Scenario, WorkloadError

NAME = "vcpu-migration"
DESCRIPTION = "vCPUs of three domains hop between harts while dom1 frees and reuses p2m tables under them"
PARAMS = {
    "rounds": 10,  # p2m changes of dom1
    "vcpus": 0,  # dom1's vCPUs (0: one per hart)
    "chunks": 6,  # 2 MiB chunks of dom1 (even: 4K pages, odd: a superpage)
    "dense": 32,  # 4K pages mapped at the start of each 4K chunk
    "hops": 3,  # most scheduler moves while one change runs
    "pool_slack": 0,  # spare pages in dom1's p2m pool
    "hot": 0.8,  # probability that a dom1 access aims at the chunks being changed
    "settle": 1000,  # steps the guests run before the first change
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (3, "one changes the p2m, two swap vCPUs")
DOMAINS = 3  # the most domains alive at once

BASE = 0x40000  # every domain's RAM starts here (1G region 1)
CHUNK = 512


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    chunks, dense = p["chunks"], p["dense"]
    nv = p["vcpus"] or n
    if not 3 <= chunks <= 16 or not 1 <= dense <= CHUNK:
        raise WorkloadError("vcpu-migration needs 3 <= chunks <= 16 and 1 <= dense <= 512")
    if not 2 <= nv <= 4 * n:
        raise WorkloadError(f"vcpu-migration needs 2 <= vcpus <= {4 * n} (four per hart)")
    if p["rounds"] < 1 or p["hops"] < 1 or p["pool_slack"] < 0 or not 0.0 <= p["hot"] <= 1.0:
        raise WorkloadError("vcpu-migration needs rounds >= 1, hops >= 1, pool_slack >= 0, 0 <= hot <= 1")
    if sim.xen.memory.nr_frames < (chunks + 8) * CHUNK:
        raise WorkloadError("vcpu-migration: not enough memory for dom1's superpages (use --frames)")

    small = [c % 2 == 0 for c in range(chunks)]  # True: 4K pages (with a level-0 table)
    count = [dense if small[c] else CHUNK for c in range(chunks)]  # pages mapped from the chunk's start
    # dom1's pool: the tables above level 1 (one per level between the root and level 1, none
    # in Sv39x4), its level-1 table and one level-0 table per 4K chunk; shift and wrap give a
    # table back before they take one, so the pool never needs more
    upper = sim.xen.gstage_mode.root_level - 2
    d1 = await sim.create_domain(1, vcpus=nv, pool_pages=upper + 1 + sum(small) + p["pool_slack"])
    for c in range(chunks):
        await sim.populate(d1, BASE + c * CHUNK, count[c], order=0 if small[c] else 9)
    # dom2 and dom3 at the same gfns: a VMID mix-up translates through the wrong p2m
    d2 = await sim.create_domain(2, vcpus=2, pool_pages=upper + 3)
    await sim.populate(d2, BASE, dense)
    await sim.populate(d2, BASE + CHUNK, CHUNK, order=9)
    d3 = await sim.create_domain(3, vcpus=1, pool_pages=upper + 2)
    await sim.populate(d3, BASE, dense)
    domains = (d1, d2, d3)

    def layout() -> list[tuple[int, int]]:
        return [(BASE + c * CHUNK, count[c]) for c in range(chunks)]

    pats = [sim.pattern(layout(), write_ratio=0.3) for _ in d1.vcpus]
    for v, pat in zip(d1.vcpus, pats, strict=True):
        v.program = pat
    for v in d2.vcpus:
        v.program = sim.pattern([(BASE, dense), (BASE + CHUNK, CHUNK)])
    d3.vcpus[0].program = sim.pattern([(BASE, dense)])
    everyone = [v for d in domains for v in d.vcpus]
    for h, v in enumerate(everyone[:n]):  # dom1's first
        await sim.run_vcpu(v, h)
    await sim.elapse(p["settle"])

    async def hop() -> None:
        """One scheduler decision: who runs where next."""
        h = rng.randrange(n)
        waiting = [v for v in everyone if v.processor is None]
        r = rng.random()
        if r < 0.1 and sim.xen.curr_vcpu[h] is not None:
            await sim.deschedule(h)  # the hart idles; its vCPU waits
            return
        if r < 0.55 and waiting:
            back = [v for v in waiting if v.last_processor == h]
            v = rng.choice(back) if back and rng.random() < 0.5 else rng.choice(waiting)
        else:
            running = [v for v in everyone if v.processor not in (None, h)]
            if not running:
                return
            ones = [v for v in running if v.domain is d1]
            v = rng.choice(ones) if ones and rng.random() < 0.7 else rng.choice(running)
        await sim.run_vcpu(v, h)

    async def fill_idle() -> None:
        for h in range(n):
            waiting = [v for v in everyone if v.processor is None]
            if sim.xen.curr_vcpu[h] is None and waiting and rng.random() < 0.7:
                await sim.run_vcpu(rng.choice(waiting), h)

    async def hypercall(hart: int, label: str, fn: Callable[..., Awaitable[int]], *args: Any) -> None:
        """Run one hypercall on ``hart`` while the scheduler keeps moving vCPUs."""
        job = sim.start(hart, label, fn, *args)
        for _ in range(1 + rng.randrange(p["hops"])):
            await hop()
            await sim.elapse(rng.randrange(10, 250))
        (rc,) = await sim.wait(job)
        if rc:
            raise WorkloadError(f"{label} failed: {rc}")

    async def decrease(hart: int, gfn: int, nr: int) -> None:
        await hypercall(hart, f"decrease_reservation(dom1, {gfn:#x}, {nr})", sim.xen.decrease_reservation, d1, gfn, nr)

    async def populate(hart: int, gfn: int, nr: int, order: int) -> None:
        label = f"populate_physmap(dom1, {gfn:#x}, {nr}, order {order})"
        await hypercall(hart, label, sim.xen.populate_physmap, d1, gfn, nr, order)

    for _round in range(p["rounds"]):
        shifts = [c for c in range(chunks - 1) if small[c] and not small[c + 1]]
        smalls = [c for c in range(chunks) if small[c]]
        supers = [c for c in range(chunks) if not small[c]]
        kinds = ["shift"] * 3 * bool(shifts) + ["wrap"] * bool(smalls and supers) + ["churn"] * bool(smalls)
        kind = rng.choice(kinds)
        if kind == "shift":
            c = rng.choice(shifts)
            extra = 1 + rng.randrange(16)
            gone = [(BASE + c * CHUNK, CHUNK + extra)]
            refill = [(BASE + c * CHUNK, CHUNK, 9), (BASE + (c + 1) * CHUNK, extra, 0)]
            touched = [c, c + 1]
        elif kind == "wrap":
            c, s = rng.choice(smalls), rng.choice(supers)
            off, k = rng.randrange(CHUNK - 8), 1 + rng.randrange(8)
            gone = [(BASE + c * CHUNK, CHUNK), (BASE + s * CHUNK + off, k)]
            refill = [(BASE + c * CHUNK, CHUNK, 9), (BASE + s * CHUNK + off, k, 0)]
            touched = [c, s]
        else:
            c = rng.choice(smalls)
            k = 1 + rng.randrange(min(4, count[c]))
            off = rng.randrange(count[c] - k + 1)
            gone = [(BASE + c * CHUNK + off, k)]
            refill = [(BASE + c * CHUNK + off, k, 0)]
            touched = [c]
        for pat in pats:
            pat.aim([(BASE + t * CHUNK, count[t]) for t in touched], p["hot"])
        await sim.elapse(rng.randrange(200, 900))

        hart = rng.randrange(n)
        # half the time one of dom1's vCPUs steps away from its hart for the change (another
        # domain's vCPU or nothing runs there) and comes back to the same hart afterwards
        away = [v for v in d1.vcpus if v.processor not in (None, hart)]
        back, home = None, 0
        if away and rng.random() < 0.5:
            back = rng.choice(away)
            home = back.processor
            others = [v for v in everyone if v.domain is not d1 and v.processor is None]
            if others and rng.random() < 0.7:
                await sim.run_vcpu(rng.choice(others), home)
            else:
                await sim.deschedule(home)
        for gfn, nr in gone:
            await decrease(hart, gfn, nr)
        holed = subtract(layout(), gone)
        for pat in pats:
            pat.cover(holed)
        if back is not None and back.processor is None:
            await sim.run_vcpu(back, home)
        else:
            await hop()
        await sim.elapse(rng.randrange(50, 500))
        for gfn, nr, order in refill:
            await populate(rng.randrange(n), gfn, nr, order)
        if kind != "churn":
            small[touched[0]], small[touched[1]] = False, True
            count[touched[0]], count[touched[1]] = CHUNK, CHUNK
        for pat in pats:
            pat.cover(layout())
            pat.aim((), 0.0)
        await fill_idle()
        await sim.elapse(rng.randrange(200, 900))

    for d in domains:
        await sim.pause(d)
    for d in domains:
        await sim.destroy(d, on=rng.randrange(n))


if __name__ == "__main__":
    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *__import__("sys").argv[1:]]))
