"""A Xen tree's own C on the simulated harts (issue 11): compiled in userspace, every shared-state action
a conductor step.  The hypervisor's C runs on one OS thread inside greenlets (``bridge``), so runs stay
deterministic and both anyio backends work."""
