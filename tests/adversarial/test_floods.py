"""Floods on loopback, bounded and self-stopping: idle sockets, slow headers, too many requests.

No assertion here is about speed: each checks what the gateway answered, what the upstream
received, descriptor counts and resident memory, or the order in which things happened.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.adversarial.harness import TG_PATH, gateway_config
from tests.support.env import TELEGRAM_IP, TG_SECRET
from tests.support.metrics import metric
from tests.support.process import SyncGatewayProcess, gateway_process
from tests.support.rawclient import Conn, connect, post_bytes, read_all
from tests.support.upstream import ThreadedUpstream

IDLE_SOCKETS = 10_000
MIB = 1024
TOKEN = ("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)


def update(n: int) -> bytes:
    return b'{"update_id":%d}' % n


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def upstream() -> Iterator[ThreadedUpstream]:
    with ThreadedUpstream() as up:
        yield up


@contextlib.contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
        yield socks
    finally:
        for s in socks:
            # RST instead of FIN: no TIME_WAIT left to eat the loopback port range
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()


def valid_update_passes(gw: SyncGatewayProcess, up: ThreadedUpstream, n: int) -> None:
    before = len(up.received)
    with Conn(gw.public_port) as c:
        r = c.request(post_bytes(TG_PATH, update(n), [TOKEN]))
    assert r.status == 200, (r.status, r.body)
    assert [x.body for x in up.received[before:]] == [update(n)]


def test_idle_sockets_neither_exhaust_descriptors_nor_starve_valid_traffic(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_SOCKETS + 512:
        pytest.skip(f"the hard open-files limit ({hard}) is below {IDLE_SOCKETS + 512}: raise `ulimit -Hn`")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        cfg = gateway_config(upstream, limits={"header_timeout": "120s"})
        # Start the gateway with the usual default soft limit: it must raise its own.
        with gateway_process(cfg, tmp_path / "gw", nofile_soft=1024) as gw:
            assert gw.nofile_soft() >= IDLE_SOCKETS + 512, "the gateway did not raise its soft limit"
            assert gw.startup["fd_limit"] == gw.nofile_soft()
            valid_update_passes(gw, upstream, 0)
            base_fds, base_rss = gw.open_fds(), gw.rss_kib()
            rss_after: list[int] = []
            for flood in (1, 2):
                with idle_sockets(gw.public_port, IDLE_SOCKETS):
                    wait_for(
                        "the gateway to accept every socket",
                        lambda: gw.open_fds() >= base_fds + IDLE_SOCKETS - 8,
                    )
                    valid_update_passes(gw, upstream, flood)  # while 10,000 sockets sit idle
                    assert gw.metrics_text()  # the admin listener answers too
                    peak = gw.rss_kib()
                    assert peak - base_rss < 256 * MIB, f"{(peak - base_rss) // MIB} MiB for idle sockets"
                wait_for("the gateway to release the sockets", lambda: gw.open_fds() <= base_fds + 16)
                rss_after.append(gw.rss_kib())
                valid_update_passes(gw, upstream, 10 + flood)
            # A second identical flood reuses what the first freed: nothing per socket is kept.
            assert rss_after[1] - rss_after[0] < 24 * MIB, rss_after
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_slow_headers_are_cut_at_the_header_deadline(upstream: ThreadedUpstream, tmp_path: Path) -> None:
    """Slowloris: a trickle of header bytes does not hold a connection open past header_timeout."""
    cfg = gateway_config(upstream, limits={"header_timeout": "1s"})
    head = post_bytes(TG_PATH, update(1), [TOKEN])[:-20]
    with gateway_process(cfg, tmp_path / "gw") as gw:
        silent = [connect(gw.public_port) for _ in range(200)]
        trickler = connect(gw.public_port)
        try:
            for s in silent:
                s.sendall(head[:30])
            cut_after = None
            for i in range(len(head)):  # one byte every 100 ms: the whole head would take seconds
                try:
                    trickler.sendall(head[i : i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    cut_after = i
                    break
                ready, _, _ = select.select([trickler], [], [], 0.1)
                if ready:
                    cut_after = i
                    break
            assert cut_after is not None and cut_after < len(head) - 1, "the trickler was never cut"
            assert read_all(trickler, 5.0) == (b"", True)
            for s in silent:
                assert read_all(s, 5.0) == (b"", True)  # closed without an answer
        finally:
            for s in [*silent, trickler]:
                s.close()
        assert upstream.received == []
        valid_update_passes(gw, upstream, 2)


def test_concurrency_cap_answers_503_at_once_instead_of_queueing(tmp_path: Path) -> None:
    # Two routes share max_concurrency 4: each keeps 1 slot of its own, and one route may take
    # at most half of the 2 shared ones (gateway/proxy/admission.py): 2 in flight on "tg".
    cap, share, extra = 4, 2, 12
    with ThreadedUpstream(delay=3.0) as slow:
        cfg = gateway_config(slow, max_concurrency=cap)
        with gateway_process(cfg, tmp_path / "gw") as gw:
            held = [Conn(gw.public_port) for _ in range(share)]
            try:
                for i, c in enumerate(held):
                    c.send(post_bytes(TG_PATH, update(i), [TOKEN]))
                wait_for("the upstream to hold every slot", lambda: len(slow.received) == share, 30)
                for i in range(extra):
                    with Conn(gw.public_port) as c:
                        r = c.request(post_bytes(TG_PATH, update(100 + i), [TOKEN]))
                    assert r.status == 503, (r.status, r.body)
                    assert r.header("Retry-After") == "1"
                    assert r.body == b'{"error": "overloaded"}'
                # The 503s came while every slot was still held: answered, not queued.
                ready, _, _ = select.select([c.sock for c in held], [], [], 0)
                assert ready == [], "a held request finished before the 503s: the test proves nothing"
                assert len(slow.received) == share
                for c in held:
                    assert c.response().status == 200
            finally:
                for c in held:
                    c.sock.close()
            text = gw.metrics_text()
            assert metric(text, "webhook_gateway_requests_total", route="tg", outcome="overloaded") == extra
            assert metric(text, "webhook_gateway_inflight_requests") == 0
            assert slow.up is not None
            slow.up.delay = 0.0
            valid_update_passes(gw, slow, 999)  # the slots were released


def test_rejection_flood_keeps_memory_and_log_volume_bounded(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    """Forged updates on keep-alive connections: all 401, nothing forwarded, log lines sampled."""
    forged = 4000
    with gateway_process(gateway_config(upstream), tmp_path / "gw") as gw:
        valid_update_passes(gw, upstream, 0)
        base_rss = gw.rss_kib()
        started = time.monotonic()
        with Conn(gw.public_port) as a, Conn(gw.public_port) as b:
            for i in range(forged):
                c = a if i % 2 else b
                r = c.request(post_bytes(TG_PATH, update(i), [("X-Telegram-Bot-Api-Secret-Token", "forged")]))
                assert r.status == 401
        elapsed = time.monotonic() - started
        valid_update_passes(gw, upstream, 1)
        assert len(upstream.received) == 2
        text = gw.metrics_text()
        assert metric(text, "webhook_gateway_requests_total", route="tg", outcome="rejected") == forged
        assert gw.rss_kib() - base_rss < 32 * MIB
        lines = [line for line in gw.stdout_text().splitlines() if '"outcome":"rejected"' in line]
        # The access log writes at most 20 rejection lines a second and summarises the rest.
        assert len(lines) <= 20 * (int(elapsed) + 2), (len(lines), elapsed)


RATE_LIMIT: dict[str, object] = {"requests": "1000/s", "failures": "5/m"}


def test_forged_flood_from_one_address_is_throttled_while_valid_updates_pass(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    cfg = gateway_config(upstream)
    cfg["routes"][0]["rate_limit"] = RATE_LIMIT
    attacker = "203.0.113.7"  # named by the trusted proxy (127.0.0.1) in X-Forwarded-For
    forged, throttled, valid = 200, 0, 0
    with gateway_process(cfg, tmp_path / "gw") as gw, Conn(gw.public_port) as c:
        for i in range(forged):
            r = c.request(
                post_bytes(
                    TG_PATH,
                    update(i),
                    [("X-Telegram-Bot-Api-Secret-Token", "forged"), ("X-Forwarded-For", attacker)],
                )
            )
            assert r.status in (401, 429), (r.status, r.body)
            if r.status == 429:
                throttled += 1
                retry_after = r.header("Retry-After")
                assert retry_after is not None and retry_after.isdigit(), retry_after
            if i % 20 == 0:  # Telegram keeps getting through from its own address
                before = len(upstream.received)
                ok = c.request(
                    post_bytes(TG_PATH, update(10_000 + i), [TOKEN, ("X-Forwarded-For", TELEGRAM_IP)])
                )
                assert ok.status == 200, (ok.status, ok.body)
                assert len(upstream.received) == before + 1
                valid += 1
        assert throttled >= forged // 2, f"only {throttled} of {forged} forged requests throttled"
        assert all(r.header("X-Forwarded-For") == TELEGRAM_IP for r in upstream.received)
        text = gw.metrics_text()
        assert metric(text, "webhook_gateway_requests_total", route="tg", outcome="rate_limited") == throttled
        assert len(upstream.received) == valid


def test_forged_flood_from_more_addresses_than_the_store_keeps_hits_the_route_ceiling(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    """Per-address failure windows cannot follow more addresses than `store.max_entries`; the
    route's own ceiling does: past it, forged requests get 429, and valid ones still pass."""
    cfg = gateway_config(upstream, store={"max_entries": 100})
    cfg["routes"][0]["rate_limit"] = {"failures": "5/m", "route_failures": "20/m"}
    forged, throttled = 600, 0
    before = len(upstream.received)
    with gateway_process(cfg, tmp_path / "gw") as gw, Conn(gw.public_port) as c:
        for i in range(forged):
            address = f"100.64.{i // 250}.{i % 250 + 1}"  # each one new: no address fails twice
            r = c.request(
                post_bytes(
                    TG_PATH,
                    update(i),
                    [("X-Telegram-Bot-Api-Secret-Token", "forged"), ("X-Forwarded-For", address)],
                )
            )
            assert r.status in (401, 429), (r.status, r.body)
            throttled += r.status == 429
            if i % 100 == 99:  # a valid update from an address never seen still gets through
                ok = c.request(
                    post_bytes(
                        TG_PATH, update(10_000 + i), [TOKEN, ("X-Forwarded-For", f"198.51.100.{i // 100}")]
                    )
                )
                assert ok.status == 200, (ok.status, ok.body)
        # The window holds 20 failures a minute; a sliding window may admit a few more.
        assert throttled >= forged - 30, f"only {throttled} of {forged} forged requests throttled"
        text = gw.metrics_text()
        assert metric(text, "webhook_gateway_store_evictions_total", table="rate_limit_failures") > 0
        counted = metric(
            text,
            "webhook_gateway_check_failures_total",
            route="tg",
            check="rate_limit",
            reason="route_failures",
        )
        assert counted == throttled
        assert len(upstream.received) == before + forged // 100
