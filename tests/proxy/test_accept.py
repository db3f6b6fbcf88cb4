"""Update filtering (accept): verified updates the bot does not handle get 200, not forwarded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.inprocess import base_config, route, tg_verify
from tests.support.state import FORGED, TOKEN, gateway, send, update
from tests.support.upstream import recording_upstream

OK = b'{"ok":true}'


def accepting(upstream: str, **accept: Any) -> dict[str, Any]:
    return route("bot", upstream, verify=tg_verify(), accept=accept)


def callback(uid: int, chat: str | None) -> bytes:
    query: dict[str, Any] = {"id": "1", "from": {"id": 1}, "data": "x"}
    if chat is not None:
        query["message"] = {"message_id": 1, "chat": {"id": 42, "type": chat}}
    return json.dumps({"update_id": uid, "callback_query": query}).encode()


@pytest.mark.parametrize(
    ("body", "forwarded"),
    [
        (update(1, "message", "private"), True),
        (update(2, "message", "group"), True),
        (update(3, "message", "supergroup"), False),  # chat type not accepted
        (update(4, "edited_message", "private"), False),  # update type not accepted
        (update(5, "channel_post", "channel"), False),
        (callback(6, "private"), True),  # a callback's chat is in its message
        (callback(7, "channel"), False),
        (callback(8, None), True),  # a button under an inline message: no chat, judged by type
        (b'{"update_id": 9, "inline_query": {"id": "1", "query": "q"}}', False),
        (b'{"update_id": 10, "some_future_type": {}}', False),
        (b"not json", False),  # verified, but not an update: cannot be shown to be accepted
        (b'{"update_id": 12}', False),
    ],
)
async def test_only_accepted_updates_reach_the_bot(body: bytes, forwarded: bool) -> None:
    async with recording_upstream(body=b"{}") as up:
        cfg = base_config(
            [accepting(up.url, updates=["message", "callback_query"], chat_types=["private", "group"])]
        )
        async with gateway(cfg) as gw:
            status, answer, _ = await send(gw, body, TOKEN)
            assert status == 200
            assert answer == (b"{}" if forwarded else OK)
            assert [r.body for r in up.received] == ([body] if forwarded else [])
            outcome = "forwarded" if forwarded else "filtered"
            assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome=outcome) == 1


async def test_updates_without_a_chat_pass_a_chat_filter_alone() -> None:
    async with (
        recording_upstream() as up,
        gateway(base_config([accepting(up.url, chat_types=["private"])])) as gw,
    ):
        inline = b'{"update_id": 1, "inline_query": {"id": "1", "query": "q"}}'
        assert (await send(gw, inline, TOKEN))[0] == 200
        assert (await send(gw, update(2, "message", "group"), TOKEN))[1] == OK
        assert [r.body for r in up.received] == [inline]


async def test_unverified_updates_are_not_parsed_or_filtered() -> None:
    async with recording_upstream() as up:
        cfg = base_config([accepting(up.url, updates=["message"])])
        async with gateway(cfg) as gw:
            # Enforce: a forgery is refused as a forgery, not answered 200 as "filtered".
            assert (await send(gw, update(1, "edited_message"), FORGED))[0] == 401
        cfg["mode"] = "report-only"
        async with gateway(cfg) as gw:
            # Report-only: forwarded untouched, marked as the forgery it is.
            assert (await send(gw, update(2, "edited_message"), FORGED))[0] == 200
            assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="filtered") == 0
    assert [r.header("X-Webhook-Verdict") for r in up.received] == [
        "would-reject; check=signature; reason=mismatch"
    ]


async def test_filtered_updates_leave_no_replay_mark() -> None:
    async with recording_upstream(body=b"{}") as up:
        r = accepting(up.url, chat_types=["private"])
        r["replay"] = {}
        async with gateway(base_config([r])) as gw:
            # Filtered first; a later corrected delivery of the same id still gets through.
            assert (await send(gw, update(1, "message", "group"), TOKEN))[1] == OK
            assert (await send(gw, update(1, "message", "private"), TOKEN))[1] == b"{}"
            assert len(up.received) == 1
            assert (await send(gw, update(1, "message", "private"), TOKEN))[1] == OK
            assert len(up.received) == 1


async def test_report_only_still_filters_verified_updates() -> None:
    # accept is the bot's own choice of traffic, not a verdict on the sender: both modes.
    async with recording_upstream() as up:
        cfg = base_config([accepting(up.url, updates=["message"])], mode="report-only")
        async with gateway(cfg) as gw:
            assert (await send(gw, update(1, "edited_message"), TOKEN))[:2] == (200, OK)
            assert (await send(gw, update(2, "message"), TOKEN))[0] == 200
            assert [r.body for r in up.received] == [update(2, "message")]
