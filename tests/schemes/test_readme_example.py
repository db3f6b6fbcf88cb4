"""The docs' `sign` + curl example (docs/schemes.md), run as written, and the shipped multi-sender example."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.schemes import SCHEMES
from tests.support.env import ROOT_DIR
from tests.support.inprocess import running_gateway
from tests.support.upstream import recording_upstream


def _readme_block() -> str:
    section = (ROOT_DIR / "docs" / "schemes.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    (block,) = [b for b in blocks if "webhook-gateway sign" in b]
    return block


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("curl") is None, reason="the docs example uses curl")
async def test_readme_sign_and_curl_example(tmp_path: Path) -> None:
    block = _readme_block()
    # The gateway is the test's own (in-process, below); every other line runs as written.
    lines = [line for line in block.splitlines() if not line.startswith("webhook-gateway run ")]
    assert len(lines) == len(block.splitlines()) - 1
    port, admin = _free_port(), _free_port()
    async with recording_upstream() as up:
        script = (
            "\n".join(lines)
            .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            .replace("127.0.0.1:9090", f"127.0.0.1:{admin}")
            .replace("http://127.0.0.1:3000/webhook", up.url)
            .replace("webhook-gateway ", f"{sys.executable} -m gateway ")
        )
        # Write the YAML (first statement of the block) to start the gateway from the same file.
        heredoc = script.split("\nexport ", 1)[0]
        setup = await asyncio.create_subprocess_exec("bash", "-euc", heredoc, cwd=tmp_path)
        assert await setup.wait() == 0
        config = yaml.safe_load((tmp_path / "stripe.yaml").read_text())
        secret = re.search(r"export STRIPE_WEBHOOK_SECRET=(\S+)", script)
        assert secret is not None
        async with running_gateway(config, {"STRIPE_WEBHOOK_SECRET": secret.group(1)}) as gw:
            assert gw.base.endswith(f":{port}")
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "-euo",
                "pipefail",
                "-c",
                script,
                cwd=tmp_path,
                env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            lines_out = out.decode().splitlines()
            assert lines_out[0] == "Content-Type: application/json"
            assert re.fullmatch(r"Stripe-Signature: t=\d+,v1=[0-9a-f]{64}", lines_out[1])
            assert lines_out[2:] == ["200", "401"]
            (got,) = up.received
            assert got.body == b'{"id":"evt_1","object":"event","type":"ping"}'


def test_senders_example_config_covers_every_sender(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT_DIR / "config/examples/senders.yaml").read_text())
    names = re.findall(r"env:([A-Z_]+)", (ROOT_DIR / "config/examples/senders.yaml").read_text())
    env = dict.fromkeys(names, "value")
    env["STRIPE_WEBHOOK_SECRET"] = "whsec_x"
    env["STANDARD_WEBHOOK_SECRET"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    env["BASIC_AUTH_CREDENTIALS"] = "user:password"
    env["TEAMS_SECURITY_TOKEN"] = "dGVhbXMtdG9rZW4="
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", "config/examples/senders.yaml"],
        cwd=ROOT_DIR,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT_DIR)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    schemes = {r["verify"]["scheme"] for r in raw["routes"]}
    assert schemes == set(SCHEMES) - {"telegram", "hmac"}
