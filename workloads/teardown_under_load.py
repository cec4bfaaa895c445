"""teardown-under-load: P2M subtrees freed while the domain's own vCPUs translate.

dom1's guest-physical space at 0x40000 is a row of 2 MiB chunks: even chunks
are mapped with 4K pages (so each has its own level-0 table), odd chunks with
one 2M superpage.  dom1's vCPUs run on every hart but 0 and aim their
accesses at the chunks about to go.  From hart 0, dom1 gives back a range
that covers a whole 4K chunk and part of the next superpage, in one p2m lock
hold: the 4K chunk's table is freed to the pool, and splitting the superpage
takes a table from the pool at once - with a tight pool, the same page.  Any
hart that still caches a walk through the freed table now walks the new one.

Half the time, the toolstack also resizes dom1's p2m pool meanwhile (it
takes only the paging lock): a table freed to the pool can leave for the
heap and come back before every hart has been fenced.

Meanwhile dom2 and dom3 share harts with dom1 (so dom1's dirty_cpumask and
VMIDs matter on harts that run someone else), dom2 is destroyed, and dom4 and
dom5 are created so that freed frames are reused by other domains.
"""

from __future__ import annotations

from simulator.engine.scenario import Scenario, WorkloadError

NAME = "teardown-under-load"
DESCRIPTION = "dom1 frees tables and superpages under its own running vCPUs; dom2 dies; dom4/5 reuse the frames"
PARAMS = {
    "chunks": 6,  # 2 MiB chunks of dom1 (even: 4K pages, odd: a superpage)
    "dense": 48,  # 4K pages mapped at the start of each even chunk
    "pool_slack": 0,  # spare pages in dom1's p2m pool beyond what its tables need
    "hot": 0.8,  # probability that a dom1 access aims at the chunks being torn down
    "settle": 1500,  # steps the guests run before the first removal
    "resize": True,  # the toolstack resizes dom1's p2m pool while it gives memory back
    "concurrent": True,  # sometimes a second give-back on dom1 contends for its p2m lock
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (2, "dom1 gives memory back from hart 0 while its vCPUs run on the others")
DOMAINS = 4  # dom1, dom2 and dom3, then dom4 and dom5 while one of them is still alive

BASE = 0x40000
CHUNK = 512


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    chunks, dense = p["chunks"], p["dense"]
    if chunks < 2 or not 1 <= dense <= CHUNK:
        raise WorkloadError("teardown-under-load needs chunks >= 2 and 1 <= dense <= 512")
    need = chunks // 2 * CHUNK + (chunks + 1) // 2 * dense
    if need > sim.xen.heap.nr_free // 2:  # dom4 and dom5 are built from what dom1 gives back, beside the others
        raise WorkloadError(
            f"teardown-under-load -p chunks={chunks} maps {need:,} pages; the machine has {sim.xen.heap.nr_free:,} "
            "free frames, and the workload needs twice what dom1 maps: fewer chunks, or more --frames"
        )

    # dom1: one table per level between the root and level 0 (one in Sv39x4) + a level-0 table per 4K chunk
    tables = sim.xen.gstage_mode.root_level - 1 + (chunks + 1) // 2
    d1 = await sim.create_domain(1, vcpus=n - 1, pool_pages=tables + p["pool_slack"])
    mapped: list[tuple[int, int]] = []
    for c in range(chunks):
        gfn = BASE + c * CHUNK
        if c % 2 == 0:
            await sim.populate(d1, gfn, dense, order=0)
            mapped.append((gfn, dense))
        else:
            await sim.populate(d1, gfn, CHUNK, order=9)
            mapped.append((gfn, CHUNK))

    d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
    await sim.populate(d2, 0x1000, 32, order=0)
    await sim.populate(d2, 0x1200, CHUNK, order=9)
    d3 = await sim.create_domain(3, vcpus=1, pool_pages=4)
    await sim.populate(d3, 0x2000, 32, order=0)

    patterns = [sim.pattern(mapped, write_ratio=0.3) for _ in d1.vcpus]
    for i, v in enumerate(d1.vcpus):
        await sim.run_vcpu(v, 1 + i, patterns[i])
    p2 = sim.pattern([(0x1000, 32), (0x1200, CHUNK)])
    p3 = sim.pattern([(0x2000, 32)])
    d2.vcpus[0].program, d3.vcpus[0].program = p2, p3
    await sim.elapse(p["settle"])

    # time-share the last harts: dom1's vCPUs leave and come back
    async def shuffle() -> None:
        if n < 3:
            return
        h = 1 + rng.randrange(n - 1)
        other = d2.vcpus[0] if not d2.is_dying and rng.random() < 0.5 else d3.vcpus[0]
        if other.processor is None:
            await sim.run_vcpu(other, h)
            await sim.elapse(rng.randrange(100, 800))
        v = d1.vcpus[h - 1]
        if v.processor is None:
            await sim.run_vcpu(v, h)

    async def resize_pool() -> None:
        size = d1.arch_paging.total_pages
        await sim.xen.paging_set_allocation(d1, 0)
        await sim.xen.paging_set_allocation(d1, size)

    for c in range(0, chunks - 1, 2):
        hot = [(BASE + c * CHUNK, dense), (BASE + (c + 1) * CHUNK, CHUNK)]
        for pat in patterns:
            pat.aim(hot, p["hot"])
        await sim.elapse(rng.randrange(300, 1500))
        await shuffle()
        # how much of the next superpage goes too: often fewer pages than the 4K chunk had, so the
        # table the split reuses still maps, at some of the indices stale walks read, pages that stay
        extra = 1 + rng.randrange(dense - 1) if dense > 1 and rng.random() < 0.5 else 1 + rng.randrange(CHUNK - 1)
        job = sim.start(
            0,
            f"decrease_reservation(dom1, {BASE + c * CHUNK:#x}, {CHUNK + extra})",
            sim.xen.decrease_reservation,
            d1,
            BASE + c * CHUNK,
            CHUNK + extra,
        )
        await sim.elapse(rng.randrange(50, 600))
        if p["resize"] and rng.random() < 0.5:
            # meanwhile the toolstack shrinks and regrows dom1's p2m pool (paging lock only)
            await sim.wait(sim.start(n - 1, "paging_set_allocation(dom1)", resize_pool))
        other = None
        if p["concurrent"] and c + 2 < chunks and rng.random() < 0.5:
            # another of dom1's vCPUs gives a page back at the same time: the p2m lock is contended
            g = BASE + (c + 2) * CHUNK + rng.randrange(dense)
            other = sim.start(n - 1, f"decrease_reservation(dom1, {g:#x}, 1)", sim.xen.decrease_reservation, d1, g, 1)
        await shuffle()
        await sim.wait(job)
        if other is not None:
            await sim.wait(other)
        gone_end = BASE + c * CHUNK + CHUNK + extra
        mapped = [(g, k) for g, k in mapped if g + k <= BASE + c * CHUNK] + [
            (max(g, gone_end), g + k - max(g, gone_end)) for g, k in mapped if g + k > gone_end
        ]
        for pat in patterns:
            pat.cover(mapped)
            pat.aim((), 0.0)
        await sim.elapse(rng.randrange(200, 1000))

    # dom2 dies while dom1 runs; new domains take its frames
    await sim.destroy(d2, on=n - 1)
    d4 = await sim.create_domain(4, vcpus=1, pool_pages=4, on=n - 1)
    await sim.populate(d4, 0x3000, CHUNK, order=9, on=n - 1)
    await sim.populate(d4, 0x3400, 32, order=0, on=n - 1)
    d5 = await sim.create_domain(5, vcpus=1, pool_pages=4, on=0)
    await sim.populate(d5, 0x5000, 64, order=0, on=0)
    await sim.run_vcpu(d4.vcpus[0], n - 1, sim.pattern([(0x3000, CHUNK), (0x3400, 32)]))
    await sim.elapse(rng.randrange(500, 2000))

    # final teardown: everything goes back
    for d in (d1, d3, d4, d5):
        await sim.pause(d)
    for d in (d1, d3, d4, d5):
        await sim.destroy(d, on=rng.randrange(n))


if __name__ == "__main__":
    import sys

    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *sys.argv[1:]]))
