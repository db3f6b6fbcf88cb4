"""HTTPS on the public listener: SNI, expiry metric, certificate files replaced under a running
gateway, and the TLS floor. Every test talks real TLS to a real gateway on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from tests.support.env import TG_SECRET
from tests.support.inprocess import base_config, route, running_gateway, tg_verify
from tests.support.process import GatewayProcess, free_port
from tests.support.tls import (
    Pki,
    client_context,
    days,
    handshake,
    make_pki,
    not_after_of,
    serial_of,
    write_config,
)
from tests.support.upstream import recording_upstream

TG = "X-Telegram-Bot-Api-Secret-Token"


def tls_section(*pairs: tuple[Path, Path], **kw: Any) -> dict[str, Any]:
    return {"certificates": [{"cert_file": str(c), "key_file": str(k)} for c, k in pairs], **kw}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """Poll an eventual effect with a deadline (the watcher polls files about once a second)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


async def test_sni_picks_the_certificate_named_by_the_client(pki: Pki) -> None:
    a = pki.write(pki.leaf("a.test"), "a")
    b = pki.write(pki.leaf("b.test", "www.b.test"), "b")
    wild = pki.write(pki.leaf("*.wild.test"), "wild")
    async with recording_upstream() as up:
        config = base_config([route(upstream=up.url, verify=tg_verify())], tls=tls_section(a, b, wild))
        async with running_gateway(config) as gw:
            port = gw.service.public_port
            expected = {
                "a.test": ("a.test",),
                "b.test": ("b.test", "www.b.test"),
                "WWW.B.TEST": ("b.test", "www.b.test"),  # names are case-insensitive
                "x.wild.test": ("*.wild.test",),
                "x.y.wild.test": ("a.test",),  # a wildcard covers one label only: the default
                "unknown.test": ("a.test",),  # no match: the first certificate
                None: ("a.test",),  # no SNI at all: the first certificate
            }
            for name, names in expected.items():
                served = await asyncio.to_thread(handshake, port, name)
                assert served.names == names, name
                assert served.chain_length == 2  # leaf + intermediate, as cert_file holds them
                assert served.version in ("TLSv1.2", "TLSv1.3")

            # A verifying client (trusting only the test root) gets through end to end.
            async with (
                aiohttp.ClientSession() as s,
                s.post(
                    f"https://127.0.0.1:{port}/hook/bot",
                    data=b'{"update_id":1}',
                    headers={TG: TG_SECRET},
                    ssl=client_context(pki),
                    server_hostname="www.b.test",
                ) as r,
            ):
                assert r.status == 200
            assert up.received[0].body == b'{"update_id":1}'
            assert up.received[0].header("X-Forwarded-Proto") == "https"


async def test_expiry_metric_per_server_name(pki: Pki) -> None:
    a_leaf, b_leaf = pki.leaf("a.test", not_after=days(40)), pki.leaf("b.test", "a.test", not_after=days(5))
    a, b = pki.write(a_leaf, "a"), pki.write(b_leaf, "b")
    config = base_config([route(upstream="http://127.0.0.1:9/x")], tls=tls_section(a, b))
    async with running_gateway(config) as gw:
        name = "webhook_gateway_tls_certificate_expiry_timestamp_seconds"
        # b's certificate also names a.test, but a.test is served from the first certificate
        # (first match wins): the metric is the expiry of what is served.
        assert await gw.metric(name, server_name="a.test") == not_after_of(a_leaf)
        assert await gw.metric(name, server_name="b.test") == not_after_of(b_leaf)
        assert not_after_of(a_leaf) - not_after_of(b_leaf) > 30 * 86400


def replace_in_place(pki: Pki, leaf: Any, cert: Path, key: Path) -> None:
    # What `cp new.crt cert.pem` does: same inode, new content (key first, then cert).
    new_cert, new_key = pki.write(leaf, "staging", into=pki.dir / "staging")
    key.write_bytes(new_key.read_bytes())
    cert.write_bytes(new_cert.read_bytes())


def k8s_secret_layout(pki: Pki, leaf: Any, name: str) -> tuple[Path, Path]:
    """A mounted Secret: tls.crt -> ..data/tls.crt, ..data -> ..<timestamped dir>."""
    mount = pki.dir / "secret"
    version = mount / f"..{name}"
    pki.write(leaf, "tls", into=version)
    (mount / "..data").symlink_to(version.name)
    for f in ("tls.crt", "tls.key"):
        (mount / f).symlink_to(f"..data/{f}")
    return mount / "tls.crt", mount / "tls.key"


def k8s_secret_update(pki: Pki, leaf: Any, cert: Path, key: Path) -> None:
    # The kubelet writes a new directory, then renames a fresh symlink over ..data (atomic).
    mount = cert.parent
    version = mount / "..v2"
    pki.write(leaf, "tls", into=version)
    (mount / "..data_tmp").symlink_to(version.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    shutil.rmtree(mount / "..v1")


@pytest.mark.parametrize("how", ["in-place", "kubernetes-secret"])
async def test_certificate_replaced_on_disk_is_served_to_new_connections(pki: Pki, how: str) -> None:
    old_leaf, new_leaf = pki.leaf("bot.test"), pki.leaf("bot.test")
    if how == "in-place":
        cert, key = pki.write(old_leaf, "bot")
    else:
        cert, key = k8s_secret_layout(pki, old_leaf, "v1")
    async with recording_upstream() as up:
        config = base_config([route(upstream=up.url, verify=tg_verify())], tls=tls_section((cert, key)))
        async with running_gateway(config) as gw:
            port = gw.service.public_port
            old_serial = (await asyncio.to_thread(handshake, port, "bot.test")).serial
            # A keep-alive connection opened before the renewal...
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(pki), server_hostname="bot.test"
            )
            try:
                assert b" 200 " in await exchange(reader, writer)
                if how == "in-place":
                    replace_in_place(pki, new_leaf, cert, key)
                else:
                    k8s_secret_update(pki, new_leaf, cert, key)
                new_serial = serial_of(new_leaf)
                assert new_serial != old_serial

                async def renewed() -> bool:
                    return (await asyncio.to_thread(handshake, port, "bot.test")).serial == new_serial

                await eventually(renewed)
                # ...is not dropped: it keeps its session and still answers.
                peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                assert _der_serial(peer) == old_serial
                assert b" 200 " in await exchange(reader, writer)
            finally:
                writer.close()
            assert len(up.received) == 2
            assert await gw.metric("webhook_gateway_tls_certificate_reloads_total", result="success") == 1
            assert await gw.metric("webhook_gateway_tls_certificate_reloads_total", result="error") == 0


async def test_a_broken_new_pair_keeps_the_old_certificate(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    old_leaf, new_leaf = pki.leaf("bot.test"), pki.leaf("bot.test")
    cert, key = pki.write(old_leaf, "bot")
    config = base_config([route(upstream="http://127.0.0.1:9/x")], tls=tls_section((cert, key)))
    async with running_gateway(config) as gw:
        port = gw.service.public_port
        old_serial = (await asyncio.to_thread(handshake, port, "bot.test")).serial
        # A new certificate lands, but with the old key: refused, the old pair stays in service.
        new_cert, new_key = pki.write(new_leaf, "staging", into=pki.dir / "staging")
        with caplog.at_level("ERROR", logger="webhook_gateway.tls"):
            cert.write_bytes(new_cert.read_bytes())

            async def refused() -> bool:
                return await gw.metric("webhook_gateway_tls_certificate_reloads_total", result="error") == 1

            await eventually(refused)
        assert (await asyncio.to_thread(handshake, port, "bot.test")).serial == old_serial
        problems = [getattr(r, "problem", "") for r in caplog.records]
        assert any("does not match the certificate" in p for p in problems), problems
        # The matching key arrives: now the new certificate is served.
        key.write_bytes(new_key.read_bytes())

        async def renewed() -> bool:
            return (await asyncio.to_thread(handshake, port, "bot.test")).serial == serial_of(new_leaf)

        await eventually(renewed)
        assert await gw.metric("webhook_gateway_tls_certificate_reloads_total", result="error") == 1
        assert await gw.metric("webhook_gateway_tls_certificate_reloads_total", result="success") == 1


async def test_tls_below_1_2_is_refused(pki: Pki) -> None:
    cert, key = pki.write(pki.leaf("bot.test"), "bot")
    config = base_config([route(upstream="http://127.0.0.1:9/x")], tls=tls_section((cert, key)))
    async with running_gateway(config) as gw:
        port = gw.service.public_port

        def old_client() -> str:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client really offers TLS 1.0/1.1
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                ctx.wrap_socket(raw, server_hostname="bot.test") as tls,
            ):
                return tls.version() or ""

        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(old_client)
        assert (await asyncio.to_thread(handshake, port, "bot.test")).version in ("TLSv1.2", "TLSv1.3")


async def test_min_version_1_3(pki: Pki) -> None:
    cert, key = pki.write(pki.leaf("bot.test"), "bot")
    config = base_config(
        [route(upstream="http://127.0.0.1:9/x")], tls=tls_section((cert, key), min_version="1.3")
    )
    async with running_gateway(config) as gw:
        assert (await asyncio.to_thread(handshake, gw.service.public_port, "bot.test")).version == "TLSv1.3"


async def test_the_real_process_serves_https_by_sni(pki: Pki, tmp_path: Path) -> None:
    # `webhook-gateway run` (uvloop, the shipped entry point), not the in-process Service.
    a = pki.write(pki.leaf("a.test"), "a")
    b = pki.write(pki.leaf("b.test"), "b")
    async with recording_upstream() as up:
        port, admin = free_port(), free_port()
        d = base_config([route(upstream=up.url, verify=tg_verify())], tls=tls_section(a, b))
        d.update(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{admin}")
        write_config(tmp_path / "g.yaml", d)
        gw = GatewayProcess(tmp_path / "g.yaml")
        await gw.start(port, admin)
        try:
            assert (await asyncio.to_thread(handshake, port, "b.test")).names == ("b.test",)
            assert (await asyncio.to_thread(handshake, port, None)).names == ("a.test",)
            async with (
                aiohttp.ClientSession() as s,
                s.post(
                    f"https://127.0.0.1:{port}/hook/bot",
                    data=b"{}",
                    headers={TG: TG_SECRET},
                    ssl=client_context(pki),
                    server_hostname="b.test",
                ) as r,
            ):
                assert r.status == 200
            assert (
                await gw.metric(
                    "webhook_gateway_tls_certificate_expiry_timestamp_seconds", server_name="b.test"
                )
                > 0
            )
        finally:
            assert await gw.stop() == 0


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive HTTP/1.1 request on an open connection; returns the response head."""
    body = b'{"update_id":7}'
    writer.write(
        b"POST /hook/bot HTTP/1.1\r\nHost: bot.test\r\nContent-Type: application/json\r\n"
        + f"{TG}: {TG_SECRET}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


def _der_serial(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number
