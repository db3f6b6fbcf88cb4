"""AWS SNS: messages signed in the test as AWS documents (the canonical string of the type's
fields, RSA SHA1 for SignatureVersion 1, SHA256 for 2), a CA and signing certificate generated
here (trustme), served over HTTPS from loopback as `sns.<region>.amazonaws.com` would serve them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.schemes.base import ToSign
from tests.support.inprocess import base_config, post, route, running_gateway
from tests.support.schemes import config_problems, sign, signed, verifier
from tests.support.upstream import recording_upstream

TOPIC = "arn:aws:sns:eu-west-1:123456789012:alerts"
CERT_PATH = "/SimpleNotificationService-0123456789abcdef.pem"

# What AWS's documentation lists as signed, per type, in this order.
SIGNED_FIELDS = {
    "Notification": ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
    "SubscriptionConfirmation": [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ],
}


@dataclass
class CertServer:
    """HTTPS on loopback: the signing certificate, and the SubscribeURL, with every hit recorded."""

    ca: trustme.CA
    ca_file: Path
    port: int = 0
    hits: list[str] = field(default_factory=list)
    pem: bytes = b""
    delay: float = 0.0

    def url(self, path: str = CERT_PATH, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def cert_hits(self) -> int:
        return sum(1 for h in self.hits if h.endswith(".pem"))


@dataclass
class SigningKey:
    key: rsa.RSAPrivateKey
    pem: bytes  # the certificate chain served at the cert URL


def signing_key(ca: trustme.CA, **kw: Any) -> SigningKey:
    leaf = ca.issue_cert("sns.eu-west-1.amazonaws.com", key_type=trustme.KeyType.RSA, **kw)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return SigningKey(key, leaf.cert_chain_pems[0].bytes())


@asynccontextmanager
async def cert_server(tmp_path: Path) -> AsyncIterator[CertServer]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    server = CertServer(ca, ca_file)

    async def handle(request: web.Request) -> web.Response:
        server.hits.append(request.path_qs)
        if server.delay:
            await asyncio.sleep(server.delay)
        if request.path.endswith(".pem"):
            return web.Response(body=server.pem, content_type="application/x-pem-file")
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(ctx)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


def message(
    key: SigningKey,
    cert_url: str,
    *,
    kind: str = "Notification",
    version: str = "1",
    topic: str = TOPIC,
    subject: str | None = "Alarm",
    text: str = 'caf\u00e9 {"alarm": "CPU > 90%"}\nline two',
    when: float | None = None,
    subscribe_url: str = "",
) -> dict[str, str]:
    ts = datetime.datetime.fromtimestamp(time.time() if when is None else when, datetime.UTC)
    msg: dict[str, str] = {
        "Type": kind,
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": topic,
        "Message": text,
        "Timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
    }
    if kind == "Notification":
        if subject is not None:
            msg["Subject"] = subject
        msg["UnsubscribeURL"] = cert_url.rsplit("/", 1)[0] + "/?Action=Unsubscribe"
    else:
        msg["Token"] = "2336412f37fb687f5d51e6e2425f004ae"
        msg["SubscribeURL"] = subscribe_url
    canonical = "".join(f"{name}\n{msg[name]}\n" for name in SIGNED_FIELDS[kind] if name in msg)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 (SNS v1 is SHA1)
    msg["Signature"] = base64.b64encode(
        key.key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
    ).decode()
    return msg


def sns_verify(server: CertServer, **kw: Any) -> dict[str, Any]:
    return {
        "scheme": "sns",
        "topic_arns": [TOPIC],
        "cert_host_pattern": r"^localhost$",
        "ca_file": str(server.ca_file),
        **kw,
    }


def body_of(msg: dict[str, str]) -> bytes:
    return json.dumps(msg, indent=2).encode()


def headers_of(msg: dict[str, str]) -> dict[str, str]:
    return {
        "x-amz-sns-message-type": msg["Type"],
        "x-amz-sns-message-id": msg["MessageId"],
        "x-amz-sns-topic-arn": msg["TopicArn"],
        "Content-Type": "text/plain; charset=UTF-8",
    }


async def send(gw: Any, msg: dict[str, str], path: str = "/hook/sns") -> tuple[int, bytes]:
    status, body, _ = await post(gw.base + path, body_of(msg), headers_of(msg))
    return status, body


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", ["Alarm", None])
async def test_signed_notification_forwarded_unchanged(
    tmp_path: Path, version: str, subject: str | None
) -> None:
    async with cert_server(tmp_path) as server, recording_upstream() as up:
        key = signing_key(server.ca)
        server.pem = key.pem
        cfg = base_config([route("sns", upstream=up.url, verify=sns_verify(server))])
        async with running_gateway(cfg) as gw:
            msg = message(key, server.url(), version=version, subject=subject)
            assert await send(gw, msg) == (200, b'{"ok":true}')
            (got,) = up.received
            assert got.body == body_of(msg) and got.header("X-Webhook-Verdict") == "pass"
            # Any signed field changed: refused.
            for name, value in [
                ("Message", msg["Message"] + "!"),
                ("Timestamp", msg["Timestamp"].replace("20", "19", 1)),
            ]:
                status, body = await send(gw, {**msg, name: value})
                assert status == 401 and b"signature_mismatch" in body, name
            # Another version's hash over the same string does not verify.
            other = "2" if version == "1" else "1"
            assert (await send(gw, {**msg, "SignatureVersion": other}))[0] == 401
            assert len(up.received) == 1
            assert server.cert_hits() == 1  # cached across requests


async def test_one_fetch_for_concurrent_requests_and_a_refetch_after_the_ttl(tmp_path: Path) -> None:
    async with cert_server(tmp_path) as server, recording_upstream() as up:
        key = signing_key(server.ca)
        server.pem = key.pem
        server.delay = 0.3  # the requests arrive while the one fetch is under way
        cfg = base_config([route("sns", upstream=up.url, verify=sns_verify(server, cert_cache_ttl="1s"))])
        async with running_gateway(cfg) as gw:
            msg = message(key, server.url())
            results = await asyncio.gather(*(send(gw, msg) for _ in range(10)))
            assert [s for s, _ in results] == [200] * 10
            assert server.cert_hits() == 1
            assert len(up.received) == 10
            await asyncio.sleep(1.2)  # past the TTL
            assert (await send(gw, msg))[0] == 200
            assert server.cert_hits() == 2


@pytest.mark.parametrize(
    "where",
    [
        "https://127.0.0.1:{port}" + CERT_PATH,  # a host outside the pattern
        "http://localhost:{port}" + CERT_PATH,  # not https
        "https://user@localhost:{port}" + CERT_PATH,  # credentials
        "https://localhost.evil.example:{port}" + CERT_PATH,
    ],
)
async def test_a_cert_url_outside_the_allow_list_is_never_fetched(tmp_path: Path, where: str) -> None:
    async with cert_server(tmp_path) as server, recording_upstream() as up:
        key = signing_key(server.ca)
        server.pem = key.pem
        cfg = base_config([route("sns", upstream=up.url, verify=sns_verify(server))])
        async with running_gateway(cfg) as gw:
            status, _ = await send(gw, message(key, where.format(port=server.port)))
            assert status == 401
            assert server.hits == [] and up.received == []


async def test_default_pattern_allows_only_aws_hosts() -> None:
    import re

    from gateway.schemes.sns import DEFAULT_HOST_PATTERN, allowed_url

    host = re.compile(DEFAULT_HOST_PATTERN)
    assert allowed_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem", host)
    assert allowed_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem", host)
    for url in (
        "http://sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com@evil.com/x.pem",
        "https://s3.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com:bad/x.pem",
    ):
        assert not allowed_url(url, host), url


async def test_foreign_topic_expired_or_untrusted_certificate_refused(tmp_path: Path) -> None:
    async with cert_server(tmp_path) as server, recording_upstream() as up:
        cfg = base_config([route("sns", upstream=up.url, verify=sns_verify(server))])
        async with running_gateway(cfg) as gw:
            key = signing_key(server.ca)
            server.pem = key.pem
            # Another account's topic, validly signed: refused before any fetch.
            assert (await send(gw, message(key, server.url(), topic=TOPIC + "-other")))[0] == 401
            assert server.hits == []
            # An expired signing certificate.
            past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
            old = signing_key(server.ca, not_before=past, not_after=past + datetime.timedelta(days=1))
            server.pem = old.pem
            status, body = await send(gw, message(old, server.url("/SimpleNotificationService-old.pem")))
            assert status == 401 and b"cert_unavailable" in body
            # A certificate from a CA the gateway does not trust, served over the trusted TLS.
            rogue = signing_key(trustme.CA(key_type=trustme.KeyType.RSA))
            server.pem = rogue.pem
            status, _ = await send(gw, message(rogue, server.url("/SimpleNotificationService-rogue.pem")))
            assert status == 401
            assert up.received == []
            assert server.cert_hits() == 2
            labels = {"route": "sns", "check": "signature", "mode": "enforce"}
            assert (
                await gw.metric("webhook_gateway_check_failures_total", reason="cert_unavailable", **labels)
                == 2
            )


def _pending(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM pending").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("delivery", ["passthrough", "spool"])
async def test_subscription_confirmed_by_the_gateway_when_the_route_opts_in(
    tmp_path: Path, delivery: str
) -> None:
    async with cert_server(tmp_path) as server, recording_upstream() as up:
        key = signing_key(server.ca)
        server.pem = key.pem
        verify = sns_verify(server, confirm_subscriptions=True)
        db = tmp_path / "spool.db"
        cfg = base_config(
            [route("sns", upstream=up.url, verify=verify, delivery=delivery)], spool={"path": str(db)}
        )
        async with running_gateway(cfg) as gw:
            confirm = "/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f"
            # Forged first: refused, and the SubscribeURL is never visited.
            forged = message(
                key, server.url(), kind="SubscriptionConfirmation", subscribe_url=server.url(confirm)
            )
            forged["Token"] = "other"
            assert (await send(gw, forged))[0] == 401
            assert confirm not in server.hits
            msg = message(
                key, server.url(), kind="SubscriptionConfirmation", subscribe_url=server.url(confirm)
            )
            status, body = await send(gw, msg)
            assert (status, json.loads(body)) == (200, {"status": "confirmed"})
            assert server.hits.count(confirm) == 1
            assert await gw.metric("webhook_gateway_requests_total", route="sns", outcome="handshake") == 1
            assert up.received == [] and _pending(db) == 0
            # A SubscribeURL outside the allow-list is not visited.
            evil = message(
                key,
                server.url(),
                kind="SubscriptionConfirmation",
                subscribe_url=f"https://127.0.0.1:{server.port}/x",
            )
            assert (await send(gw, evil))[0] == 400
            assert "/x" not in server.hits
            assert up.received == [] and _pending(db) == 0


async def test_subscription_forwarded_when_the_route_does_not_opt_in(tmp_path: Path) -> None:
    async with cert_server(tmp_path) as server, recording_upstream() as up:
        key = signing_key(server.ca)
        server.pem = key.pem
        cfg = base_config([route("sns", upstream=up.url, verify=sns_verify(server))])
        async with running_gateway(cfg) as gw:
            confirm = "/?Action=ConfirmSubscription&Token=1"
            msg = message(
                key, server.url(), kind="SubscriptionConfirmation", subscribe_url=server.url(confirm)
            )
            assert (await send(gw, msg))[0] == 200
            (got,) = up.received
            assert got.body == body_of(msg)
            assert confirm not in server.hits


def test_parse_errors_without_any_fetch(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(trustme.CA().cert_pem.bytes())
    v = verifier({"scheme": "sns", "topic_arns": [TOPIC], "ca_file": str(ca_file)}, {})
    now = time.time()
    assert v.verify(signed({}, b"not json", now)).reason == "malformed"
    assert v.verify(signed({}, b"[]", now)).reason == "malformed"
    assert v.verify(signed({}, b'{"Type": "Notification"}', now)).reason == "missing"
    assert v.verify(signed({}, b'{"Signature": "x", "Type": "Other"}', now)).reason == "malformed"
    assert v.verify(signed({}, b" " * (1 << 20) + b"{}", now)).reason == "malformed"  # bounded before parsing
    key = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), b"")
    msg = message(key, "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem")
    assert v.verify(signed(headers_of(msg), body_of(msg), now)).reason == "cert_unavailable"  # not prepared
    assert v.verify(
        signed({**headers_of(msg), "x-amz-sns-message-id": "other"}, body_of(msg), now)
    ).reason == ("malformed")
    assert v.verify(signed({}, body_of({**msg, "SignatureVersion": "3"}), now)).reason == "malformed"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"topic_arns": None}, "routes[0].verify.topic_arns: list the topic ARNs"),
        ({"topic_arns": ["alerts"]}, "routes[0].verify.topic_arns[0]: expected a topic ARN"),
        ({"cert_host_pattern": "("}, "routes[0].verify.cert_host_pattern"),
        ({"ca_file": "/nonexistent/ca.pem"}, "routes[0].verify.ca_file: cannot read CA certificates"),
        ({"cert_cache_size": 0}, "routes[0].verify.cert_cache_size"),
        ({"secrets": ["env:S"]}, "routes[0].verify.secrets: sns verifies with public_keys"),
    ],
)
def test_config_errors(extra: dict[str, Any], expected: str) -> None:
    verify = {"scheme": "sns", "topic_arns": [TOPIC], **extra}
    verify = {k: v for k, v in verify.items() if v is not None}
    problems = config_problems(verify, {"S": "s"})
    assert any(p.startswith(expected) for p in problems), problems


def test_sign_makes_a_message_the_verifier_accepts(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    leaf = ca.issue_cert("sns", key_type=trustme.KeyType.RSA)
    conf = {
        "scheme": "sns",
        "topic_arns": [TOPIC],
        "ca_file": str(ca_file),
        "cert_host_pattern": "^localhost$",
    }
    url = "https://localhost/SimpleNotificationService-1.pem"
    unsigned = {
        "Type": "Notification",
        "MessageId": "m1",
        "TopicArn": TOPIC,
        "Message": "hi",
        "Timestamp": "2026-01-01T00:00:00.000Z",
    }
    sig = sign(
        conf,
        {},
        ToSign(json.dumps(unsigned).encode(), 0, private_key=leaf.private_key_pem.bytes(), cert_url=url),
    )
    assert sig.body is not None
    v = verifier(conf, {})
    pub = leaf.cert_chain_pems[0].bytes()
    from cryptography import x509

    v.cache.put(url, x509.load_pem_x509_certificate(pub).public_key(), 1e12)  # type: ignore[attr-defined,arg-type]
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert v.verify(signed(dict(sig.headers), sig.body, when)).ok
    assert v.verify(signed(dict(sig.headers), sig.body.replace(b'"hi"', b'"ho"'), when)).reason == "mismatch"


async def test_sign_command_with_a_key_and_the_cert_url_then_curl(tmp_path: Path) -> None:
    import sys

    import yaml

    from tests.commands.test_sign_cli import run
    from tests.commands.test_sign_cli import send as curl

    async with cert_server(tmp_path) as server, recording_upstream() as up:
        leaf = server.ca.issue_cert("sns", key_type=trustme.KeyType.RSA)
        server.pem = leaf.cert_chain_pems[0].bytes()
        key_file = tmp_path / "signing.key"
        key_file.write_bytes(leaf.private_key_pem.bytes())
        unsigned = {
            "Type": "Notification",
            "MessageId": "da41e39f-ea4d-435a-b922-c6aae3915ebe",
            "TopicArn": TOPIC,
            "Subject": "test",
            "Message": "test message",
            "Timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }
        body_file = tmp_path / "body.json"
        body_file.write_text(json.dumps(unsigned))
        cfg = base_config([route("sns", upstream=up.url, verify=sns_verify(server))])
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(cfg))
        async with running_gateway(cfg) as gw:
            out_file = tmp_path / "signed.json"
            code, out, err = await run(
                sys.executable, "-m", "gateway", "sign", "--config", str(config_file), "--route", "sns",
                "--body", str(body_file), "--private-key", str(key_file), "--cert-url", server.url(),
                "--signed-body", str(out_file),
            )  # fmt: skip
            assert code == 0, err
            assert f"the body in {out_file}" in err
            header_file = tmp_path / "headers"
            header_file.write_text(out)
            assert await curl(gw.base + "/hook/sns", header_file, out_file) == 200
            (got,) = up.received
            assert got.body == out_file.read_bytes()
            assert json.loads(got.body)["Message"] == "test message"


async def test_the_cache_is_bounded_by_entries(tmp_path: Path) -> None:
    async with cert_server(tmp_path) as server, recording_upstream() as up:
        key = signing_key(server.ca)
        server.pem = key.pem
        cfg = base_config([route("sns", upstream=up.url, verify=sns_verify(server, cert_cache_size=1))])
        async with running_gateway(cfg) as gw:
            a, b = (
                server.url("/SimpleNotificationService-a.pem"),
                server.url("/SimpleNotificationService-b.pem"),
            )
            for url in (a, a, b, a):
                assert (await send(gw, message(key, url)))[0] == 200
            # a fetched, kept; b fetched, a dropped (one entry); a fetched again.
            assert [h for h in server.hits if h.endswith(".pem")] == [
                CERT_PATH.replace("0123456789abcdef", x) for x in "aba"
            ]


async def test_at_most_eight_certificate_urls_fetched_at_once(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(trustme.CA().cert_pem.bytes())
    v = verifier({"scheme": "sns", "topic_arns": [TOPIC], "ca_file": str(ca_file)}, {})
    release = asyncio.Event()
    started: list[str] = []

    async def slow_fetch(url: str, now: float) -> None:
        started.append(url)
        await release.wait()
        return None

    v._fetch = slow_fetch  # type: ignore[attr-defined]
    key = SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), b"")
    now = time.time()
    reqs = []
    for i in range(10):
        msg = message(key, f"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-{i}.pem")
        reqs.append(signed(headers_of(msg), body_of(msg), now))
    tasks = [asyncio.create_task(v.prepare(r)) for r in reqs]  # type: ignore[attr-defined]
    for _ in range(10):  # a few loop turns: each prepare starts its fetch task, which starts
        await asyncio.sleep(0)
    assert len(started) == 8
    release.set()
    await asyncio.gather(*tasks)
    assert [v.verify(r).reason for r in reqs] == ["cert_unavailable"] * 10
