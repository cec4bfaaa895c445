"""vmid-rollover: short-lived domains and busy harts use up the VMIDs, over and over.

Run it with few VMID bits, so that every hart rolls over many times::

    p2msim run vmid-rollover --vmid-bits 2

(With the default 7 bits it runs too, and is a clean-profile check with
hardly any rollover.)  A VMID is per hart and per generation: each hart hands
out 1..max in its current generation, a vCPU keeps its VMID while its
generation matches the hart's, and when the hart runs out it starts a new
generation with a full local HFENCE.GVMA - the only thing that keeps a VMID
handed out again from finding the entries its previous holder cached.

dom1 lives for the whole run with a vCPU per hart.  Meanwhile a stream of
short-lived domains (one or two vCPUs each) is created, run and destroyed, at
most ``live`` at a time; every new vCPU and every migration takes a new VMID on
its hart, and a scheduler keeps switching vCPUs through the same harts.  All
domains map RAM at the same guest-physical addresses (4K pages at 0x2000, a
2M superpage at 0x2200 for some), so an entry found under a recycled VMID
translates through another domain's p2m.  Frames come back and go out
again all the time: a dead domain's pages, p2m tables and root are the next
domain's, and dom1 gives pages back that the next domain is built from.
Destroying a domain frees its p2m root; a hart whose hgatp still names it
(the hart idles after the domain's vCPU left) must not walk from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.engine.scenario import Scenario, WorkloadError

if TYPE_CHECKING:
    from simulator.xen.domain import Domain, Vcpu

NAME = "vmid-rollover"
DESCRIPTION = "short-lived domains and vCPU switches roll VMIDs over many times while frames are reused (--vmid-bits 2)"
PARAMS = {
    "domains": 12,  # short-lived domains created (and destroyed) one after the other
    "live": 2,  # most short-lived domains alive at once
    "switches": 6,  # most scheduler moves per new domain
    "pages": 20,  # 4K pages of every domain at 0x2000
    "settle": 600,  # steps the guests run before the first change
}
# the fewest harts it runs on, and why (`p2msim run` refuses fewer, naming the reason)
PCPUS = (1, "")


def DOMAINS(p: dict[str, int]) -> int:
    """The most domains alive at once: dom1, its neighbour, and the short-lived ones."""
    return int(p["live"]) + 2


COMMON = 0x2000  # every domain's 4K pages (1G region 0)
SUPER = 0x2200  # a 2M superpage of dom1 and of some short-lived domains
CHUNK = 512


async def main(sim: Scenario) -> None:
    p = sim.params
    n = sim.nr_harts
    rng = sim.rng
    pages = p["pages"]
    if not 1 <= p["domains"] <= 200 or not 1 <= p["live"] <= 8:
        raise WorkloadError("vmid-rollover needs 1 <= domains <= 200 and 1 <= live <= 8")
    if not 4 <= pages <= CHUNK or p["switches"] < 1:
        raise WorkloadError("vmid-rollover needs 4 <= pages <= 512 and switches >= 1")
    if sim.xen.memory.nr_frames < (p["live"] + 4) * 2 * CHUNK:
        raise WorkloadError("vmid-rollover: not enough memory for the live domains' superpages (use --frames)")

    # the tables above level 1: one per level between the root and level 1 (none in Sv39x4)
    upper = sim.xen.gstage_mode.root_level - 2
    d1 = await sim.create_domain(1, vcpus=n, pool_pages=upper + 2)
    await sim.populate(d1, COMMON, pages)
    await sim.populate(d1, SUPER, CHUNK, order=9)
    mine = [(COMMON, pages), (SUPER, CHUNK)]
    pat1 = [sim.pattern(mine, hot=[(COMMON, pages)], hot_prob=0.5) for _ in d1.vcpus]
    for h, v in enumerate(d1.vcpus):
        await sim.run_vcpu(v, h, pat1[h])
    await sim.elapse(p["settle"])

    live: list[Domain] = []  # short-lived domains alive, oldest first
    lent = 0  # dom1's pages given back (at the end of its range) and not repopulated yet

    def everyone() -> list[Vcpu]:
        return [v for d in [d1, *live] for v in d.vcpus]

    async def hop() -> None:
        """One scheduler decision on a random hart: a waiting vCPU runs, or a running one moves."""
        h = rng.randrange(n)
        vs = everyone()
        waiting = [v for v in vs if v.processor is None]
        r = rng.random()
        if r < 0.1 and sim.xen.curr_vcpu[h] is not None:
            await sim.deschedule(h)  # the hart idles, hgatp as the switch left it
        elif r < 0.6 and waiting:
            await sim.run_vcpu(rng.choice(waiting), h)
        else:
            running = [v for v in vs if v.processor not in (None, h)]
            if running:
                await sim.run_vcpu(rng.choice(running), h)  # migration: a new VMID there

    for k in range(p["domains"]):
        # dom1 gives a few pages back now and then: the next domain is built from them
        if lent == 0 and rng.random() < 0.4:
            lent = 1 + rng.randrange(pages // 4)
            rc = await sim.on(
                rng.randrange(n),
                f"decrease_reservation(dom1, {COMMON + pages - lent:#x}, {lent})",
                sim.xen.decrease_reservation,
                d1,
                COMMON + pages - lent,
                lent,
            )
            if rc:
                raise WorkloadError(f"decrease_reservation of dom1 failed: {rc}")
            for pat in pat1:
                pat.cover([(COMMON, pages - lent), (SUPER, CHUNK)])
                pat.aim([(COMMON, pages - lent)], 0.5)

        domid = 10 + k
        h = rng.randrange(n)
        d = await sim.create_domain(domid, vcpus=1 + rng.randrange(2), pool_pages=upper + 2, on=h)
        nr = 4 + rng.randrange(pages - 3)
        await sim.populate(d, COMMON, nr, on=h)
        ranges = [(COMMON, nr)]
        if rng.random() < 0.3:
            await sim.populate(d, SUPER, CHUNK, order=9, on=h)
            ranges.append((SUPER, CHUNK))
        live.append(d)
        for v in d.vcpus:
            await sim.run_vcpu(v, rng.randrange(n), sim.pattern(ranges, hot=[(COMMON, nr)], hot_prob=0.5))
        for _ in range(1 + rng.randrange(p["switches"])):
            await hop()
            await sim.elapse(rng.randrange(20, 250))

        if lent and rng.random() < 0.5:
            await sim.populate(d1, COMMON + pages - lent, lent, on=rng.randrange(n))
            lent = 0
            for pat in pat1:
                pat.cover(mine)
                pat.aim([(COMMON, pages)], 0.5)

        if len(live) > p["live"] or (len(live) > 1 and rng.random() < 0.3):
            victim = live.pop(0)
            last = [v.last_processor for v in victim.vcpus if v.last_processor is not None]
            await sim.destroy(victim, on=rng.choice(last) if last and rng.random() < 0.7 else rng.randrange(n))
        await sim.elapse(rng.randrange(50, 400))
        # leave some harts idle for a while (hgatp as the last switch left it), then fill them
        for hh in range(n):
            waiting = [v for v in everyone() if v.processor is None]
            if sim.xen.curr_vcpu[hh] is None and waiting and rng.random() < 0.6:
                await sim.run_vcpu(rng.choice(waiting), hh)

    for d in live:
        await sim.destroy(d, on=rng.randrange(n))
    await sim.destroy(d1, on=rng.randrange(n))


if __name__ == "__main__":
    from simulator.cli import main as _cli

    raise SystemExit(_cli(["run", __file__, *__import__("sys").argv[1:]]))
