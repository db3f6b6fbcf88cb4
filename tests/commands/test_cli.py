"""The two commands a newcomer runs: `demo`, and `run` on the shipped default config."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support.env import ROOT_DIR
from tests.support.inprocess import post
from tests.support.process import GatewayProcess, free_port


def test_demo_shows_valid_forged_and_foreign_updates() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo"],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "valid update from Telegram" in out and "-> 200" in out
    assert '-> 401 {"error": "signature_mismatch"}' in out
    assert '-> 403 {"error": "source_not_allowed"}' in out
    assert 'webhook_gateway_requests_total{outcome="rejected",route="demo-bot"} 2.0' in out
    assert "demo passed" in out


async def test_default_config_runs_with_no_external_service(tmp_path: Path) -> None:
    # The shipped file, with only its ports moved so the test can run beside anything else.
    port, admin, bot = free_port(), free_port(), free_port()
    text = (ROOT_DIR / "config/gateway.yaml").read_text()
    text = text.replace("0.0.0.0:8080", f"127.0.0.1:{port}").replace("127.0.0.1:9090", f"127.0.0.1:{admin}")
    text = text.replace("127.0.0.1:3000", f"127.0.0.1:{bot}")
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    gw = GatewayProcess(path, env={"TG_SECRET": "local-dev-secret"})
    await gw.start(port, admin)
    try:
        hook = gw.base + "/tg/my-bot/change-this-path-segment"
        # No bot yet: report-only forwards, and the refused upstream is a clean 502.
        status, body, _ = await post(hook, b'{"update_id":1}', {"X-Telegram-Bot-Api-Secret-Token": "x"})
        assert (status, body) == (502, b'{"error": "upstream_unavailable"}')
        async with aiohttp.ClientSession() as s, s.get(gw.admin + "/healthz") as r:
            assert r.status == 200
        assert await gw.metric("webhook_gateway_route_enforced", route="my-bot") == 0
        assert (
            await gw.metric(
                "webhook_gateway_check_failures_total",
                route="my-bot",
                check="signature",
                reason="mismatch",
                mode="report-only",
            )
            == 1
        )
    finally:
        assert await gw.stop() == 0


async def test_demo_serve_answers_the_printed_curl_and_rejects_a_forged_one() -> None:
    port, admin = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-listen",
        f"127.0.0.1:{admin}",
        cwd=ROOT_DIR,
        env={"PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        printed = ""
        async with asyncio.timeout(30):
            while "Ctrl-C stops it." not in printed:
                printed += (await proc.stdout.readline()).decode()
        url = re.search(r"curl -s (\S+)", printed).group(1)  # type: ignore[union-attr]
        assert url.startswith(f"http://127.0.0.1:{port}/")
        headers = dict(re.findall(r"-H '([^:]+): ([^']+)'", printed))
        body = re.search(r"-d '([^']+)'", printed).group(1).encode()  # type: ignore[union-attr]
        status, answer, _ = await post(url, body, headers)
        assert status == 200
        assert json.loads(answer) == {"method": "sendMessage", "chat_id": 42, "text": "hello"}
        assert answer.decode() in printed  # what it says comes back is what comes back
        forged = {**headers, "X-Telegram-Bot-Api-Secret-Token": "guessed"}
        status, answer, _ = await post(url, body, forged)
        assert (status, answer) == (401, b'{"error": "signature_mismatch"}')
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{admin}/metrics") as r:
            assert (
                'webhook_gateway_requests_total{outcome="forwarded",route="demo-bot"} 1.0' in await r.text()
            )
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


def test_demo_serve_refuses_a_bad_listen() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--serve", "--listen", "nowhere"],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "argument --listen: 'nowhere' is not HOST:PORT" in result.stderr
