"""`run --listen/--admin-listen` and WEBHOOK_GATEWAY_LISTEN / _ADMIN_LISTEN, in real processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support.env import ROOT_DIR
from tests.support.inprocess import post
from tests.support.process import GatewayProcess, free_port
from tests.support.upstream import recording_upstream

SECRET = "override-test-secret"


def _config(tmp_path: Path, upstream: str, **extra: object) -> Path:
    # The file names ports nobody listens on: the process must bind where it is told instead.
    raw = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin_listen": f"127.0.0.1:{free_port()}",
        "mode": "enforce",
        "routes": [
            {
                "name": "bot",
                "path": "/hook/bot",
                "upstream": upstream,
                "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
            }
        ],
        **extra,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def _forwarded(gw: GatewayProcess) -> None:
    status, body, _ = await post(
        gw.base + "/hook/bot", b'{"update_id":7}', {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert (status, body) == (200, b'{"ok":true}')


@pytest.mark.parametrize("how", ["flags", "env"])
async def test_binds_where_told_not_where_the_file_says(tmp_path: Path, how: str) -> None:
    async with recording_upstream() as up:
        path = _config(tmp_path, up.url)
        file = yaml.safe_load(path.read_text())
        port, admin = free_port(), free_port()
        env = {"TG_SECRET": SECRET}
        args: list[str] = []
        if how == "flags":
            args = ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
        else:
            env |= {
                "WEBHOOK_GATEWAY_LISTEN": f"127.0.0.1:{port}",
                "WEBHOOK_GATEWAY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
            }
        gw = GatewayProcess(path, env=env, args=args)
        await gw.start(port, admin)
        try:
            await _forwarded(gw)
            assert len(up.received) == 1
            for address in (file["listen"], file["admin_listen"]):
                assert await _refused(int(address.rsplit(":", 1)[1]))
            assert f'"public": "127.0.0.1:{port}"' in gw.stderr
        finally:
            assert await gw.stop() == 0


async def test_flag_wins_over_environment(tmp_path: Path) -> None:
    async with recording_upstream() as up:
        path = _config(tmp_path, up.url)
        port, admin, env_port = free_port(), free_port(), free_port()
        gw = GatewayProcess(
            path,
            env={"TG_SECRET": SECRET, "WEBHOOK_GATEWAY_LISTEN": f"127.0.0.1:{env_port}"},
            args=["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        )
        await gw.start(port, admin)
        try:
            await _forwarded(gw)
            assert await _refused(env_port)
        finally:
            assert await gw.stop() == 0


def _run(args: list[str], env: dict[str, str], config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(config), *args],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TG_SECRET": SECRET, **env},
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--listen", "8080"], {}, "argument --listen: '8080' is not HOST:PORT"),
        (
            ["--admin-listen", "127.0.0.1:99999"],
            {},
            "argument --admin-listen: '127.0.0.1:99999' is not HOST:PORT",
        ),
        ([], {"WEBHOOK_GATEWAY_LISTEN": "localhost"}, "WEBHOOK_GATEWAY_LISTEN: 'localhost' is not HOST:PORT"),
        (
            [],
            {"WEBHOOK_GATEWAY_ADMIN_LISTEN": ":9090"},
            "WEBHOOK_GATEWAY_ADMIN_LISTEN: ':9090' is not HOST:PORT",
        ),
        (
            ["--listen", "127.0.0.1:18088", "--admin-listen", "127.0.0.1:18088"],
            {},
            "admin_listen: 127.0.0.1:18088 must differ from listen",
        ),
    ],
)
def test_bad_value_is_a_clear_error_with_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = _run(args, env, _config(tmp_path, "http://127.0.0.1:9/"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "listening" not in result.stderr


async def test_reload_keeps_the_override(tmp_path: Path) -> None:
    async with recording_upstream() as up:
        path = _config(tmp_path, up.url)
        port, admin = free_port(), free_port()
        gw = GatewayProcess(
            path,
            env={"TG_SECRET": SECRET},
            args=["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        )
        await gw.start(port, admin)
        try:
            raw = yaml.safe_load(path.read_text())
            raw["mode"] = "report-only"
            path.write_text(yaml.safe_dump(raw))
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(20):
                while await gw.metric("webhook_gateway_route_enforced", route="bot") != 0:
                    await asyncio.sleep(0.05)
            # Applied, not refused as a change of `listen`, and still on the overriding ports.
            assert await gw.metric("webhook_gateway_config_reloads_total", result="error") == 0
            assert await gw.metric("webhook_gateway_config_last_reload_successful") == 1
            await _forwarded(gw)
            assert len(up.received) == 1
        finally:
            assert await gw.stop() == 0
        assert "config reload refused" not in gw.stderr


async def test_workers_bind_the_override(tmp_path: Path) -> None:
    async with recording_upstream() as up:
        path = _config(tmp_path, up.url, workers=2)
        port, admin = free_port(), free_port()
        gw = GatewayProcess(
            path,
            env={"TG_SECRET": SECRET},
            args=["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        )
        await gw.start(port, admin)
        try:
            for _ in range(4):
                await _forwarded(gw)
            assert len(up.received) == 4
            async with aiohttp.ClientSession() as s, s.get(gw.admin + "/readyz") as r:
                assert (r.status, (await r.json())["workers_ready"]) == (200, 2)
            # No worker bound the file's address (the supervisor's --listen reached each of them).
            file = yaml.safe_load(path.read_text())
            for address in (file["listen"], file["admin_listen"]):
                assert await _refused(int(address.rsplit(":", 1)[1]))
        finally:
            assert await gw.stop() == 0
