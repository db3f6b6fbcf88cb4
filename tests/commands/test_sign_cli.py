"""`webhook-gateway sign` as a user runs it: a subprocess prints headers, curl sends them.

The gateway under test is real (loopback) and enforcing, so a 200 means the printed headers are
exactly what the route verifies.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.env import ROOT_DIR as ROOT
from tests.support.inprocess import base_config, route, running_gateway
from tests.support.upstream import recording_upstream

ENV = {
    "TG_SECRET": "tg-secret_TOKEN-0123456789",
    "HMAC_SECRET": "hmac secret: bytes and spaces!",
    "APP_SECRET": "meta-app-secret",
    "GH_SECRET": "It's a Secret to Everybody",
    "SLACK_SECRET": "slack-signing-secret",
    "STRIPE_SECRET": "whsec_stripe_cli",
    "SW_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "SHOP_SECRET": "shop-secret",
    "GL_TOKEN": "gitlab token",
    "TWILIO_TOKEN": "twilio-token",
    "PRESET_SECRET": "preset secret 0123",
    "TEAMS_TOKEN": "dGVhbXMtc2VjdXJpdHktdG9rZW4tYnl0ZXMtMzJiISE=",
    "BASIC": "bot:pa:ss",
}
VERIFY: dict[str, dict[str, Any]] = {
    "telegram": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
    "hmac": {"scheme": "hmac", "header": "X-Sig", "encoding": "base64", "secrets": ["env:HMAC_SECRET"]},
    "meta": {"scheme": "meta", "secrets": ["env:APP_SECRET"]},
    "github": {"scheme": "github", "secrets": ["env:GH_SECRET"]},
    "slack": {"scheme": "slack", "secrets": ["env:SLACK_SECRET"]},
    "stripe": {"scheme": "stripe", "secrets": ["env:STRIPE_SECRET"]},
    "standard-webhooks": {"scheme": "standard-webhooks", "secrets": ["env:SW_SECRET"]},
    "shopify": {"scheme": "shopify", "secrets": ["env:SHOP_SECRET"]},
    "gitlab": {"scheme": "gitlab", "secrets": ["env:GL_TOKEN"]},
    "twilio": {
        "scheme": "twilio",
        "secrets": ["env:TWILIO_TOKEN"],
        "public_url": "https://bots.example.com/p",
    },
    "basic-auth": {"scheme": "basic-auth", "secrets": ["env:BASIC"]},
    "api-key-header": {"scheme": "api-key", "header": "X-Api-Key", "secrets": ["env:PRESET_SECRET"]},
    "api-key-query": {"scheme": "api-key", "query": "key", "secrets": ["env:PRESET_SECRET"]},
    "hmac-template": {
        "scheme": "hmac-template",
        "template": "{header:X-Id}.{header:X-Ts}.{query}.{body}",
        "signature_header": "X-Sig",
        "encoding": "base64url",
        "timestamp_header": "X-Ts",
        "timestamp_format": "unix-ms",
        "secrets": ["env:PRESET_SECRET"],
    },
    **{
        preset: {
            "scheme": preset,
            "secrets": ["env:TEAMS_TOKEN" if preset == "teams" else "env:PRESET_SECRET"],
        }
        for preset in ("zoom", "twitch", "x", "box", "dropbox", "xero", "teams", "worldline")
    },
}
UNSIGNED_BODY = ("telegram", "gitlab", "basic-auth", "api-key-header", "api-key-query")  # tokens sign no body
BODY = '{"update_id": 1, "text": "caf\\u00e9 ☕"}\n'.encode()
FORM = b"Body=caf%C3%A9&From=%2B15005550006&FromCity="


async def run(
    *argv: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def send(url: str, header_file: Path, body_file: Path) -> int:
    """POST with curl when it is installed (as the README shows), else with aiohttp."""
    if shutil.which("curl"):
        code, out, err = await run(
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            url,
            "-H",
            f"@{header_file}",
            "--data-binary",
            f"@{body_file}",
        )
        assert code == 0, err
        return int(out)
    headers = [tuple(line.split(": ", 1)) for line in header_file.read_text().splitlines()]
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.post(url, data=body_file.read_bytes(), headers=headers) as r,
    ):
        return r.status


@pytest.mark.parametrize(
    ("scheme", "content_type"),
    [(s, "application/json") for s in VERIFY] + [("twilio", "application/x-www-form-urlencoded")],
)
async def test_sign_then_curl_gets_200(tmp_path: Path, scheme: str, content_type: str) -> None:
    body = FORM if content_type.endswith("urlencoded") else BODY
    body_file = tmp_path / "body"
    body_file.write_bytes(body)
    async with recording_upstream() as up:
        cfg = base_config([route("bot", upstream=up.url, verify=VERIFY[scheme])])
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(cfg))
        async with running_gateway(cfg, ENV) as gw:
            code, out, err = await run(
                sys.executable,
                "-m",
                "gateway",
                "sign",
                "--config",
                str(config_file),
                "--route",
                "bot",
                "--body",
                str(body_file),
                "--content-type",
                content_type,
                env=ENV,
            )
            assert code == 0, err
            lines = out.splitlines()
            assert lines[0] == f"Content-Type: {content_type}"
            assert all(re.fullmatch(r"[A-Za-z0-9-]+: \S.*", line) for line in lines), lines
            path = re.search(r"^sign: POST (\S+) ", err, re.M)
            assert path is not None, err
            header_file = tmp_path / "headers"
            header_file.write_text(out)

            assert await send(gw.base + path.group(1), header_file, body_file) == 200
            (got,) = up.received
            assert got.body == body
            assert got.header("X-Webhook-Verdict") == "pass"

            # The same headers with one byte of the body changed are refused.
            body_file.write_bytes(body[:-2] + bytes([body[-2] ^ 1]) + body[-1:])
            expected = 200 if scheme in UNSIGNED_BODY else 401
            assert await send(gw.base + path.group(1), header_file, body_file) == expected


async def test_sign_reads_stdin_and_fixes_timestamp_and_id(tmp_path: Path) -> None:
    cfg = base_config([route("bot", upstream="http://127.0.0.1:9/", verify=VERIFY["standard-webhooks"])])
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "sign",
        "--config",
        str(config_file),
        "--route",
        "bot",
        "--body",
        "-",
    ]
    code, out, _ = await run(
        *argv,
        "--timestamp",
        "1614265330",
        "--id",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        env=ENV,
        stdin=b'{"test": 2432232314}',
    )
    assert code == 0
    # The Standard Webhooks specification's example, reproduced from the command line.
    assert out.splitlines()[1:] == [
        "webhook-id: msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp: 1614265330",
        "webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--route", "nope", "--body", "-"], "no route named 'nope' (routes: bot, plain)"),
        (["--route", "plain", "--body", "-"], "route 'plain' has no verify"),
        (["--route", "bot", "--body", "/nonexistent/body"], "/nonexistent/body: cannot read body"),
    ],
)
async def test_sign_errors(tmp_path: Path, args: list[str], message: str) -> None:
    cfg = base_config(
        [
            route("bot", upstream="http://127.0.0.1:9/", verify=VERIFY["github"]),
            route("plain", upstream="http://127.0.0.1:9/"),
        ]
    )
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    code, out, err = await run(
        sys.executable, "-m", "gateway", "sign", "--config", str(config_file), *args, env=ENV, stdin=b""
    )
    assert (code, out) == (1, "")
    assert message in err
    assert ENV["GH_SECRET"] not in err


async def test_sign_reports_config_problems_without_secrets(tmp_path: Path) -> None:
    cfg = base_config([route("bot", upstream="http://127.0.0.1:9/", verify=VERIFY["stripe"])])
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "sign",
        "--config",
        str(config_file),
        "--route",
        "bot",
        "--body",
        "-",
    ]
    code, out, err = await run(*argv, env={**ENV, "STRIPE_SECRET": "sk_live_oops"}, stdin=b"{}")
    assert (code, out) == (1, "")
    assert "starts with whsec_" in err and "sk_live_oops" not in err


async def test_sign_msgraph_checks_the_body_carries_the_client_state(tmp_path: Path) -> None:
    # Graph adds no header: `sign` prints only the Content-Type, and refuses a body whose items
    # do not all carry the route's clientState (curl would get a 401 with it).
    env = {**ENV, "GRAPH_STATE": "graph-client-state"}
    verify = {"scheme": "msgraph", "secrets": ["env:GRAPH_STATE"]}
    good = b'{"value": [{"changeType": "created", "clientState": "graph-client-state"}]}'
    body_file = tmp_path / "body"
    async with recording_upstream() as up:
        cfg = base_config([route("bot", upstream=up.url, verify=verify)])
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(cfg))
        argv = [sys.executable, "-m", "gateway", "sign", "--config", str(config_file), "--route", "bot"]
        async with running_gateway(cfg, env) as gw:
            body_file.write_bytes(good)
            code, out, err = await run(*argv, "--body", str(body_file), env=env)
            assert (code, out) == (0, "Content-Type: application/json\n"), err
            header_file = tmp_path / "headers"
            header_file.write_text(out)
            assert await send(gw.base + "/hook/bot", header_file, body_file) == 200
            assert [g.body for g in up.received] == [good]

            body_file.write_bytes(good.replace(b"graph-client-state", b"someone-else"))
            code, out, err = await run(*argv, "--body", str(body_file), env=env)
            assert (code, out) == (1, "")
            assert "every item of the body needs the route's first clientState" in err
            assert "graph-client-state" not in err


def _keypair(scheme: str) -> tuple[bytes, str]:
    """(the private key file's content, the public key as the route holds it) in each provider's form."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    pkcs8 = (ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    if scheme == "sendgrid":
        ek = ec.generate_private_key(ec.SECP256R1())
        spki = ek.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        return ek.private_bytes(*pkcs8), base64.b64encode(spki).decode()
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    raw = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    if scheme == "discord":
        return seed.hex().encode(), raw.hex()
    if scheme == "telnyx":
        return key.private_bytes(*pkcs8), base64.b64encode(raw).decode()
    return b"whsk_" + base64.b64encode(seed), "whpk_" + base64.b64encode(raw).decode()


@pytest.mark.parametrize("scheme", ["discord", "telnyx", "sendgrid", "standard-webhooks"])
async def test_sign_with_a_private_key_then_curl_gets_200(tmp_path: Path, scheme: str) -> None:
    private, public = _keypair(scheme)
    key_file = tmp_path / "key"
    key_file.write_bytes(private)
    body_file = tmp_path / "body"
    body_file.write_bytes(BODY)
    verify = {"scheme": scheme, "public_keys": [public]}
    async with recording_upstream() as up:
        cfg = base_config([route("bot", upstream=up.url, verify=verify)])
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(cfg))
        argv = [sys.executable, "-m", "gateway", "sign", "--config", str(config_file), "--route", "bot"]
        code, out, err = await run(*argv, "--body", str(body_file), env=ENV)
        assert code == 1 and "--private-key" in err  # nothing to sign with
        async with running_gateway(cfg, ENV) as gw:
            code, out, err = await run(
                *argv, "--body", str(body_file), "--private-key", str(key_file), env=ENV
            )
            assert code == 0, err
            header_file = tmp_path / "headers"
            header_file.write_text(out)
            assert await send(gw.base + "/hook/bot", header_file, body_file) == 200
            (got,) = up.received
            assert got.body == BODY and got.header("X-Webhook-Verdict") == "pass"
            body_file.write_bytes(BODY[:-2] + bytes([BODY[-2] ^ 1]) + BODY[-1:])
            assert await send(gw.base + "/hook/bot", header_file, body_file) == 401
            assert str(private) not in err + out
