"""Real failovers under a steady stream of updates: two gateway processes share a Sentinel-
managed Redis or a Redis Cluster, a master is killed with SIGKILL, and

- every request gets an answer (200, or 503 / 409 that the sender retries): none hangs;
- the gateways serve again on the promoted replica without a restart;
- no update reaches the bot twice, before or after the failover;
- /readyz stays ready throughout (on_store_error decides per request);
- the store metrics say what happened (up, master, failovers).

What a failover can lose is measured too: after the failover every update that was delivered
before the kill is sent again, and the ones the bot gets a second time are counted (marks that
died with the old master before reaching its replica). docs/redis-sentinel.md and
docs/redis-cluster.md quote these numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import generate_latest
from redis.crc import key_slot

from gateway import config as cfg
from gateway.metrics import Metrics
from gateway.store import redis as redis_store
from gateway.store.redis import STATES, RedisStore
from tests.support.env import ENV as ENV_BASE
from tests.support.inprocess import base_config, route, tg_verify
from tests.support.leaks import record_output
from tests.support.metrics import metric_value
from tests.support.process import GatewayProcess, free_port
from tests.support.redis_topology import (
    DOWN_AFTER_MS,
    FAILOVER_TIMEOUT_MS,
    MASTER_NAME,
    PASSWORD,
    SENTINEL_PASSWORD,
    ClusterSetup,
    SentinelSetup,
    cluster_setup,  # noqa: F401 - a fixture
    command,
    sentinel_setup,  # noqa: F401 - a fixture
)
from tests.support.state import tg, update
from tests.support.upstream import RecordingUpstream, recording_upstream

SCRIPT_SHAS = [
    hashlib.sha1(s.encode()).hexdigest()  # noqa: S324 - how Redis names a script
    for s in (redis_store._RESERVE, redis_store._RELEASE, redis_store._RATE)
]
UPSTREAM_ANSWER = b'{"method":"sendMessage"}'
DUPLICATE_ANSWER = b'{"ok":true}'
# A request answered later than this counts as hung. The gateway's own bound is three store
# timeouts (0.5 s each) per store call; this leaves room for a loaded CI machine.
ANSWER_BOUND = 10.0
# The whole failover must be over, and every stream served again, within this. The documented
# recovery bound is down-after + failover time + the client's retry (a few seconds here); this
# wider deadline only keeps a broken build from hanging the suite.
RECOVERY_DEADLINE = 30.0
ENV = {"REDIS_PASSWORD": PASSWORD, "SENTINEL_PASSWORD": SENTINEL_PASSWORD}


@dataclass
class Stream:
    """One sender: unique update ids one after another, each retried on 503 / 409 the way
    Telegram retries, until the gateway answers 200."""

    gw: GatewayProcess
    route: str
    first_id: int
    answers: list[tuple[float, int, int, bytes]] = field(default_factory=list)  # (t, id, status, body)
    delivered: list[tuple[float, int]] = field(default_factory=list)  # (t of the 200, id)
    hung: list[int] = field(default_factory=list)
    slowest: float = 0.0  # seconds, the longest wait for one answer

    async def run(self, stop: asyncio.Event, session: aiohttp.ClientSession) -> None:
        uid = self.first_id
        while not stop.is_set():
            while True:
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(ANSWER_BOUND):
                        url = f"{self.gw.base}/hook/{self.route}"
                        async with session.post(url, data=update(uid), headers=tg()) as r:
                            status, body = r.status, await r.read()
                except (TimeoutError, aiohttp.ClientError):
                    self.hung.append(uid)
                    return
                now = time.monotonic()
                self.slowest = max(self.slowest, now - sent)
                self.answers.append((now, uid, status, body))
                if status == 200:
                    self.delivered.append((now, uid))
                    break
                if status not in (409, 503):
                    return  # unexpected: the assertions on `answers` report it
                await asyncio.sleep(0.05)
            uid += 1

    def delivered_after(self, t: float) -> int:
        return sum(1 for when, _ in self.delivered if when > t)

    def outage_after(self, t: float) -> float:
        """Seconds from `t` until this stream was served again after its last refusal."""
        refused = [when for when, _, status, _ in self.answers if when > t and status != 200]
        if not refused:
            return 0.0
        return next((when for when, _ in self.delivered if when > refused[-1]), refused[-1]) - t


def forwarded_ids(up: RecordingUpstream) -> Counter[tuple[str, int]]:
    return Counter((r.path_qs, json.loads(r.body)["update_id"]) for r in up.received)


@contextlib.asynccontextmanager
async def gateways(
    tmp_path: Path, config: dict[str, Any], count: int = 2
) -> AsyncIterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    try:
        for i in range(count):
            port, admin = free_port(), free_port()
            doc = {**config, "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}"}
            path = tmp_path / f"gateway{i}.yaml"
            path.write_text(yaml.safe_dump(doc))
            gw = GatewayProcess(path, env=ENV)
            started.append(gw)
            await gw.start(port, admin)
        yield started
    finally:
        for gw in started:
            if gw.proc is not None and gw.proc.returncode is None:
                await gw.stop()
        for gw in started:
            record_output("gateway stderr", gw.stderr)
            assert PASSWORD not in gw.stderr and SENTINEL_PASSWORD not in gw.stderr


@dataclass
class Watch:
    """/readyz and the store metrics of every gateway, sampled every 0.1 s."""

    gws: list[GatewayProcess]
    ready: list[int] = field(default_factory=list)
    store_up: dict[int, list[float]] = field(default_factory=dict)
    states: dict[int, set[str]] = field(default_factory=dict)  # store_state values seen at 1

    async def run(self, stop: asyncio.Event, session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            for i, gw in enumerate(self.gws):
                async with session.get(gw.admin + "/readyz") as r:
                    self.ready.append(r.status)
                # One scrape per gateway and round: the states last a second or two.
                async with session.get(gw.admin + "/metrics") as r:
                    text = await r.text()
                self.store_up.setdefault(i, []).append(metric_value(text, "webhook_gateway_store_up", {}))
                for state in STATES:
                    if metric_value(text, "webhook_gateway_store_state", {"state": state}) == 1:
                        self.states.setdefault(i, set()).add(state)
            await asyncio.sleep(0.1)


class Observer:
    """The gateway's store in this process, probing the same Redis every 0.1 s (0.025 s while
    down, the gateways' probe ten times as often): the states it passes through, in order, are
    seen even when a gateway's one-second probe falls outside a short failover window."""

    def __init__(self, config: dict[str, Any]) -> None:
        built = cfg.build(config, environ={**ENV_BASE, **ENV})
        assert built.store.topology is not None
        self.metrics = Metrics()
        self.store = RedisStore(
            built.store.topology, prefix="observer:", timeout=0.5, metrics=self.metrics, probe_interval=0.1
        )
        self.seen: list[str] = []

    async def run(self, stop: asyncio.Event, _: aiohttp.ClientSession) -> None:
        await self.store.start()
        try:
            while not stop.is_set():
                text = generate_latest(self.metrics.registry).decode()
                for state in STATES:
                    now = metric_value(text, "webhook_gateway_store_state", {"state": state}) == 1
                    if now and (not self.seen or self.seen[-1] != state):
                        self.seen.append(state)
                await asyncio.sleep(0.01)
        finally:
            await self.store.close()


async def run_failover(
    gws: list[GatewayProcess],
    streams: list[Stream],
    kill: Any,
    recovered: Any,
    after_kill: int,
    observer: Observer,
) -> tuple[float, Watch, list[float]]:
    """Stream until steady, kill, stream until every stream delivered `after_kill` more and
    `recovered()` holds. -> (kill time, the watch, recovery seconds per stream)."""
    stop = asyncio.Event()
    watch = Watch(gws)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        tasks = [asyncio.create_task(s.run(stop, session)) for s in streams]
        tasks.append(asyncio.create_task(watch.run(stop, session)))
        tasks.append(asyncio.create_task(observer.run(stop, session)))
        try:
            async with asyncio.timeout(RECOVERY_DEADLINE):
                while min(len(s.delivered) for s in streams) < 10:
                    await asyncio.sleep(0.05)
            killed = time.monotonic()
            kill()
            async with asyncio.timeout(RECOVERY_DEADLINE):
                while not (
                    all(s.delivered_after(killed) >= after_kill or s.hung for s in streams)
                    and await recovered()
                ):
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    recovery = [s.outage_after(killed) for s in streams]
    return killed, watch, recovery


def assert_no_hang_and_no_duplicate(streams: list[Stream], up: RecordingUpstream) -> Counter[int]:
    """-> how often each status was answered."""
    assert [s.hung for s in streams] == [[] for _ in streams], "a request hung"
    statuses = Counter(status for s in streams for _, _, status, _ in s.answers)
    assert set(statuses) <= {200, 409, 503}, statuses
    sent = forwarded_ids(up)
    twice = {k: n for k, n in sent.items() if n > 1}
    assert twice == {}, f"forwarded more than once: {twice}"
    # Every update the senders saw answered 200 reached the bot (none was lost)...
    answered = {(f"/webhook/{s.route}", uid) for s in streams for _, uid in s.delivered}
    assert answered == set(sent)
    # ...and each was the bot's own answer: no 200-duplicate for a first copy.
    assert all(body == UPSTREAM_ANSWER for s in streams for _, _, st, body in s.answers if st == 200)
    return statuses


async def resend_delivered_before(
    gw: GatewayProcess, streams: list[Stream], killed: float, up: RecordingUpstream
) -> tuple[int, int]:
    """Send every update delivered before the kill once more. -> (resent, forwarded again)."""
    before = len(up.received)
    resent = 0
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for s in streams:
            for when, uid in s.delivered:
                if when >= killed:
                    continue
                async with session.post(f"{gw.base}/hook/{s.route}", data=update(uid), headers=tg()) as r:
                    assert r.status == 200, r.status
                resent += 1
    return resent, len(up.received) - before


def report(name: str, **numbers: Any) -> None:
    line = f"{name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items())
    print(line)
    record_output("failover numbers", line)


@pytest.mark.parametrize("how", ["crash", "silent"])
async def test_sentinel_failover_under_two_gateways(
    tmp_path: Path,
    sentinel_setup: SentinelSetup,  # noqa: F811
    how: str,
) -> None:
    """crash: SIGKILL, connections are refused at once. silent: SIGSTOP, the master's host
    accepts connections and never answers, so every call to it runs into `store.timeout`."""
    setup = sentinel_setup
    old_master, new_master = setup.master.address, setup.replica.address
    store = {
        "backend": "redis",
        "sentinel": {
            "master": MASTER_NAME,
            "addresses": setup.addresses,
            "password": "env:REDIS_PASSWORD",
            "sentinel_password": "env:SENTINEL_PASSWORD",
        },
    }
    # Both stateful checks on every request: the rate window and the replay mark.
    bot = route("bot", "", verify=tg_verify(), replay={}, rate_limit={"requests": "10000/s"})
    async with recording_upstream(body=UPSTREAM_ANSWER) as up:
        bot["upstream"] = up.url.replace("/webhook", "/webhook/bot")
        config = base_config([bot], store=store)
        async with gateways(tmp_path, config) as gws:
            for gw in gws:
                assert await gw.metric("webhook_gateway_store_master", address=old_master) == 1
            streams = [Stream(gw, "bot", 1_000_000 * (i + 1)) for i, gw in enumerate(gws + gws)]

            async def recovered() -> bool:
                counts = [await gw.metric("webhook_gateway_store_failovers_total") for gw in gws]
                return all(c >= 1 for c in counts)

            def kill_master() -> None:
                # Scripts are not replicated (their effects are): the replica about to be
                # promoted has none, so the gateways meet NOSCRIPT there and load them again.
                assert command(setup.replica.port, "SCRIPT", "EXISTS", *SCRIPT_SHAS) == "0\n0\n0"
                if how == "crash":
                    setup.master.kill()
                else:
                    assert setup.master.proc is not None
                    setup.master.proc.send_signal(signal.SIGSTOP)

            observer = Observer(config)
            killed, watch, recovery = await run_failover(gws, streams, kill_master, recovered, 10, observer)
            statuses = assert_no_hang_and_no_duplicate(streams, up)
            assert statuses[503] >= 1, "the outage was never seen: was the master really killed?"
            assert setup.master_address() == new_master
            assert set(watch.ready) == {200}, "/readyz must stay ready while the store fails over"
            # The sentinels held the master as down before promoting its replica.
            assert observer.seen[0] == observer.seen[-1] == "connected", observer.seen
            assert "failing_over" in observer.seen, observer.seen
            for i, gw in enumerate(gws):
                assert 0 in watch.store_up[i], "store_up never showed the outage"
                assert watch.states[i] & {"failing_over", "unreachable"}, watch.states
                assert await gw.metric("webhook_gateway_store_state", state="connected") == 1
                assert await gw.metric("webhook_gateway_store_up") == 1
                assert await gw.metric("webhook_gateway_store_failovers_total") == 1
                assert await gw.metric("webhook_gateway_store_master", address=new_master) == 1
                assert await gw.metric("webhook_gateway_store_master", address=old_master) == 0
            resent, again = await resend_delivered_before(gws[0], streams, killed, up)
            report(
                f"sentinel ({how})",
                slowest_answer_s=round(max(s.slowest for s in streams), 2),
                states=observer.seen,
                down_after_ms=DOWN_AFTER_MS,
                failover_timeout_ms=FAILOVER_TIMEOUT_MS,
                recovery_s=[round(r, 2) for r in recovery],
                answers=dict(statuses),
                resent=resent,
                forwarded_again=again,
            )
            # A mark can be lost only if the old master took it and died before its replica
            # did: at most the update each stream had in flight at the kill.
            assert again <= len(streams)


def routes_on_every_master(setup: ClusterSetup, per_master: int) -> tuple[list[str], dict[str, str]]:
    """Route names whose hash tag lands on each master. -> (names, name -> master address)."""
    masters = setup.masters()
    owner: dict[str, str] = {}
    taken: Counter[str] = Counter()
    for i in range(1000):
        name = f"bot{i}"
        slot = key_slot(name.encode())
        address = next(a for a, (lo, hi) in masters.items() if lo <= slot <= hi)
        if taken[address] < per_master:
            taken[address] += 1
            owner[name] = address
        if len(owner) == per_master * len(masters):
            break
    return list(owner), owner


async def test_cluster_failover_under_two_gateways(
    tmp_path: Path,
    cluster_setup: ClusterSetup,  # noqa: F811
) -> None:
    setup = cluster_setup
    names, owner = routes_on_every_master(setup, per_master=2)
    victim = owner[names[0]]
    victim_routes = [n for n in names if owner[n] == victim]
    # On the victim's slots: a tight limit, checked after the failover on the promoted replica.
    limited = next(
        f"limited{i}"
        for i in range(1000)
        if setup.masters()[victim][0] <= key_slot(f"limited{i}".encode()) <= setup.masters()[victim][1]
    )
    store = {
        "backend": "redis-cluster",
        "cluster": {"addresses": setup.addresses[:2], "password": "env:REDIS_PASSWORD"},
    }
    async with recording_upstream(body=UPSTREAM_ANSWER) as up:
        routes = [
            route(n, f"{up.url}/{n}", verify=tg_verify(), replay={}, rate_limit={"requests": "10000/s"})
            for n in names
        ]
        routes.append(
            route(limited, f"{up.url}/{limited}", verify=tg_verify(), rate_limit={"requests": "3/h"})
        )
        config = base_config(routes, store=store)
        async with gateways(tmp_path, config) as gws:
            for gw in gws:
                for address in setup.masters():
                    assert await gw.metric("webhook_gateway_store_master", address=address) == 1
            streams = [Stream(gws[i % 2], n, 1_000_000 * (i + 1)) for i, n in enumerate(names)]

            async def recovered() -> bool:
                counts = [await gw.metric("webhook_gateway_store_failovers_total") for gw in gws]
                return all(c >= 1 for c in counts)

            observer = Observer(config)
            killed, watch, recovery = await run_failover(
                gws, streams, setup.node_at(victim).kill, recovered, 10, observer
            )
            statuses = assert_no_hang_and_no_duplicate(streams, up)
            assert set(watch.ready) == {200}, "/readyz must stay ready while the store fails over"
            masters = setup.masters()
            assert victim not in masters and len(masters) == 3, masters
            promoted = next(a for a in masters if a not in owner.values())
            # The cluster flagged the master as failed before its replica took over.
            assert observer.seen[0] == observer.seen[-1] == "connected", observer.seen
            assert "failing_over" in observer.seen, observer.seen
            for i, gw in enumerate(gws):
                assert watch.states[i] & {"failing_over", "unreachable"}, watch.states
                assert await gw.metric("webhook_gateway_store_state", state="connected") == 1
                assert await gw.metric("webhook_gateway_store_up") == 1
                assert await gw.metric("webhook_gateway_store_master", address=promoted) == 1
                assert await gw.metric("webhook_gateway_store_master", address=victim) == 0
            # Only the victim's routes waited; the other masters' routes were served throughout.
            blocked = {s.route for s in streams for _, _, status, _ in s.answers if status == 503}
            assert blocked and blocked <= set(victim_routes), (blocked, victim_routes)
            # The rate window lives on the promoted replica now, shared by both gateways.
            limited_statuses = []
            for i in range(5):
                async with aiohttp.ClientSession() as session:
                    url = f"{gws[i % 2].base}/hook/{limited}"
                    async with session.post(url, data=update(9_000_000 + i), headers=tg()) as r:
                        limited_statuses.append(r.status)
            assert limited_statuses == [200, 200, 200, 429, 429]
            resent, again = await resend_delivered_before(gws[0], streams, killed, up)
            report(
                "cluster",
                slowest_answer_s=round(max(s.slowest for s in streams), 2),
                states=observer.seen,
                gateway_up=[watch.store_up[i] for i in range(2)],
                node_timeout_ms=1000,
                recovery_s=[round(r, 2) for r in recovery],
                victim_routes=victim_routes,
                answers=dict(statuses),
                resent=resent,
                forwarded_again=again,
            )
            assert again <= len(victim_routes)
