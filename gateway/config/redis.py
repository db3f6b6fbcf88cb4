"""The `store:` forms that name several Redis nodes: Sentinel and Redis Cluster.

    store: {backend: redis, sentinel: {master: NAME, addresses: [host:port, ...],
            password: env:X, sentinel_password: env:Y}}
    store: {backend: redis-cluster, cluster: {addresses: [host:port, ...], password: env:X}}

Addresses are not secret and are written inline; passwords come only from `env:` / `file:`,
as `redis_url` does (which stays the form for one Redis).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.values import parse_listen
from gateway.reader import Problems, Reader, Secret, keys_of, resolve_secret, text

DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379


@dataclass(frozen=True, repr=False)
class RedisTopology:
    """Several Redis nodes: `kind` is sentinel (follow the master the sentinels name) or
    cluster (route each key to its slot's master). `repr` never shows a password."""

    kind: str  # sentinel | cluster: from the section's name, not a key
    addresses: tuple[tuple[str, int], ...]  # the sentinels, or the cluster's seed nodes
    master: str = ""  # sentinel: the monitored master's name
    username: str | None = None
    password: Secret | None = None  # the data nodes' password
    sentinel_password: Secret | None = None  # the sentinels' own (requirepass on sentinel)

    def __repr__(self) -> str:
        shown = ", ".join(f"{h}:{p}" for h, p in self.addresses)
        name = f" master={self.master}" if self.master else ""
        return f"RedisTopology({self.kind}{name} [{shown}])"

    __str__ = __repr__


SENTINEL_KEYS = keys_of(RedisTopology) - {"kind"}
CLUSTER_KEYS = SENTINEL_KEYS - {"master", "sentinel_password"}
TOPOLOGY_KEYS = {"sentinel", "cluster"}  # the `store:` keys this module reads


def _address(default_port: int) -> Any:
    def parse(value: Any) -> tuple[str, int]:
        shown = str(value).strip()
        if ":" not in shown:
            shown = f"{shown}:{default_port}"
        listen = parse_listen(shown)
        if listen.port == 0:
            raise ValueError(f"{value!r} needs a port other than 0")
        return listen.host, listen.port

    return parse


def _addresses(r: Reader, default_port: int) -> tuple[tuple[str, int], ...]:
    items = r.list("addresses")
    if not items:
        problems = r.problems
        if items is None and not r.has("addresses"):
            problems.add(r.loc("addresses"), "is required: a list of host:port")
        else:
            problems.add(r.loc("addresses"), "needs at least one host:port")
        return ()
    parse = _address(default_port)
    found: list[tuple[str, int]] = []
    for i, item in enumerate(items):
        try:
            address = parse(item)
        except ValueError as exc:
            r.problems.add(f"{r.loc('addresses')}[{i}]", str(exc))
            continue
        if address in found:
            r.problems.add(f"{r.loc('addresses')}[{i}]", f"{item!r} is listed twice")
            continue
        found.append(address)
    return tuple(found)


def _secret(r: Reader, key: str, environ: Mapping[str, str]) -> Secret | None:
    if not r.has(key):
        return None
    ref = r.raw[key]
    before = len(r.problems.items)
    value = resolve_secret(ref, r.loc(key), r.problems, environ)
    if len(r.problems.items) != before:
        return None
    return Secret(0, str(ref), value)


def parse_topology(
    store: Reader, backend: str, problems: Problems, environ: Mapping[str, str]
) -> RedisTopology | None:
    """`store.sentinel` (backend redis) or `store.cluster` (backend redis-cluster)."""
    if backend == "redis-cluster":
        if store.has("sentinel"):
            problems.add(store.loc("sentinel"), "applies to backend: redis only")
        if store.has("redis_url"):
            problems.add(store.loc("redis_url"), "backend: redis-cluster takes cluster.addresses instead")
        if not store.has("cluster"):
            problems.add(store.loc("cluster"), "is required with backend: redis-cluster")
            return None
        r = Reader(store.raw["cluster"], store.loc("cluster"), problems, CLUSTER_KEYS)
        key_prefix = store.raw.get("key_prefix")
        if isinstance(key_prefix, str) and ("{" in key_prefix or "}" in key_prefix):
            # Redis hashes the first {...} of a key: braces in the prefix would put every key
            # of every route in one slot, on one master.
            problems.add(store.loc("key_prefix"), "must not contain { or } with backend: redis-cluster")
        return RedisTopology(
            kind="cluster",
            addresses=_addresses(r, DEFAULT_REDIS_PORT),
            username=r.get("username", text, None),
            password=_secret(r, "password", environ),
        )
    if store.has("redis_url"):
        problems.add(store.loc("redis_url"), "give either redis_url or sentinel, not both")
    r = Reader(store.raw["sentinel"], store.loc("sentinel"), problems, SENTINEL_KEYS)
    return RedisTopology(
        kind="sentinel",
        addresses=_addresses(r, DEFAULT_SENTINEL_PORT),
        master=r.get("master", text, "", required=True),
        username=r.get("username", text, None),
        password=_secret(r, "password", environ),
        sentinel_password=_secret(r, "sentinel_password", environ),
    )
