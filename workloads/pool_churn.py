"""pool-churn: p2m tables go back to a tight pool and come out again, across many regions.

dom1 maps RAM in several 1 GiB regions (0x40000, 0x80000, ...), each with
four 2 MiB slots - three of them in a row - that are empty, 4K-mapped (a
level-0 table) or one superpage; each region with anything mapped has its
level-1 table.  Its p2m pool holds what the tables need plus ``slack``
pages, so a table freed to the pool's tail comes out again a change or two
later (FIFO), or at once when the same change splits a superpage.
dom1's vCPUs run on every hart but 0 and translate across all regions, aimed
at the ones being changed.  Each round, from one or two harts at once, dom1
maps and unmaps:

* **map 4K**: a few 4K pages in an empty slot (a level-0 table, and a
  level-1 table if the region has none);
* **map 2M**: a superpage in an empty slot;
* **punch**: a 4K range inside a 4K-mapped slot (no table changes);
* **unmap 2M**: a whole slot (a 4K slot's table goes back to the pool);
* **boundary**: a 4K slot and the first pages of the superpage after it in one
  range, in one p2m lock hold: the table is freed, the split takes it back;
* **unmap 1G**: a whole region - its level-1 table and every level-0 table
  under it go back - now and then together with the first pages of the next
  region's superpage, whose split takes the first of them back at once.

Most rounds that only give tables back also have the toolstack resize dom1's
pool meanwhile, again and again while the changes run (``paging_set_allocation``
takes the paging lock only): a table just freed to the pool can leave for the
heap and come back as a pool page before every hart has been fenced.  Only the flush before a table is
freed stands between a hart's cached non-leaf entries and the table's next
life.
"""

from __future__ import annotations

from simulator.engine.scenario import Scenario, WorkloadError
from simulator.riscv.hart import Job

NAME = "pool-churn"
DESCRIPTION = "dom1 maps and unmaps across many 2M/1G regions with a tight pool: tables leave and return (FIFO)"
PARAMS = {
    "rounds": 16,  # rounds of one or two changes
    "regions": 4,  # 1G regions of dom1
    "slack": 1,  # spare pages in dom1's p2m pool beyond what its tables need
    "max_pages": 8,  # most 4K pages one "map 4K" maps
    "resize": True,  # the toolstack resizes the pool during rounds that only free tables
    "hot": 0.8,  # probability that a guest access aims at the regions being changed
    "settle": 800,  # steps the guests run before the first change
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (2, "dom1 changes its p2m from hart 0 while its vCPUs run on the others")
DOMAINS = 1  # the most domains alive at once

GIGA = 1 << 18  # pages in a 1G region
CHUNK = 512
SLOTS = (0, 1, 2, 300)  # 2M slots used in every region (0 and 1, 1 and 2 are neighbours)
EMPTY, SMALL, SUPER = 0, 1, 2
TAKES_TABLES = ("map 4K", "map 2M", "boundary", "unmap 1G+")  # changes that take a table from the pool


def _runs(offsets: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for o in sorted(offsets):
        if out and out[-1][0] + out[-1][1] == o:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((o, 1))
    return out


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    nreg = p["regions"]
    if not 2 <= nreg <= 64 or not 0 <= p["slack"] <= 64 or not 1 <= p["max_pages"] <= 64:
        raise WorkloadError("pool-churn needs 2 <= regions <= 64, 0 <= slack <= 64 and 1 <= max_pages <= 64")
    if p["rounds"] < 1 or not 0.0 <= p["hot"] <= 1.0:
        raise WorkloadError("pool-churn needs rounds >= 1 and 0 <= hot <= 1")
    max_super = 2 * nreg + 1
    if sim.xen.memory.nr_frames < (max_super + 6) * CHUNK:
        raise WorkloadError("pool-churn: not enough memory for the superpages (use --frames or fewer regions)")
    if (nreg + 1) * GIGA > sim.xen.gstage_mode.max_gfn:
        raise WorkloadError(f"pool-churn: {nreg} regions do not fit in the guest-physical space")

    def base(i: int, s: int = 0) -> int:
        return (i + 1) * GIGA + SLOTS[s] * CHUNK

    # the books: per region whether it has a level-1 table, per slot its state and mapped 4K offsets
    l1 = [True] * nreg
    state = [[SMALL, SUPER, SUPER, EMPTY] for _ in range(nreg)]
    pages: list[list[set[int]]] = [[set(), set(), set(), set()] for _ in range(nreg)]

    # the tables above level 1: one per level between the root and level 1 (none in Sv39x4)
    upper = sim.xen.gstage_mode.root_level - 2

    def in_use() -> int:
        return upper + sum(l1) + sum(st == SMALL for row in state for st in row)

    def supers() -> int:
        return sum(st == SUPER for row in state for st in row)

    def neighbours(s: int) -> bool:
        return s + 1 < len(SLOTS) and SLOTS[s + 1] == SLOTS[s] + 1

    pool = in_use() + p["slack"]
    d1 = await sim.create_domain(1, vcpus=n - 1, pool_pages=pool)
    for i in range(nreg):
        for s in range(len(SLOTS)):
            if state[i][s] == SMALL:
                k = 1 + rng.randrange(p["max_pages"])
                await sim.populate(d1, base(i, s), k)
                pages[i][s] = set(range(k))
            elif state[i][s] == SUPER:
                await sim.populate(d1, base(i, s), CHUNK, order=9)

    def mapped() -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for i in range(nreg):
            for s in range(len(SLOTS)):
                if state[i][s] == SUPER:
                    out.append((base(i, s), CHUNK))
                elif state[i][s] == SMALL:
                    out += [(base(i, s) + o, k) for o, k in _runs(pages[i][s])]
        return out or [(base(0), 1)]

    pats = [sim.pattern(mapped(), write_ratio=0.3) for _ in d1.vcpus]
    for i, v in enumerate(d1.vcpus):
        await sim.run_vcpu(v, 1 + i, pats[i])
    await sim.elapse(p["settle"])

    def plan(busy: set[int], free: int) -> tuple[str, int, int, list[int]] | None:
        """(kind, region, slot, regions touched) of one change that fits in ``free`` pool pages."""
        cands: list[tuple[str, int, int, list[int]]] = []
        for i in range(nreg):
            if i in busy:
                continue
            for s in range(len(SLOTS)):
                st = state[i][s]
                if st == EMPTY:
                    need = 0 if l1[i] else 1
                    if need + 1 <= free:
                        cands += [("map 4K", i, s, [i])] * 2
                    if need <= free and supers() < max_super:
                        cands.append(("map 2M", i, s, [i]))
                elif st == SMALL:
                    cands.append(("unmap 2M", i, s, [i]))
                    if len(pages[i][s]) > 1:
                        cands.append(("punch", i, s, [i]))
                    if neighbours(s) and state[i][s + 1] == SUPER:
                        cands += [("boundary", i, s, [i])] * 5
                else:
                    cands.append(("unmap 2M", i, s, [i]))
            if l1[i]:
                cands.append(("unmap 1G", i, 0, [i]))
                if i + 1 < nreg and i + 1 not in busy and state[i + 1][0] == SUPER:
                    # the split of region i + 1's superpage takes a table back (freed just before)
                    cands += [("unmap 1G+", i, 0, [i, i + 1])] * 3
        return rng.choice(cands) if cands else None

    def needs(kind: str, i: int) -> int:
        if kind == "map 4K":
            return 1 + (0 if l1[i] else 1)
        if kind == "map 2M":
            return 0 if l1[i] else 1
        return 0  # everything else gives back at least what it takes, and gives it back first

    async def resize_pool(jobs: list[Job]) -> None:
        for _ in range(8):
            await sim.xen.paging_set_allocation(d1, 0)
            await sim.xen.paging_set_allocation(d1, pool - in_use())
            if all(j.done for j in jobs):
                break

    for _round in range(p["rounds"]):
        ops: list[tuple[str, int, int, list[int]]] = []
        busy: set[int] = set()
        free = pool - in_use()
        for _ in range(2 if rng.random() < 0.5 else 1):
            op = plan(busy, free)
            if op is None:
                break
            ops.append(op)
            busy.update(op[3])
            free -= needs(op[0], op[1])
        if not ops:
            raise WorkloadError("pool-churn: no change fits in the pool (the books are wrong)")
        touched = {i for _k, _i, _s, regs in ops for i in regs}
        hot = [(g, k) for g, k in mapped() if g // GIGA - 1 in touched]
        for pat in pats:
            pat.aim(hot, p["hot"])
        await sim.elapse(rng.randrange(200, 900))

        jobs = []
        calls: list[tuple[str, int, int, int]] = []  # (label, gfn, nr, order) - order < 0: a removal
        for kind, i, s, _regs in ops:
            if kind == "map 4K":
                k = 1 + rng.randrange(p["max_pages"])
                off = rng.randrange(CHUNK - k + 1)
                calls.append((kind, base(i, s) + off, k, 0))
                state[i][s], pages[i][s], l1[i] = SMALL, set(range(off, off + k)), True
            elif kind == "map 2M":
                calls.append((kind, base(i, s), CHUNK, 9))
                state[i][s], l1[i] = SUPER, True
            elif kind == "punch":
                have = sorted(pages[i][s])
                lo = rng.randrange(len(have))
                hi = min(len(have), lo + 1 + rng.randrange(4))
                if hi - lo == len(have):
                    hi -= 1
                first, last = have[lo], have[hi - 1]
                calls.append((kind, base(i, s) + first, last - first + 1, -1))
                pages[i][s] -= set(range(first, last + 1))
            elif kind == "unmap 2M":
                calls.append((kind, base(i, s), CHUNK, -1))
                state[i][s], pages[i][s] = EMPTY, set()
            elif kind == "boundary":
                b = 1 + rng.randrange(16)
                calls.append((kind, base(i, s), CHUNK + b, -1))
                state[i][s], pages[i][s] = EMPTY, set()
                state[i][s + 1], pages[i][s + 1] = SMALL, set(range(b, CHUNK))
            else:  # unmap 1G, unmap 1G+
                b = 1 + rng.randrange(16) if kind == "unmap 1G+" else 0
                calls.append((kind, base(i), GIGA + b, -1))
                l1[i] = False
                state[i] = [EMPTY] * len(SLOTS)
                pages[i] = [set() for _ in SLOTS]
                if b:
                    state[i + 1][0], pages[i + 1][0] = SMALL, set(range(b, CHUNK))
        harts = rng.sample(range(n), len(calls))
        resizing = p["resize"] and not any(kind in TAKES_TABLES for kind, *_ in calls) and rng.random() < 0.8
        resize = None
        for h, (kind, gfn, nr, order) in zip(harts, calls, strict=True):
            if order < 0:
                label, fn, args = f"decrease_reservation(dom1, {gfn:#x}, {nr})", sim.xen.decrease_reservation, ()
            else:
                label, fn, args = (
                    f"populate_physmap(dom1, {gfn:#x}, {nr}, order {order})",
                    sim.xen.populate_physmap,
                    (order,),
                )
            jobs.append(sim.start(h, f"{kind}: {label}", fn, d1, gfn, nr, *args))
            if resizing and resize is None:
                # the toolstack shrinks dom1's pool to nothing and grows it back, again and again
                # while the changes run (never while one needs a table from the pool: it would
                # find the pool empty)
                await sim.elapse(rng.randrange(1, 40))
                resize = sim.start(rng.randrange(n), "paging_set_allocation(dom1), repeatedly", resize_pool, jobs)
            await sim.elapse(rng.randrange(1, 200))
        for rc, (kind, gfn, nr, _order) in zip(await sim.wait(*jobs), calls, strict=True):
            if rc:
                raise WorkloadError(f"{kind} at {gfn:#x} ({nr} pages) failed: {rc}")
        if resize is not None:
            await sim.wait(resize)
        if d1.arch_paging.total_pages != pool - in_use():
            # the books and the pool agree again: the toolstack sets the allocation
            await sim.on(
                rng.randrange(n), "paging_set_allocation(dom1)", sim.xen.paging_set_allocation, d1, pool - in_use()
            )
        for pat in pats:
            pat.cover(mapped())
            pat.aim((), 0.0)
        await sim.elapse(rng.randrange(200, 700))

    await sim.pause(d1)
    await sim.destroy(d1, on=rng.randrange(n))


if __name__ == "__main__":
    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *__import__("sys").argv[1:]]))
