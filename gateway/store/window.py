"""The sliding-window counter both backends use (the Redis Lua script mirrors this code).

Two fixed windows approximate a sliding one: the count of the previous window is weighted by
how much of it the sliding window still covers, plus the count of the current one
(`estimate = prev * (W - elapsed) / W + curr`). State is three integers per key whatever the
rate, so a flood of distinct clients costs a bounded amount of memory. Integer milliseconds
keep the arithmetic exact and identical in Python and in Redis' Lua.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowState:
    index: int  # which fixed window `curr` counts (now_ms // window_ms)
    curr: int
    prev: int


def decide(
    state: WindowState | None, now_ms: int, window_ms: int, limit: int, add: bool
) -> tuple[WindowState | None, int]:
    """-> (state to store, or None when nothing changes; milliseconds to wait, 0 = fits)."""
    index = now_ms // window_ms
    curr = prev = 0
    if state is not None:
        if state.index == index:
            curr, prev = state.curr, state.prev
        elif state.index == index - 1:
            prev = state.curr
    elapsed = now_ms - index * window_ms
    # One more event fits when prev*(W-e)/W + curr + 1 <= limit, multiplied out by W.
    if prev * (window_ms - elapsed) + (curr + 1) * window_ms <= limit * window_ms:
        return (WindowState(index, curr + 1, prev) if add else None), 0
    if curr + 1 <= limit:
        # Fits later in this window, once enough of the previous window has slid out.
        due = window_ms - (limit - 1 - curr) * window_ms // prev
        return None, due - elapsed
    # Not in this window: in the next one this window's count is the decaying `prev`.
    due = window_ms - (limit - 1) * window_ms // curr
    return None, (window_ms - elapsed) + due
