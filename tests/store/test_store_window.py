"""The sliding-window counter: exact waits, and a property check of what a wait promises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store.window import WindowState, decide


def run(events: list[int], window: int, limit: int) -> list[int]:
    """Add an event at each time; -> the wait each one was told (0 = admitted)."""
    state: WindowState | None = None
    waits = []
    for t in events:
        new, wait = decide(state, t, window, limit, add=True)
        if new is not None:
            state = new
        waits.append(wait)
    return waits


def test_limit_admits_then_waits_exactly_until_the_previous_window_has_slid_out() -> None:
    # 3 per 1000 ms, all at t=0: the 4th must wait until 3 * (1000 - e) / 1000 + 1 <= 3 in the
    # next window, i.e. e >= 334: t = 1334.
    assert run([0, 0, 0, 0], 1000, 3) == [0, 0, 0, 1334]
    state = WindowState(0, 3, 0)
    assert decide(state, 1333, 1000, 3, add=False)[1] == 1
    assert decide(state, 1334, 1000, 3, add=False) == (None, 0)


def test_peek_counts_nothing() -> None:
    state = WindowState(5, 1, 0)
    assert decide(state, 5500, 1000, 2, add=False) == (None, 0)
    assert decide(state, 5500, 1000, 2, add=True) == (WindowState(5, 2, 0), 0)


def test_a_window_two_back_no_longer_counts() -> None:
    assert decide(WindowState(3, 99, 99), 5000, 1000, 1, add=True) == (WindowState(5, 1, 0), 0)
    # One back: its count becomes `prev`, weighted by the overlap (here half: 4 * 0.5 + 1 > 2).
    assert decide(WindowState(4, 4, 0), 5500, 1000, 2, add=False)[1] > 0


def test_limit_one() -> None:
    # The previous window's event must slide out completely: 2 windows after the first.
    assert run([0, 0, 999, 1999, 2000], 1000, 1) == [0, 2000, 1001, 1, 0]


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=60),
    window=st.sampled_from([1, 7, 1000, 60_000]),
    limit=st.integers(min_value=1, max_value=8),
)
def test_a_wait_is_exact_and_fixed_windows_never_exceed_the_limit(
    gaps: list[int], window: int, limit: int
) -> None:
    state: WindowState | None = None
    now = 1_000_000
    admitted: dict[int, int] = {}
    for gap in gaps:
        now += gap
        new, wait = decide(state, now, window, limit, add=True)
        if new is None:
            assert wait > 0
            # Nothing else happens meanwhile: one ms early still waits, on time it fits.
            assert decide(state, now + wait - 1, window, limit, add=False)[1] > 0
            assert decide(state, now + wait, window, limit, add=False)[1] == 0
        else:
            assert wait == 0
            state = new
            admitted[now // window] = admitted.get(now // window, 0) + 1
    assert all(count <= limit for count in admitted.values())
