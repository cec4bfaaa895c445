"""The hypervisor model: the code under test, named as in Xen."""
