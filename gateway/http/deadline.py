"""One timer per connection, moved lazily: the listener's head and keep-alive deadlines, and
each upstream connection's answer deadline.

A deadline is set for nearly every request and almost never reached. Making and cancelling an
event-loop timer each time cost more than checking a number: the timer is created once, and
when it fires early (the deadline moved later meanwhile) it re-arms itself at the new time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    __slots__ = ("_at", "_expired", "_handle", "_handle_at", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired  # called once the deadline passes, unless cleared before
        self._at = 0.0  # loop time of the deadline; 0: none
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0.0

    def set_at(self, when: float) -> None:
        """Expire at loop time `when` (replacing any earlier setting)."""
        self._at = when
        if self._handle is None or when < self._handle_at:
            if self._handle is not None:
                self._handle.cancel()
            self._handle_at = when
            self._handle = self._loop.call_at(when, self._fire)

    def set_in(self, seconds: float) -> None:
        """Expire `seconds` from now; 0 or less: no deadline."""
        if seconds <= 0:
            self._at = 0.0
        else:
            self.set_at(self._loop.time() + seconds)

    def clear(self) -> None:
        """No deadline; the timer, if any, stays armed and finds nothing to do."""
        self._at = 0.0

    def cancel(self) -> None:
        """No deadline and no timer (the connection is gone)."""
        self._at = 0.0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._at == 0.0:
            return
        if self._loop.time() >= self._at:
            self._at = 0.0
            self._expired()
            return
        self._handle_at = self._at
        self._handle = self._loop.call_at(self._at, self._fire)
