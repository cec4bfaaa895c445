"""superpage-shatter: superpages split into 4K tables under harts that still hold them.

dom1 maps a row of 2 MiB RAM superpages at 0x80000 (and, when ``--frames``
leaves a free 1 GiB block, one 1 GiB superpage at 0x100000) and runs a vCPU on
every hart but 0, aiming its accesses at the superpages.  Each round, from
one or two harts at once, dom1 changes 4K pieces inside them:

* **shatter**: ``decrease_reservation`` of one page or a small range inside
  an intact superpage (now and then a range straddling two neighbours, which
  splits both).  ``p2m_split_superpage`` takes a table from the pool, fills
  it and publishes it with one store: there is no break-before-make, so other
  harts keep using their superpage TLB entry - benign while its frames stay
  allocated, which lasts only until the flush at unlock; then the pages go
  back to the heap and are repopulated at once (4K ``populate_physmap`` of the
  same gfns, most likely with the same frames).
* **re-merge**: a shattered superpage is given back whole (its level-0 table
  goes back to the pool) and populated again as a 2M superpage.
* **boundary**: one range covers a whole shattered superpage and the first
  pages of the intact one after it, in one p2m lock hold: the level-0 table
  is freed to the tight pool and the split takes it straight back (FIFO), so
  a hart that still caches the non-leaf entry walks into someone else's table.

What stands between a hart and a frame handed out again is the flush at
unlock (when the frames are freed), the flush in ``p2m_free_subtree`` (when
tables are freed) and the flush on reuse.

The 1 GiB superpage needs ``--frames 524288`` or more and a step budget that
can afford destroying it (262,144 pages freed one by one: ``--steps 1000000``);
``-p giga=-1`` (the default) maps it only when both allow, ``1`` insists,
``0`` never does.
"""

from __future__ import annotations

from simulator.engine.guest import subtract
from simulator.engine.scenario import Scenario, WorkloadError

NAME = "superpage-shatter"
DESCRIPTION = "dom1 splits its 2M (and 1G) superpages 4K at a time under vCPUs that translate through them"
PARAMS = {
    "superpages": 6,  # 2M RAM superpages of dom1 at 0x80000
    "rounds": 10,  # rounds of shatter / re-merge / boundary operations
    "max_shattered": 2,  # superpages split at once (each holds a level-0 table from the pool)
    "max_hole": 4,  # most 4K pages one shatter gives back
    "giga": -1,  # 1G superpage: -1 when --frames and --steps allow it, 0 never, 1 always
    "pool_slack": 0,  # spare pages in dom1's p2m pool beyond the worst case
    "hot": 0.85,  # probability that a guest access aims at the superpages being changed
    "settle": 1200,  # steps the guests run before the first change
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (2, "dom1 changes its p2m from hart 0 while its vCPUs run on the others")
DOMAINS = 1  # the most domains alive at once

SMALL = 0x1000  # dom1's own 4K pages (1G region 0)
BASE = 0x80000  # the row of 2M superpages (1G region 2)
GIGA = 0x100000  # the 1G superpage (1G region 4)
CHUNK = 512
GIGA_PAGES = 1 << 18
GIGA_CHUNKS = (0, 1, 2, 300, 511)  # 2M chunks of the 1G superpage the workload changes
GIGA_FRAMES = 1 << 19  # a free 1G-aligned block exists from this memory size on
GIGA_STEPS = 800_000  # destroying a 1G superpage costs ~265,000 steps


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    supers, max_sh, max_hole = p["superpages"], p["max_shattered"], p["max_hole"]
    if not 2 <= supers <= 16:
        raise WorkloadError("superpage-shatter needs 2 <= superpages <= 16")
    if not 1 <= max_sh <= supers or not 1 <= max_hole <= 64:
        raise WorkloadError("superpage-shatter needs 1 <= max_shattered <= superpages and 1 <= max_hole <= 64")
    if p["rounds"] < 1 or p["pool_slack"] < 0:
        raise WorkloadError("superpage-shatter needs rounds >= 1 and pool_slack >= 0")
    if not 0.0 <= p["hot"] <= 1.0:
        raise WorkloadError("superpage-shatter: hot is a probability")
    frames = sim.xen.memory.nr_frames
    if frames < 2 * (supers + 2) * CHUNK:
        raise WorkloadError(f"superpage-shatter: {supers} superpages do not fit in {frames} frames (use --frames)")
    fits = frames >= GIGA_FRAMES and sim.conductor.budget >= GIGA_STEPS
    if p["giga"] not in (-1, 0, 1):
        raise WorkloadError("superpage-shatter: giga is -1 (when memory allows), 0 or 1")
    if p["giga"] == 1 and not fits:
        raise WorkloadError(
            f"superpage-shatter: the 1G superpage needs --frames {GIGA_FRAMES} and --steps {GIGA_STEPS} or more"
        )
    giga = p["giga"] == 1 or (p["giga"] == -1 and fits)

    # chunk id -> first gfn; consecutive ids in the same region are neighbours
    bases = [BASE + c * CHUNK for c in range(supers)]
    if giga:
        bases += [GIGA + j * CHUNK for j in GIGA_CHUNKS]

    def neighbours(c: int) -> bool:
        return c + 1 < len(bases) and bases[c + 1] == bases[c] + CHUNK

    # p2m pool: the tables above level 1 (one per level between the root and level 1, none in
    # Sv39x4), level-1 tables of 1G regions 0 and 2, SMALL's level-0 table, one level-0 table per
    # shattered superpage, and the 1G superpage's level-1 table once it is split
    upper = sim.xen.gstage_mode.root_level - 2
    pool = upper + 3 + max_sh + (1 if giga else 0) + p["pool_slack"]
    d1 = await sim.create_domain(1, vcpus=n - 1, pool_pages=pool)
    await sim.populate(d1, SMALL, 32)
    for b in bases[:supers]:
        await sim.populate(d1, b, CHUNK, order=9)
    if giga:
        await sim.populate(d1, GIGA, GIGA_PAGES, order=18)

    whole = [(SMALL, 32), (BASE, supers * CHUNK)] + ([(GIGA, GIGA_PAGES)] if giga else [])
    holes: list[tuple[int, int]] = []
    patterns = [sim.pattern(whole, write_ratio=0.3) for _ in range(n - 1)]
    for i, v in enumerate(d1.vcpus):
        await sim.run_vcpu(v, 1 + i, patterns[i])
    await sim.elapse(p["settle"])

    shattered: set[int] = set()

    def plan_one(busy: set[int], room: int) -> tuple[str, list[int], int, int] | None:
        """(kind, chunks, first gfn, count) of one change, or None if nothing fits."""
        free = [c for c in range(len(bases)) if c not in busy]
        intact = [c for c in free if c not in shattered]
        split = [c for c in free if c in shattered]
        choices: list[str] = []
        if intact and room >= 1:
            choices += ["shatter"] * 3
        if split:
            choices += ["remerge"]
            if any(neighbours(c) and c + 1 in intact for c in split):
                choices += ["boundary"] * 2
        if not choices:
            return None
        kind = rng.choice(choices)
        if kind == "shatter":
            c = rng.choice(intact)
            k = 1 + rng.randrange(max_hole)
            if room >= 2 and neighbours(c) and c + 1 in intact and rng.random() < 0.3:
                a = 1 + rng.randrange(k)  # straddles c and c + 1: splits both
                return "shatter", [c, c + 1], bases[c] + CHUNK - a, k + 1
            return "shatter", [c], bases[c] + rng.randrange(CHUNK - k + 1), k
        if kind == "remerge":
            c = rng.choice(split)
            return "remerge", [c], bases[c], CHUNK
        c = rng.choice([c for c in split if neighbours(c) and c + 1 in intact])
        return "boundary", [c, c + 1], bases[c], CHUNK + 1 + rng.randrange(max_hole)

    def tables_needed(kind: str, chunks: list[int]) -> int:
        """Level-0 tables the change leaves in use, minus those it gives back."""
        if kind == "shatter":
            return len(chunks)
        return -1 if kind == "remerge" else 0

    for _round in range(p["rounds"]):
        ops: list[tuple[str, list[int], int, int]] = []
        busy: set[int] = set()
        for _ in range(2 if rng.random() < 0.4 else 1):
            room = max_sh - len(shattered) - sum(max(0, tables_needed(k, cs)) for k, cs, _, _ in ops)
            op = plan_one(busy, room)
            if op is None:
                break
            ops.append(op)
            for c in op[1]:
                busy.update((c - 1, c, c + 1))
        if not ops:
            raise WorkloadError("superpage-shatter: no change fits in the pool (the books are wrong)")
        targets = [(bases[c], CHUNK) for _k, cs, _g, _n in ops for c in cs]
        for pat in patterns:
            pat.aim(targets, p["hot"])
        await sim.elapse(rng.randrange(300, 1200))

        # give the pieces back, from one or two harts at once
        jobs = []
        for kind, _cs, gfn, nr in ops:
            hart = rng.randrange(n)
            jobs.append(
                sim.start(
                    hart,
                    f"{kind}: decrease_reservation(dom1, {gfn:#x}, {nr})",
                    sim.xen.decrease_reservation,
                    d1,
                    gfn,
                    nr,
                )
            )
            await sim.elapse(rng.randrange(1, 300))
        for rc, (kind, cs, gfn, nr) in zip(await sim.wait(*jobs), ops, strict=True):
            if rc:
                raise WorkloadError(f"{kind}: decrease_reservation(dom1, {gfn:#x}, {nr}) failed: {rc}")
            holes.append((gfn, nr))
            if kind == "shatter":
                shattered.update(cs)
            elif kind == "remerge":
                shattered.discard(cs[0])
            else:
                shattered.discard(cs[0])
                shattered.add(cs[1])
        for pat in patterns:
            pat.cover(subtract(whole, holes))
        await sim.elapse(rng.randrange(50, 800))

        # and take memory back at the same gfns: 4K pages in the split ones, 2M for a re-merge
        jobs = []
        refill: list[tuple[int, int, int]] = []
        for kind, _cs, gfn, nr in ops:
            if kind == "shatter":
                refill.append((gfn, nr, 0))
            elif kind == "remerge":
                refill.append((gfn, CHUNK, 9))
            else:
                refill += [(gfn, CHUNK, 9), (gfn + CHUNK, nr - CHUNK, 0)]
        for gfn, nr, order in refill:
            jobs.append(
                sim.start(
                    rng.randrange(n),
                    f"populate_physmap(dom1, {gfn:#x}, {nr}, order {order})",
                    sim.xen.populate_physmap,
                    d1,
                    gfn,
                    nr,
                    order,
                )
            )
        for rc, (gfn, nr, order) in zip(await sim.wait(*jobs), refill, strict=True):
            if rc:
                raise WorkloadError(f"populate_physmap(dom1, {gfn:#x}, {nr}, order {order}) failed: {rc}")
        holes.clear()
        for pat in patterns:
            pat.cover(whole)
            pat.aim((), 0.0)
        await sim.elapse(rng.randrange(200, 900))

    await sim.pause(d1)
    await sim.destroy(d1, on=rng.randrange(n))


if __name__ == "__main__":
    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *__import__("sys").argv[1:]]))
