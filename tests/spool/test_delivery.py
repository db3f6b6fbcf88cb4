"""`delivery: spool` end to end, in process: acknowledge, store, deliver in order, retry, dead letters."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from gateway.serve.reload import Reloader
from tests.support.env import TG_SECRET
from tests.support.inprocess import base_config, post, route, running_gateway, tg_verify
from tests.support.process import free_port
from tests.support.spool import FAST_SPOOL, eventually, rows, spool_config
from tests.support.upstream import RecordingUpstream, recording_upstream, upstream_on

TG = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Type": "application/json"}


def update(i: int) -> bytes:
    # Non-ASCII and escaped bytes: what is delivered must be the exact bytes received.
    return b'{"update_id":%d,"message":{"text":"caf\xc3\xa9 \\u00e9 %d"}}' % (i, i)


async def test_upstream_down_then_back_every_acknowledged_update_delivered_once_in_order(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens here yet: the bot is down
    db = tmp_path / "spool.db"
    conf = spool_config(db, f"http://127.0.0.1:{port}/webhook", verify=tg_verify())
    async with running_gateway(conf) as gw:
        url = gw.base + "/hook/bot"
        # Checks still come first: a forged update is refused and never stored.
        status, _, _ = await post(url, update(999), {"X-Telegram-Bot-Api-Secret-Token": "wrong"})
        assert status == 401
        sent = [update(i) for i in range(30)]
        for body in sent:
            status, answer, _ = await post(url, body, TG)
            assert (status, answer) == (200, b'{"status": "spooled"}')
        assert [r[2] for r in rows(db)] == sent  # each committed before its 200
        await eventually(
            lambda: gw.metric("webhook_gateway_spool_deliveries_total", route="bot", result="retry"),
            what="failed attempts while the upstream is down",
        )

        async def depth() -> float:
            return await gw.metric("webhook_gateway_spool_depth", route="bot")

        await eventually(lambda: _eq(depth(), 30), what="depth gauge shows 30 pending")
        assert await gw.metric("webhook_gateway_spool_oldest_age_seconds", route="bot") > 0

        async with upstream_on(port) as up:
            await eventually(lambda: len(up.received) >= len(sent), what="all delivered")
            await eventually(lambda: _eq(depth(), 0), what="depth back to 0")
        assert [r.body for r in up.received] == sent  # once each, in arrival order, exact bytes
        first = up.received[0]
        assert first.header("Content-Type") == "application/json"
        assert first.header("X-Webhook-Verdict") == "pass"
        assert first.header("X-Forwarded-For") == "127.0.0.1"
        assert len({r.header("X-Request-Id") for r in up.received}) == len(sent)
        assert rows(db) == []
        assert (
            await gw.metric("webhook_gateway_spool_deliveries_total", route="bot", result="delivered") == 30
        )
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="spooled") == 30
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="rejected") == 1
        assert await gw.metric("webhook_gateway_spool_oldest_age_seconds", route="bot") == 0


async def _eq(value: object, expected: float) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_a_senders_retry_is_a_duplicate_even_after_a_restart(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "spool.db"
    conf = spool_config(db, f"http://127.0.0.1:{port}/webhook")
    async with running_gateway(conf) as gw:
        assert (await post(gw.base + "/hook/bot", update(1)))[0] == 200
    async with running_gateway(conf) as gw:  # a new process would see the same file
        status, answer, _ = await post(gw.base + "/hook/bot", update(1))
        assert (status, answer) == (200, b'{"status": "duplicate"}')
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="duplicate") == 1
        assert (await post(gw.base + "/hook/bot", update(2)))[0] == 200
        assert [r[2] for r in rows(db)] == [update(1), update(2)]
        async with upstream_on(port) as up:  # pending rows resume after the restart
            await eventually(lambda: len(up.received) >= 2, what="both delivered")
            await eventually(lambda: rows(db) == [], what="rows deleted after 2xx")
        assert [r.body for r in up.received] == [update(1), update(2)]


async def test_the_replay_key_marks_the_spool_in_the_same_transaction(tmp_path: Path) -> None:
    """With `replay: {key: update_id}`, the spool's mark is the update_id: after a restart (the
    memory replay store forgotten) the same update with other bytes is still a duplicate."""
    port = free_port()
    db = tmp_path / "spool.db"
    conf = spool_config(
        db, f"http://127.0.0.1:{port}/webhook", verify=tg_verify(), replay={"key": "update_id"}
    )
    first = b'{"update_id": 7, "message": {"text": "a"}}'
    same_update_other_bytes = b'{"message": {"text": "a"}, "update_id": 7}'
    async with running_gateway(conf) as gw:
        assert (await post(gw.base + "/hook/bot", first, TG))[:2] == (200, b'{"status": "spooled"}')
    async with running_gateway(conf) as gw:
        status, answer, _ = await post(gw.base + "/hook/bot", same_update_other_bytes, TG)
        assert (status, answer) == (200, b'{"status": "duplicate"}')
        status, answer, _ = await post(gw.base + "/hook/bot", b'{"update_id": 8}', TG)
        assert (status, answer) == (200, b'{"status": "spooled"}')
    assert [r[2] for r in rows(db)] == [first, b'{"update_id": 8}']


async def test_a_refused_update_is_dead_lettered_after_max_attempts(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    async with recording_upstream(status=400, body=b'{"ok":false}') as up:
        conf = spool_config(db, up.url, spool={"max_attempts": 3})
        async with running_gateway(conf) as gw:
            assert (await post(gw.base + "/hook/bot", update(7)))[0] == 200
            await eventually(lambda: len(rows(db, "dead")) == 1, what="dead-lettered")
            assert rows(db) == []
            [(_, name, body, attempts)] = rows(db, "dead")
            assert (name, body, attempts) == ("bot", update(7), 3)
            assert [r.body for r in up.received] == [update(7)] * 3
            assert await gw.metric("webhook_gateway_dead_letters_total", route="bot") == 1
            deliveries = "webhook_gateway_spool_deliveries_total"
            assert await gw.metric(deliveries, route="bot", result="dead_letter") == 1
            assert await gw.metric(deliveries, route="bot", result="retry") == 2
            await eventually(
                lambda: _eq(gw.metric("webhook_gateway_spool_dead_rows", route="bot"), 1),
                what="dead rows gauge",
            )


@pytest.mark.parametrize("status", [429, 408, 503])
async def test_retryable_answers_never_dead_letter_and_retry_after_is_honoured(
    tmp_path: Path, status: int
) -> None:
    db = tmp_path / "spool.db"
    async with recording_upstream(status=status, headers=[("Retry-After", "30")]) as up:
        conf = spool_config(db, up.url, spool={"max_attempts": 1})
        async with running_gateway(conf) as gw:
            before = time.time()
            assert (await post(gw.base + "/hook/bot", update(1)))[0] == 200
            await eventually(lambda: _attempts(db) == 1, what="first attempt recorded")
            next_at = _next_at(db)
            # Retry-After: 30 moved the next attempt 30 s out (backoff alone would be < 0.2 s).
            assert next_at >= before + 29
            assert rows(db, "dead") == [] and len(up.received) == 1


def _attempts(db: Path) -> int:
    r = rows(db)
    return int(r[0][3]) if r else -1


def _next_at(db: Path) -> float:
    conn = sqlite3.connect(db)
    try:
        return float(conn.execute("SELECT next_at FROM pending").fetchone()[0])
    finally:
        conn.close()


async def test_too_old_updates_go_to_the_dead_letters(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    async with recording_upstream(status=502) as up:
        conf = spool_config(db, up.url, spool={"max_age": "300ms"})
        async with running_gateway(conf) as gw:
            assert (await post(gw.base + "/hook/bot", update(1)))[0] == 200
            await eventually(lambda: len(rows(db, "dead")) == 1, what="dead-lettered by age")
            assert len(up.received) >= 2  # retried while young enough
            assert await gw.metric("webhook_gateway_dead_letters_total", route="bot") == 1


class PeakUpstream(RecordingUpstream):
    """Records the most requests it had in flight at once."""

    inflight: int = 0
    peak: int = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            return await super().handle(request)
        finally:
            self.inflight -= 1


def chat_update(i: int, chat: int) -> bytes:
    return b'{"update_id":%d,"message":{"chat":{"id":%d},"text":"%d"}}' % (i, chat, i)


def chat_of(body: bytes) -> int:
    return int(json.loads(body)["message"]["chat"]["id"])


async def test_chats_are_delivered_concurrently_each_in_order(tmp_path: Path) -> None:
    """A Telegram route keys by chat (auto): four chats go out at once to a slow upstream,
    and each chat's updates arrive in the order they were acknowledged."""
    db = tmp_path / "spool.db"
    port = free_port()
    conf = spool_config(db, f"http://127.0.0.1:{port}/webhook", spool_concurrency=4, verify=tg_verify())
    async with running_gateway(conf) as gw:
        sent = [chat_update(i, 100 + i % 4) for i in range(16)]
        for body in sent:
            assert (await post(gw.base + "/hook/bot", body, TG))[0] == 200
        async with upstream_on(port, factory=PeakUpstream, delay=0.2) as up:
            await eventually(lambda: rows(db) == [], what="all delivered")
    assert sorted(r.body for r in up.received) == sorted(sent)
    for chat in range(100, 104):
        got = [r.body for r in up.received if chat_of(r.body) == chat]
        assert got == [b for b in sent if chat_of(b) == chat]
    assert isinstance(up, PeakUpstream) and up.peak == 4


class ChatRefusingUpstream(RecordingUpstream):
    """Answers 503 to one chat's updates while `refuse` is set, 200 to every other."""

    refuse: int | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        resp = await super().handle(request)
        if self.refuse is not None and chat_of(self.received[-1].body) == self.refuse:
            return web.Response(status=503)
        return resp


async def test_a_failing_head_holds_back_only_its_own_chat(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    async with upstream_on(free_port(), factory=ChatRefusingUpstream) as up:
        assert isinstance(up, ChatRefusingUpstream)
        up.refuse = 1
        conf = spool_config(db, up.url, spool_order_by="chat", spool_concurrency=2)
        async with running_gateway(conf) as gw:
            sent = [chat_update(i, 1 + i % 3) for i in range(12)]
            for body in sent:
                assert (await post(gw.base + "/hook/bot", body, TG))[0] == 200
            delivered = lambda: [r.body for r in up.received if chat_of(r.body) != 1]  # noqa: E731
            await eventually(lambda: len(delivered()) == 8, what="chats 2 and 3 delivered")
            # Chat 1's head keeps failing: it is the only chat that was retried, and none of
            # its later updates went out before it.
            chat1 = [r.body for r in up.received if chat_of(r.body) == 1]
            assert set(chat1) == {sent[0]} and len(chat1) >= 2
            assert len(rows(db)) == 4
            up.refuse = None
            await eventually(lambda: rows(db) == [], what="chat 1 delivered after it heals")
        firsts = [b for b in (r.body for r in up.received) if chat_of(b) == 1]
        assert list(dict.fromkeys(firsts)) == [b for b in sent if chat_of(b) == 1]
        for chat in (2, 3):
            assert [r.body for r in up.received if chat_of(r.body) == chat] == [
                b for b in sent if chat_of(b) == chat
            ]


async def test_reload_moves_the_upstream_and_a_removed_route_keeps_its_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "webhook_gateway.spool")
    db = tmp_path / "spool.db"
    path = tmp_path / "gateway.yaml"
    down = f"http://127.0.0.1:{free_port()}/webhook"
    conf = spool_config(db, down)
    path.write_text(yaml.safe_dump(conf))
    async with recording_upstream() as up, running_gateway(conf) as gw:
        reloader = Reloader(str(path), gw.service.holder, gw.service.metrics)
        for i in range(3):
            assert (await post(gw.base + "/hook/bot", update(i)))[0] == 200
        # The route disappears while its rows are pending: they stay, with a warning.
        other = route("other", upstream=up.url)
        path.write_text(yaml.safe_dump({**conf, "routes": [other]}))
        assert reloader.reload()
        assert (await post(gw.base + "/hook/bot", update(9)))[0] == 404
        await eventually(
            lambda: any("no longer configured" in r.getMessage() for r in caplog.records),
            what="orphan warning",
        )
        assert len(rows(db)) == 3 and up.received == []
        # Back, pointing at a live upstream: the next attempt reads the new upstream.
        path.write_text(yaml.safe_dump(spool_config(db, up.url)))
        assert reloader.reload()
        await eventually(lambda: len(up.received) >= 3, what="delivered to the new upstream")
        assert [r.body for r in up.received] == [update(i) for i in range(3)]


async def test_a_spool_path_change_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    conf = spool_config(tmp_path / "a.db", "http://127.0.0.1:9/")
    path.write_text(yaml.safe_dump(conf))
    async with running_gateway(conf) as gw:
        reloader = Reloader(str(path), gw.service.holder, gw.service.metrics)
        path.write_text(yaml.safe_dump(spool_config(tmp_path / "b.db", "http://127.0.0.1:9/")))
        assert reloader.reload() is False
        assert gw.service.config.spool_settings.path == str(tmp_path / "a.db")


async def test_passthrough_routes_beside_a_spool_route_are_unchanged(tmp_path: Path) -> None:
    async with recording_upstream(status=201, body=b'{"method":"sendMessage"}') as up:
        conf = base_config(
            [route("direct", upstream=up.url), route("spooled", upstream=up.url, delivery="spool")],
            spool={"path": str(tmp_path / "spool.db"), **FAST_SPOOL},
        )
        async with running_gateway(conf) as gw:
            status, answer, _ = await post(gw.base + "/hook/direct", b"{}")
            assert (status, answer) == (201, b'{"method":"sendMessage"}')
            status, answer, _ = await post(gw.base + "/hook/spooled", b"{}")
            assert (status, answer) == (200, b'{"status": "spooled"}')
