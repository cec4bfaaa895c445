"""table-free: one operation that frees (or splits) p2m tables while vCPUs run, for the table-freeing study.

dom1 gets ``-p mib=M`` MiB of RAM at 2 GiB, in 4K pages (``-p order=0``) or
2M superpages (``order=9``), and a vCPU on every hart that touches all of it
(so every hart is in its dirty mask and caches its tables).  Then, from
hart 0, with the vCPUs still running, one ``-p op=``:

* ``decrease``: one ``decrease_reservation`` of the range from 2 MiB in to
  the middle of the guest.  ``p2m_set_range`` removes it 2 MiB (or, where
  aligned, 1 GiB) at a time, in one p2m lock hold; with 4K pages each
  removal unlinks a level-0 table, which ``p2m_free_subtree`` frees - after
  a flush, in the tree: the seed's "XXX: Should we defer the free of the page
  table to avoid the flush?"
* ``shatter``: the upper half is mapped with 2M superpages instead, and one
  ``decrease_reservation`` runs from 2 MiB in to 1 MiB past the middle: it
  frees the lower half's tables and then splits the first superpage, which
  takes a table from the pool in the same hypercall.  With ``-p pool=tight``
  the pool holds no spare page: the split takes a table the operation freed
  (a strategy that keeps freed tables back has to let one go first).
* ``teardown``: the vCPUs are descheduled and the domain destroyed
  (``domain_kill``: the ARM-style teardown clears the root and flushes once,
  then frees every table).

Measures (``Scenario.measures``): ``rc`` of the operation, ``fences`` (remote
fence requests it sent), ``pool_least_free`` (the fewest free pool pages at
any allocation during it; -1: none) and ``tables`` built.
"""

from __future__ import annotations

from simulator.engine.scenario import Scenario, WorkloadError

NAME = "table-free"
DESCRIPTION = "one decrease_reservation, split or teardown that frees p2m tables under running vCPUs (the study's)"
PARAMS = {
    "mib": 16,  # the guest's RAM, in MiB (a whole number of 2 MiB, at least 4)
    "order": 0,  # 0: 4K pages; 9: 2M superpages (op=shatter maps the upper half with 2M whatever this is)
    "op": "decrease",  # decrease, shatter or teardown
    "pool": "tight",  # tight: exactly the tables the guest needs; ample: 64 pages more
    "run": 3000,  # steps the vCPUs run before the operation
    "vcpus": 1,  # vCPUs of dom1 per hart: above 1 they take turns on their hart (before and during the op)
}
PCPUS = (1, "a vCPU on every hart")
DOMAINS = 1
HUNT = False  # a measurement: the study runs it by name

BASE = 0x80000  # dom1's RAM at 2 GiB, 1 GiB-aligned
OPS = ("decrease", "shatter", "teardown")


def _pages(params: dict[str, object]) -> int:
    return int(params["mib"]) << 8  # type: ignore[call-overload]


def FRAMES(params: dict[str, object]) -> int:
    pages = _pages(params)
    need = pages + pages // 256 + 4096
    return -(-need // 512) * 512


def STEPS(params: dict[str, object]) -> int:
    return 10 * _pages(params) + 8 * int(params["run"]) + 200_000  # type: ignore[call-overload]


async def main(sim: Scenario) -> None:
    p = sim.params
    op, order, pages = p["op"], p["order"], _pages(p)
    if op not in OPS:
        raise WorkloadError(f"table-free -p op={op}: one of {', '.join(OPS)}")
    if order not in (0, 9):
        raise WorkloadError(f"table-free -p order={order}: 0 (4K pages) or 9 (2M superpages)")
    if p["pool"] not in ("tight", "ample"):
        raise WorkloadError(f"table-free -p pool={p['pool']}: tight or ample")
    if pages < 1024 or pages % 512:
        raise WorkloadError(f"table-free -p mib={p['mib']}: a whole number of 2 MiB, at least 4")
    half = pages // 2 // 512 * 512
    # the layout: (gfn, pages, order) extents
    if op == "shatter":
        layout = [(BASE, half, 0), (BASE + half, pages - half, 9)]
    else:
        layout = [(BASE, pages, order)]
    small = sum(n for _g, n, o in layout if o == 0)
    # the tables the guest needs: a level-0 table per 2 MiB of 4K pages, a level-1 table per GiB (the root
    # is the domain's own); tight: not one spare page, so the split of op=shatter needs a table the
    # operation freed; ample: 64 spare
    tables = small // 512 + -(-pages // (512 * 512))
    slack = 0 if p["pool"] == "tight" else 64
    k = p["vcpus"]
    if k < 1:
        raise WorkloadError(f"table-free -p vcpus={k}: at least 1 per hart")
    d = await sim.create_domain(1, vcpus=sim.nr_harts * k, pool_pages=tables + slack)
    for gfn, nr, o in layout:
        for i in range(0, nr >> o, 4096):
            await sim.populate(d, gfn + (i << o), min(4096, (nr >> o) - i) << o, o)  # nr: pages
    prog = sim.pattern([(BASE, pages)], write_ratio=0.25)
    for v in d.vcpus:
        v.program = prog
    slices = 4 * k if k > 1 else 1  # turns of each hart's vCPUs before the operation
    for r in range(slices):
        for h in range(sim.nr_harts):
            await sim.run_vcpu(d.vcpus[h * k + r % k], h)
        await sim.elapse(p["run"] // slices)
    d.arch_paging.least_free = 1 << 62  # from here: the operation's
    sbi = sim.xen.sbi
    sent = sbi.sent
    rc = 0
    if op == "teardown":
        for h in range(sim.nr_harts):
            await sim.deschedule(h)
        await sim.destroy(d)
    else:  # from 2 MiB in to the middle (decrease), or 1 MiB past it, into the first superpage (shatter)
        nr = half - 512 if op == "decrease" else half - 256
        job = sim.start(0, "decrease_reservation", sim.xen.decrease_reservation, d, BASE + 512, nr)
        r = slices
        while k > 1 and not job.done:  # the other harts' vCPUs keep taking turns meanwhile
            for h in range(1, sim.nr_harts):
                await sim.run_vcpu(d.vcpus[h * k + r % k], h)
            r += 1
            await sim.elapse(200)
        (rc,) = await sim.wait(job)
    least = d.arch_paging.least_free
    sim.measures.update(rc=rc, tables=tables, fences=sbi.sent - sent, pool_least_free=least if least < 1 << 62 else -1)
    if op != "teardown":
        await sim.elapse(200)
        for h in range(sim.nr_harts):
            await sim.deschedule(h)
        await sim.destroy(d)
