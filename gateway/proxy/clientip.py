"""Peer address + trusted proxies -> the client IP.

X-Forwarded-For is believed only when the peer is a trusted proxy; then the rightmost
entry that is not itself a trusted proxy is the client (entries to its left were written by
the client and can say anything). IPv4-mapped IPv6 addresses are normalised to IPv4.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress | None:
    """One address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`.

    Returns None for anything else (junk, `unknown`, obfuscated identifiers). Never raises.
    Cached: the same few peers and forwarded addresses recur on every request, and
    `ipaddress` parsing was a tenth of the cost of rejecting one (the cache is bounded, so a
    flood from random addresses only evicts).
    """
    t = text.strip()
    if not t or len(t) > 64:
        return None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            return None
        t = t[1:end]
    elif t.count(":") == 1:  # IPv4 with a port
        t = t.partition(":")[0]
    if "%" in t:  # zone ids never name a remote client
        return None
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        return None
    return normalise(ip)


def normalise(ip: IPAddress) -> IPAddress:
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class NetSet:
    """Membership in a set of networks, precomputed as integer ranges per IP version."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[Network]) -> None:
        self._v4: tuple[tuple[int, int], ...] = tuple(
            (int(n.network_address), int(n.netmask)) for n in networks if n.version == 4
        )
        self._v6: tuple[tuple[int, int], ...] = tuple(
            (int(n.network_address), int(n.netmask)) for n in networks if n.version == 6
        )

    def __contains__(self, ip: IPAddress) -> bool:
        value = int(ip)
        for net, mask in self._v4 if ip.version == 4 else self._v6:
            if value & mask == net:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)


def client_ip(peer: IPAddress | None, forwarded_for: Iterable[str], trusted: NetSet) -> IPAddress | None:
    """Resolve the client address. `forwarded_for` is every X-Forwarded-For header, in order."""
    if peer is None or not trusted or peer not in trusted:
        return peer
    hops: list[str] = []
    for header in forwarded_for:
        hops.extend(header.split(","))
    current = peer
    for entry in reversed(hops):
        ip = parse_ip(entry)
        if ip is None:
            # A trusted proxy never writes junk: stop at the last address we could vouch
            # for rather than skipping past it to something further left.
            return current
        if ip not in trusted:
            return ip
        current = ip
    return current


# Forwarded-for chains longer than this are resolved every time, never cached: a cache entry
# holds its key, and a flood of long random headers must not grow memory.
_CACHED_CHAIN = 256


def resolve(
    remote: str | None, forwarded_for: list[str], trusted: NetSet
) -> tuple[IPAddress | None, IPAddress | None, str | None]:
    """(peer, client, client as text) for a connection's peer address and the request's
    X-Forwarded-For headers. The same few (peer, chain) pairs carry nearly all traffic, and
    resolving one (parsing, membership, formatting) was a sixth of what rejecting a request
    cost, so short chains are looked up in a bounded cache."""
    n = len(forwarded_for)
    if n == 0 or (n == 1 and len(forwarded_for[0]) <= _CACHED_CHAIN):  # the usual shapes
        return _resolve_cached(remote or "", forwarded_for[0] if n else "", trusted)
    return _resolve(remote or "", forwarded_for, trusted)


def _resolve(
    remote: str, forwarded_for: Iterable[str], trusted: NetSet
) -> tuple[IPAddress | None, IPAddress | None, str | None]:
    peer = parse_ip(remote)
    client = client_ip(peer, forwarded_for, trusted)
    return peer, client, str(client) if client is not None else None


@functools.lru_cache(maxsize=4096)
def _resolve_cached(
    remote: str, forwarded_for: str, trusted: NetSet
) -> tuple[IPAddress | None, IPAddress | None, str | None]:
    return _resolve(remote, (forwarded_for,) if forwarded_for else (), trusted)
