"""One JSON line per request; a flood of rejections is sampled, never a flood of writes.

Lines carry route, outcome, failed check and reason, client IP, status, duration and request
id, and for a 502/504 why the upstream failed (`upstream_error`: one word from a fixed list):
never a secret, a signature, a header value or a body.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

# Rejections beyond this many lines per second are counted and summarised instead of written.
REJECT_LINES_PER_SECOND = 20
# One encoder, made once: json.dumps with any option builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_NOISY = frozenset({"rejected", "rate_limited", "not_found", "bad_request", "overloaded"})


class AccessLog:
    def __init__(
        self,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        burst: int = REJECT_LINES_PER_SECOND,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._clock = clock
        self._wall = wall
        self._burst = burst
        self._window = 0.0
        self._written = 0
        self._suppressed: dict[tuple[str, str], int] = {}

    def request(self, **fields: Any) -> None:
        self.record({"ts": 0.0, "event": "request", **fields})

    def record(self, line: dict[str, Any]) -> None:
        if self.admit(line.get("route"), str(line.get("outcome"))):
            self.write(line)

    def admit(self, route: str | None, outcome: str) -> bool:
        """Whether a request with this outcome gets its line: past the burst, a rejection is
        only counted, for the next `suppressed` summary line."""
        now = self._clock()
        if now - self._window >= 1.0:
            self._flush_summary()
            self._window = now
            self._written = 0
        if outcome in _NOISY:
            if self._written >= self._burst:
                key = (str(route), outcome)
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._written += 1
        return True

    def write(self, line: dict[str, Any]) -> None:
        """An admitted request's line, `ts` and `event` keys first (their values are set here):
        the request path builds this dict as it goes, so no copy is made per request."""
        line["ts"] = round(self._wall(), 3)
        line["event"] = "request"
        self._write(line)

    def _flush_summary(self) -> None:
        if not self._suppressed:
            return
        for (route, outcome), count in self._suppressed.items():
            self._write(
                {
                    "ts": round(self._wall(), 3),
                    "event": "suppressed",
                    "route": route,
                    "outcome": outcome,
                    "count": count,
                }
            )
        self._suppressed.clear()

    def flush(self) -> None:
        self._flush_summary()
        self._stream.flush()

    def _write(self, record: dict[str, Any]) -> None:
        try:
            self._stream.write(_encode(record) + "\n")
        except (OSError, ValueError):
            pass  # a closed or full log stream must not fail requests
