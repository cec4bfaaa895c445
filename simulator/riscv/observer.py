"""What the machine tells whoever watches it (the oracle, the log).

The machine calls these hooks; it never imports the oracle.  The default
methods do nothing, so a bare machine runs without an observer.
"""

from __future__ import annotations

from typing import Any


class Observer:
    def on_hand_out(self, mfn: int, state: int, owner: int, gen: int, why: str) -> None: ...

    def on_retire(self, mfn: int, old_state: int, new_state: int, gen: int, why: str) -> None: ...

    def on_assign(self, mfn: int, owner: int) -> None: ...

    def on_scrub(self, mfn: int, why: str) -> None: ...

    def on_pte_write(self, mfn: int, idx: int, old: int, new: int) -> None: ...

    def on_fill(self, hart: int, entry: Any) -> None: ...

    def on_guest_fault(self, hart: int, fault: Any) -> None:
        """A guest access faulted (the hypervisor's trap handler runs next)."""

    def on_table_stored(self, mfn: int) -> None:
        """A private table was filled by plain stores (its PTEs were not stored one by one)."""

    def on_hyp_access(self, mfn: int, idx: int, write: bool) -> None:
        """The hypervisor loaded from or stored to a frame that is free (in the heap or a pool freelist)."""

    def on_reused_use(self, hart: int, kind: str, entry: Any, mfn: int, gfn: int, write: bool, pte: int = 0) -> None:
        """A translation was used to reach ``mfn``, handed out again since it was made.

        ``kind`` is ``leaf`` for a guest access, else the walk's kind; a walk
        reports the PTE it read from the frame (``pte``).
        """

    def on_stale_use(self, hart: int, entry: Any, mfn: int, gfn: int, frame_free: bool, write: bool) -> None:
        """A translation whose PTE changed was used; the frame was not reused."""

    def on_alias_use(self, hart: int, entry: Any, gfn: int, root_mfn: int) -> None:
        """An entry filled under another root was used through the same VMID."""

    def on_fence(self, hart: int, what: str, req: Any) -> None:
        """``what``: sent, taken, acked, local."""

    def on_hgatp(self, hart: int, hgatp: int) -> None: ...

    def event(self, hart: int, name: str, **fields: Any) -> None:
        """A narrative event from the hypervisor model (hypercalls, frees, flushes)."""
