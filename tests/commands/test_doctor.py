"""`doctor` against real TLS servers on loopback: the gateway itself, or a small `ssl` server
where the gateway cannot misbehave the way a test needs (TLS 1.1). Each finding is asserted
on its own check, so the port check (a high test port always fails it) hides nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.commands.doctor import Doctor, Report, parse_resolve
from tests.support.env import ROOT_DIR
from tests.support.inprocess import base_config, route, running_gateway, tg_verify
from tests.support.tls import Pki, days, make_pki
from tests.support.upstream import recording_upstream

HOST = "bot.test"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def tls_section(*pairs: tuple[Path, Path]) -> dict[str, Any]:
    return {"certificates": [{"cert_file": str(c), "key_file": str(k)} for c, k in pairs]}


@contextlib.asynccontextmanager
async def gateway(*pairs: tuple[Path, Path] | None, mode: str = "enforce") -> AsyncIterator[int]:
    """A gateway with one Telegram route at /hook/bot; returns its public port."""
    async with recording_upstream() as up:
        tls = tls_section(*[p for p in pairs if p is not None]) if pairs and pairs[0] else None
        extra = {"tls": tls} if tls else {}
        config = base_config([route(upstream=up.url, verify=tg_verify(), mode=mode)], **extra)
        async with running_gateway(config) as gw:
            yield gw.service.public_port


async def diagnose(port: int, pki: Pki | None, path: str = "/hook/bot", scheme: str = "https") -> Report:
    doctor = Doctor(
        f"{scheme}://{HOST}:{port}{path}",
        ca=str(pki.root_pem) if pki else None,
        resolve=parse_resolve([f"{HOST}:127.0.0.1"]),
        timeout=5,
    )
    return await asyncio.to_thread(doctor.run)


def statuses(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


async def test_a_healthy_gateway_passes_everything_but_the_test_port(pki: Pki) -> None:
    async with gateway(pki.write(pki.leaf(HOST), "bot")) as port:
        report = await diagnose(port, pki)
    assert statuses(report) == {
        "url": "ok",
        "port": "fail",  # a high loopback port: Telegram would refuse it
        "dns": "ok",
        "tcp": "ok",
        "tls_handshake": "ok",
        "tls_version": "ok",
        "chain": "ok",
        "hostname": "ok",
        "validity": "ok",
        "sni_default": "ok",
        "enforcing": "ok",
    }
    checks = report.by_name()
    assert "pinned to 127.0.0.1 by --resolve" in checks["dns"].detail
    assert "server sent 2 certificate(s)" in checks["chain"].detail
    assert checks["enforcing"].detail.startswith("a POST without the secret is refused: 401")
    assert f"{port}: Telegram delivers only to ports 443, 80, 88, 8443" == checks["port"].detail
    assert not report.ok


async def test_missing_intermediate(pki: Pki) -> None:
    async with gateway(pki.write(pki.leaf(HOST), "bot", full_chain=False)) as port:
        report = await diagnose(port, pki)
    chain = report.by_name()["chain"]
    assert chain.status == "fail"
    assert chain.detail.startswith("intermediate certificate missing: the server sends only its own")
    assert "fullchain.pem" in chain.fix
    assert statuses(report)["hostname"] == statuses(report)["validity"] == "ok"


async def test_san_mismatch(pki: Pki) -> None:
    async with gateway(pki.write(pki.leaf("other.test", "*.example.test"), "other")) as port:
        report = await diagnose(port, pki)
    hostname = report.by_name()["hostname"]
    assert hostname.status == "fail"
    assert hostname.detail == f"certificate is for other.test, *.example.test, not {HOST}"
    assert statuses(report)["chain"] == "ok"


async def test_expired_certificate_and_one_about_to_expire(pki: Pki) -> None:
    expired = pki.leaf(HOST, not_before=days(-100), not_after=days(-3))
    async with gateway(pki.write(expired, "old")) as port:
        report = await diagnose(port, pki)
    validity = report.by_name()["validity"]
    assert validity.status == "fail"
    assert validity.detail.startswith("expired on ") and "(3 days ago)" in validity.detail
    # The chain itself is sound: reported as such, not drowned in the expiry.
    assert statuses(report)["chain"] == "ok"

    soon = pki.leaf(HOST, not_after=days(5))
    async with gateway(pki.write(soon, "soon")) as port:
        report = await diagnose(port, pki)
    assert report.by_name()["validity"].status == "warn"
    assert "days left" in report.by_name()["validity"].detail


async def test_wrong_certificate_without_sni(pki: Pki) -> None:
    # SNI finds bot.test's certificate, but the default (first) one is for another site.
    other = pki.write(pki.leaf("other.test"), "other")
    bot = pki.write(pki.leaf(HOST), "bot")
    async with gateway(other, bot) as port:
        report = await diagnose(port, pki)
    default = report.by_name()["sni_default"]
    assert default.status == "fail"
    assert default.detail == f"without SNI the server presents the certificate for other.test, not {HOST}"
    assert "first in tls.certificates" in default.fix
    assert statuses(report)["hostname"] == "ok"  # with SNI all is well
    # Swapping the order fixes it.
    async with gateway(bot, other) as port:
        assert statuses(await diagnose(port, pki))["sni_default"] == "ok"


async def test_a_route_that_does_not_enforce(pki: Pki) -> None:
    pair = pki.write(pki.leaf(HOST), "bot")
    async with gateway(pair, mode="report-only") as port:
        report = await diagnose(port, pki)
        enforcing = report.by_name()["enforcing"]
        assert enforcing.status == "fail"
        assert enforcing.detail.startswith("a POST without the secret was accepted (200)")
        assert "mode: enforce" in enforcing.fix
        wrong_path = (await diagnose(port, pki, path="/hook/typo")).by_name()["enforcing"]
        assert wrong_path.status == "fail"
        assert wrong_path.detail.startswith('404 {"error": "not_found"}')


async def test_untrusted_root_without_ca_and_plain_http_on_an_https_url(pki: Pki) -> None:
    async with gateway(pki.write(pki.leaf(HOST), "bot")) as port:
        report = await diagnose(port, None)  # the system store does not know the test root
    chain = report.by_name()["chain"]
    assert chain.status == "fail" and "the system trust store" in chain.detail

    async with gateway(None) as port:  # no tls: section
        report = await diagnose(port, pki)
    handshake = report.by_name()["tls_handshake"]
    assert handshake.status == "fail"
    assert "plain HTTP" in handshake.fix
    assert statuses(report)["chain"] == statuses(report)["enforcing"] == "skip"


@contextlib.asynccontextmanager
async def old_tls_server(pki: Pki) -> AsyncIterator[int]:
    """A server stuck on TLS 1.1 that answers every request with 401."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.leaf(HOST).configure_cert(ctx)
    pki.intermediate.configure_trust(ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_below_1_2(pki: Pki) -> None:
    async with old_tls_server(pki) as port:
        report = await diagnose(port, pki)
    version = report.by_name()["tls_version"]
    assert version.status == "fail"
    assert version.detail == "negotiated TLSv1.1: Telegram requires TLS 1.2 or newer"


async def test_dns_failures(pki: Pki) -> None:
    report = await asyncio.to_thread(Doctor("https://doctor-test.invalid/hook", timeout=5).run)
    assert statuses(report)["dns"] == "fail"
    assert "cannot resolve doctor-test.invalid" in report.by_name()["dns"].detail
    assert {statuses(report)[n] for n in ("tcp", "chain", "enforcing")} == {"skip"}
    # An IPv6-only name: Telegram cannot reach it.
    doctor = Doctor("https://v6.test/hook", resolve=parse_resolve(["v6.test:[::1]"]), timeout=5)
    dns = (await asyncio.to_thread(doctor.run)).by_name()["dns"]
    assert dns.status == "fail" and "Telegram delivers over IPv4 only" in dns.detail


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["bot.test:127.0.0.1"], {("bot.test", None): "127.0.0.1"}),
        (["Bot.Test:8443:10.0.0.1"], {("bot.test", 8443): "10.0.0.1"}),
        (["bot.test:[::1]"], {("bot.test", None): "::1"}),
        (["bot.test:443:[2001:db8::1]"], {("bot.test", 443): "2001:db8::1"}),
    ],
)
def test_resolve_forms(given: list[str], expected: dict[Any, str]) -> None:
    assert parse_resolve(given) == expected


@pytest.mark.parametrize("bad", ["bot.test", "bot.test:not-an-ip", ":127.0.0.1", "bot.test:443:nope"])
def test_resolve_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:IP or HOST:PORT:IP"):
        parse_resolve([bad])


async def test_the_command_line(pki: Pki) -> None:
    async with gateway(pki.write(pki.leaf(HOST), "bot")) as port:
        url = f"https://{HOST}:{port}/hook/bot"
        common = ["--ca", str(pki.root_pem), "--resolve", f"{HOST}:{port}:127.0.0.1"]

        def run(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway", "doctor", url, *common, *extra],
                cwd=ROOT_DIR,
                capture_output=True,
                text=True,
                timeout=60,
            )

        as_json, as_text = await asyncio.gather(asyncio.to_thread(run, "--json"), asyncio.to_thread(run))
    assert as_json.returncode == 1  # the port check fails on a test port
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"] if c["status"] != "ok"] == ["port"]
    assert as_text.returncode == 1
    assert "FAIL  port" in as_text.stdout and "fix: serve the webhook on 443" in as_text.stdout
    assert as_text.stdout.rstrip().endswith("1 failed, 0 warning(s)")
