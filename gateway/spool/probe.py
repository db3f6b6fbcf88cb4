"""A cheap reachability probe of a route's upstream: a TCP (or unix socket) connect, no request.

A worker backing off after connection failures probes every `PROBE_EVERY` seconds; once the
upstream accepts connections again (after a probe saw it refuse them) the backoff is cut, so
delivery resumes within about a second instead of after the grown retry delay. A bot that is
still down only sees connection attempts, never deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from gateway.config import Upstream

PROBE_EVERY = 0.5
PROBE_TIMEOUT = 0.5


async def reachable(upstream: Upstream, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when a connection to the upstream could be opened (it is closed at once)."""
    try:
        async with asyncio.timeout(timeout):
            if upstream.unix_socket:
                _, writer = await asyncio.open_unix_connection(upstream.unix_socket)
            else:
                url = urlsplit(upstream.url)
                port = url.port or (443 if url.scheme == "https" else 80)
                _, writer = await asyncio.open_connection(url.hostname, port)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
