"""A Xen tree's own C on the simulated harts (issue 11): compiled in userspace, every shared-state action
a conductor step.  The hypervisor's C runs on one OS thread inside greenlets (``bridge``), so runs stay
deterministic and both anyio backends work.

``build`` compiles a tree's p2m.c, paging.c and vmid.c with the harness (``harness*.h``,
``harness_tail.c``); ``p2m`` is the hypervisor whose functions of those files run from that library;
``bridge`` lets the C await the conductor."""
