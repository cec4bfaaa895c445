"""FrameHistory keeps each frame's events compact and gives back exactly what a dict of lists would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from simulator.engine.history import KINDS, FrameHistory

EVENT = st.tuples(
    st.integers(0, 7),  # mfn
    st.integers(0, 1 << 40),  # seq
    st.one_of(st.none(), st.integers(0, 1023)),  # hart (None: the driver)
    st.sampled_from(KINDS),
    st.integers(0, 1 << 62),  # stamp
    st.sampled_from(["", "p2m table", "dom1 p2m pool -> p2m table", "last reference dropped"]),
    st.integers(0, 1 << 40),  # gen
    st.integers(0, 7),  # state
    st.integers(-1, 1 << 15),  # owner
)


@given(st.lists(EVENT, max_size=60))
def test_a_frames_events_come_back_oldest_first_as_added(events: list[tuple]) -> None:  # type: ignore[type-arg]
    h = FrameHistory(8)
    model: dict[int, list[tuple]] = {}  # type: ignore[type-arg]
    for mfn, *ev in events:
        h.add(mfn, *ev)
        model.setdefault(mfn, []).append(tuple(ev))
    for mfn in range(8):
        assert (mfn in h) == (mfn in model)
        assert h.get(mfn, ()) == model.get(mfn, ())
        for kind in KINDS:
            want = [e[0] for e in model.get(mfn, ()) if e[2] == kind]
            assert h.last(mfn, kind) == (want[-1] if want else -1)
    assert 9 not in h and h.get(9) is None
