"""Live operations: hot reload, kill-switch flips under load, canary, on_missing, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway import config as cfg
from gateway.metrics import Metrics
from gateway.proxy.snapshot import SnapshotHolder, compile_snapshot
from gateway.serve.reload import Reloader
from tests.support.env import ENV, TG_SECRET
from tests.support.inprocess import base_config, post, route, running_gateway, tg_verify
from tests.support.process import GatewayProcess, free_port
from tests.support.upstream import recording_upstream

TG = "X-Telegram-Bot-Api-Secret-Token"


def write_config(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data))


def _reloader(path: Path, data: dict[str, Any]) -> tuple[Reloader, SnapshotHolder, Metrics]:
    write_config(path, data)
    metrics = Metrics()
    holder = SnapshotHolder(compile_snapshot(cfg.load(str(path), ENV), metrics))
    return Reloader(str(path), holder, metrics), holder, metrics


def _cfg(mode: str, **route_kw: Any) -> dict[str, Any]:
    return base_config([route(upstream="http://127.0.0.1:9/", verify=tg_verify(), mode=mode, **route_kw)])


@pytest.fixture(autouse=True)
def _secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def _mode(holder: SnapshotHolder) -> str:
    return next(iter(holder.current.routes.values())).config.mode


async def test_valid_change_applies_and_bad_ones_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    reloader, holder, metrics = _reloader(path, _cfg("report-only"))
    first = holder.current
    assert reloader.reload() is False  # unchanged file: nothing happens
    assert holder.current is first

    write_config(path, _cfg("enforce"))
    assert reloader.reload() is True
    assert _mode(holder) == "enforce"
    assert metrics.config_reloads.labels("success")._value.get() == 1

    broken: list[str | dict[str, Any]] = [
        "routes: [unclosed\n",
        {**_cfg("report-only"), "surprise": 1},
        base_config(
            [route(upstream="http://127.0.0.1:9/", verify=tg_verify("env:NOT_SET"), mode="report-only")]
        ),
        base_config(
            [route(upstream="http://127.0.0.1:9/", verify=tg_verify(), allow_sources=["10.0.0.0/40"])]
        ),
        {**_cfg("report-only"), "listen": "127.0.0.1:1"},
    ]
    serving = holder.current
    for n, bad in enumerate(broken, start=1):
        if isinstance(bad, str):
            path.write_text(bad)
        else:
            write_config(path, bad)
        assert reloader.reload() is False
        assert holder.current is serving, bad
        assert metrics.config_reloads.labels("error")._value.get() == n
        assert metrics.last_reload_ok._value.get() == 0
    write_config(path, _cfg("report-only"))
    assert reloader.reload() is True
    assert metrics.last_reload_ok._value.get() == 1


async def test_reload_errors_are_logged_with_locations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.yaml"
    reloader, _, _ = _reloader(path, _cfg("report-only"))
    bad = _cfg("report-only")
    bad["routes"][0]["verify"]["secrets"] = ["env:TG_SECRET", "env:ROTATED_AWAY"]
    bad["trusted_proxies"] = ["300.0.0.0/8"]
    write_config(path, bad)
    with caplog.at_level("ERROR", logger="webhook_gateway.reload"):
        assert reloader.reload() is False
    problems = [r.problem for r in caplog.records]  # type: ignore[attr-defined]
    assert any(p.startswith("trusted_proxies[0]:") for p in problems)
    assert "routes[0].verify.secrets[1]: environment variable ROTATED_AWAY is not set" in problems
    assert TG_SECRET not in caplog.text


async def test_watcher_sees_rewrite_rename_and_configmap_symlink_swap(tmp_path: Path) -> None:
    # Kubernetes layout: gateway.yaml -> ..data/gateway.yaml, ..data -> ..2026_a (swapped atomically).
    mount = tmp_path / "mount"
    mount.mkdir()
    for gen, mode in (("..v1", "report-only"), ("..v2", "enforce"), ("..v3", "report-only")):
        (mount / gen).mkdir()
        write_config(mount / gen / "gateway.yaml", _cfg(mode))
    os.symlink("..v1", mount / "..data")
    os.symlink("..data/gateway.yaml", mount / "gateway.yaml")
    path = mount / "gateway.yaml"
    metrics = Metrics()
    holder = SnapshotHolder(compile_snapshot(cfg.load(str(path), ENV), metrics))
    reloader = Reloader(str(path), holder, metrics)

    async def settle() -> None:
        assert await reloader.poll_once() is True

    os.symlink("..v2", mount / "..tmp")
    os.replace(mount / "..tmp", mount / "..data")  # what the kubelet does
    await settle()
    assert _mode(holder) == "enforce"

    os.symlink("..v3", mount / "..tmp")
    os.replace(mount / "..tmp", mount / "..data")
    await settle()
    assert _mode(holder) == "report-only"

    # An editor's rename-over of a plain file.
    plain = tmp_path / "plain.yaml"
    write_config(plain, _cfg("report-only"))
    reloader2 = Reloader(str(plain), holder, metrics)
    write_config(tmp_path / "new.yaml", _cfg("enforce"))
    os.replace(tmp_path / "new.yaml", plain)
    assert await reloader2.poll_once() is True
    assert _mode(holder) == "enforce"
    assert await reloader2.poll_once() is False  # nothing changed since


async def test_canary_enforces_a_stable_share() -> None:
    async with recording_upstream() as up:
        c = base_config([route(upstream=up.url, verify=tg_verify(), enforce_percent=30)])
        async with running_gateway(c) as gw:
            assert await gw.metric("webhook_gateway_route_enforced", route="bot") == pytest.approx(0.3)
            decisions: dict[int, int] = {}
            for i in range(200):
                body = json.dumps({"update_id": i}).encode()
                status, _, _ = await post(gw.base + "/hook/bot", body, {TG: "forged"})
                decisions[i] = status
            enforced = sum(1 for s in decisions.values() if s == 401)
            assert set(decisions.values()) == {200, 401}
            assert 30 <= enforced <= 90  # ~30% of 200, by a hash: loose bounds, never flaky
            # A retry of the same update gets the same decision.
            for i in range(0, 200, 7):
                status, _, _ = await post(
                    gw.base + "/hook/bot", json.dumps({"update_id": i}).encode(), {TG: "x"}
                )
                assert status == decisions[i]
            assert all(r.header("X-Webhook-Verdict") != "pass" for r in up.received)


async def test_on_missing_allow_counts_but_forwards() -> None:
    async with recording_upstream() as up:
        verify = {**tg_verify(), "on_missing": "allow"}
        async with running_gateway(base_config([route(upstream=up.url, verify=verify)])) as gw:
            status, _, _ = await post(gw.base + "/hook/bot", b"{}", {})
            assert status == 200
            assert up.received[0].header("X-Webhook-Verdict") == "allowed; check=signature; reason=missing"
            status, _, _ = await post(gw.base + "/hook/bot", b"{}", {TG: "wrong"})
            assert status == 401  # a wrong secret is still rejected
            n = await gw.metric(
                "webhook_gateway_check_failures_total",
                route="bot",
                check="signature",
                reason="missing",
                mode="enforce",
            )
            assert n == 1
            assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="forwarded") == 1


async def test_flips_under_load_in_a_real_process(tmp_path: Path) -> None:
    """20+ flips by rewrite and by symlink swap, a broken file between: no request fails except
    the intended rejections, and each flip is in effect within 2 s."""
    async with recording_upstream() as up:
        port, admin = free_port(), free_port()
        mount = tmp_path / "mount"
        mount.mkdir()

        def doc(mode: str) -> dict[str, Any]:
            d = base_config([route(upstream=up.url, verify=tg_verify(), mode=mode)])
            d.update(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{admin}")
            return d

        (mount / "..v0").mkdir()
        write_config(mount / "..v0" / "gateway.yaml", doc("report-only"))
        os.symlink("..v0", mount / "..data")
        os.symlink("..data/gateway.yaml", mount / "gateway.yaml")
        gw = GatewayProcess(mount / "gateway.yaml")
        await gw.start(port, admin)
        stop = asyncio.Event()
        failures: list[str] = []
        valid_ok = 0

        async def valid_load() -> None:
            nonlocal valid_ok
            async with aiohttp.ClientSession() as s:
                while not stop.is_set():
                    async with s.post(
                        gw.base + "/hook/bot", data=b'{"update_id":1}', headers={TG: TG_SECRET}
                    ) as r:
                        await r.read()
                        if r.status != 200:
                            failures.append(f"valid request got {r.status}")
                        valid_ok += 1

        async def forged_status(s: aiohttp.ClientSession) -> int:
            async with s.post(gw.base + "/hook/bot", data=b"{}", headers={TG: "forged"}) as r:
                await r.read()
                return r.status

        loaders = [asyncio.create_task(valid_load()) for _ in range(4)]
        try:
            async with aiohttp.ClientSession() as s:
                assert await forged_status(s) == 200
                mode = "report-only"
                for flip in range(22):
                    mode = "enforce" if mode == "report-only" else "report-only"
                    if flip % 2:
                        gen = mount / f"..v{flip + 1}"
                        gen.mkdir()
                        write_config(gen / "gateway.yaml", doc(mode))
                        os.symlink(gen.name, mount / "..tmp")
                        os.replace(mount / "..tmp", mount / "..data")
                    else:
                        target = mount / os.readlink(mount / "..data") / "gateway.yaml"
                        write_config(target, doc(mode))
                    started = time.monotonic()
                    want = 401 if mode == "enforce" else 200
                    while await forged_status(s) != want:
                        assert time.monotonic() - started < 2.0, f"flip {flip} to {mode} not applied in 2 s"
                        await asyncio.sleep(0.05)
                    if flip == 10:
                        # A broken edit in between changes nothing.
                        target = mount / os.readlink(mount / "..data") / "gateway.yaml"
                        before = await gw.metric("webhook_gateway_config_reloads_total", result="error")
                        target.write_text("routes: [broken\n")
                        deadline = time.monotonic() + 5
                        while (
                            await gw.metric("webhook_gateway_config_reloads_total", result="error") == before
                        ):
                            assert time.monotonic() < deadline
                            await asyncio.sleep(0.05)
                        assert await forged_status(s) == want
                        write_config(target, doc(mode))
        finally:
            stop.set()
            await asyncio.gather(*loaders)
            code = await gw.stop()
        assert failures == []
        assert valid_ok > 0
        assert code == 0
        assert '"problem": "' in gw.stderr and "invalid YAML" in gw.stderr


async def test_sigterm_under_load_answers_every_accepted_request(tmp_path: Path) -> None:
    async with recording_upstream(delay=0.5) as up:
        port, admin = free_port(), free_port()
        d = base_config([route(upstream=up.url, verify=tg_verify())])
        d.update(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{admin}", shutdown_timeout="10s")
        write_config(tmp_path / "g.yaml", d)
        gw = GatewayProcess(tmp_path / "g.yaml")
        await gw.start(port, admin)
        async with aiohttp.ClientSession() as s:

            async def one(i: int) -> int:
                body = json.dumps({"update_id": i}).encode()
                async with s.post(gw.base + "/hook/bot", data=body, headers={TG: TG_SECRET}) as r:
                    await r.read()
                    return r.status

            inflight = [asyncio.create_task(one(i)) for i in range(20)]
            while len(up.received) < 20:  # all 20 accepted and being handled upstream
                await asyncio.sleep(0.01)
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            # /readyz fails while the in-flight requests (held 0.5 s upstream) still drain.
            ready_status = 200
            deadline = time.monotonic() + 5
            while ready_status == 200 and time.monotonic() < deadline:
                try:
                    async with s.get(gw.admin + "/readyz") as r:
                        ready_status = r.status
                except aiohttp.ClientError:
                    ready_status = 0
                await asyncio.sleep(0.005)
            drained_before_not_ready = all(t.done() for t in inflight)
            statuses = await asyncio.gather(*inflight)
            # New connections are refused once the listener is closed.
            with pytest.raises(aiohttp.ClientConnectionError):
                async with (
                    aiohttp.ClientSession() as fresh,
                    fresh.post(gw.base + "/hook/bot", data=b"{}") as r,
                ):
                    await r.read()
        code = await gw.stop(sig=None)
        assert statuses == [200] * 20
        assert ready_status == 503
        assert not drained_before_not_ready
        assert code == 0
        assert sorted(json.loads(r.body)["update_id"] for r in up.received) == list(range(20))


async def test_sighup_rereads_secret_files_and_stamps_the_reload(tmp_path: Path) -> None:
    secret = tmp_path / "tg-secret"
    secret.write_text("old-secret\n")
    async with recording_upstream() as up:
        port, admin = free_port(), free_port()
        d = base_config([route(upstream=up.url, verify=tg_verify(f"file:{secret}"))])
        d.update(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{admin}")
        write_config(tmp_path / "g.yaml", d)
        gw = GatewayProcess(tmp_path / "g.yaml")
        await gw.start(port, admin)
        try:
            first = await gw.metric("webhook_gateway_config_last_reload_success_timestamp_seconds")
            assert first > 0
            assert (await post(gw.base + "/hook/bot", b"{}", {TG: "old-secret"}))[0] == 200
            secret.write_text("new-secret\n")  # the config file itself is unchanged
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while (await post(gw.base + "/hook/bot", b"{}", {TG: "new-secret"}))[0] != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert (await post(gw.base + "/hook/bot", b"{}", {TG: "old-secret"}))[0] == 401
            assert await gw.metric("webhook_gateway_config_reloads_total", result="success") == 2
            assert await gw.metric("webhook_gateway_config_last_reload_success_timestamp_seconds") >= first
        finally:
            assert await gw.stop() == 0
        assert "new-secret" not in gw.stderr and "old-secret" not in gw.stderr


async def test_sighup_never_loads_a_file_caught_mid_write(tmp_path: Path) -> None:
    """SIGHUP lands between the truncation of the file and the write of its last line (the one
    that turns replay protection on): the half-written version, valid on its own, must never
    serve, so a duplicate sent all along is forwarded once, and only one reload happens."""
    async with recording_upstream() as up:
        port, admin = free_port(), free_port()
        full = (
            f"listen: 127.0.0.1:{port}\n"
            f"admin_listen: 127.0.0.1:{admin}\n"
            "mode: enforce\n"
            "routes:\n"
            "  - name: bot\n"
            "    path: /hook/bot\n"
            f"    upstream: {up.url}\n"
            "    verify: {scheme: telegram, secrets: ['env:TG_SECRET']}\n"
            "    replay: {key: update_id}\n"
        )
        head = full[: full.rindex("    replay:")]
        conf = tmp_path / "g.yaml"
        conf.write_text(full)
        gw = GatewayProcess(conf)
        await gw.start(port, admin)
        stop = asyncio.Event()
        statuses: list[int] = []

        async def duplicates() -> None:
            async with aiohttp.ClientSession() as s:
                while not stop.is_set():
                    body = b'{"update_id":7}'
                    async with s.post(gw.base + "/hook/bot", data=body, headers={TG: TG_SECRET}) as r:
                        await r.read()
                        statuses.append(r.status)
                    await asyncio.sleep(0.005)

        try:
            before = await gw.metric("webhook_gateway_config_reloads_total", result="success")
            sender = asyncio.create_task(duplicates())
            assert gw.proc is not None
            for _ in range(3):
                with open(conf, "w") as f:
                    f.write(head)  # truncated and half rewritten ...
                    f.flush()
                    gw.proc.send_signal(signal.SIGHUP)
                    await asyncio.sleep(0.08)  # ... the signal is handled while the writer works
                    f.write(full[len(head) :])
                await asyncio.sleep(1.5)  # settle + watcher poll
            stop.set()
            await sender
            after = await gw.metric("webhook_gateway_config_reloads_total", result="success")
            waits = await gw.metric("webhook_gateway_config_reload_settle_waits_total")
        finally:
            assert await gw.stop() == 0
        forwarded = [r for r in up.received if json.loads(r.body)["update_id"] == 7]
        assert len(forwarded) == 1
        assert len(statuses) > 50 and set(statuses) == {200}
        # One reload per signal, each of the whole file; none of the truncated one.
        assert after - before == 3
        assert waits >= 3
        assert "config reload refused" not in gw.stderr


async def test_a_sighup_during_start_up_is_applied_not_fatal(tmp_path: Path) -> None:
    """SIGHUP's default action ends a process. A deploy tool's SIGHUP that lands while the
    gateway is still loading its config (held here on a secret file that is a FIFO) is
    remembered and applied once the reloader is up; the gateway starts and serves."""
    fifo = tmp_path / "tg-secret"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # a writer exists: the gateway's open() does not block
    async with recording_upstream() as up:
        port, admin = free_port(), free_port()
        d = base_config([route(upstream=up.url, verify=tg_verify(f"file:{fifo}"))])
        d.update(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{admin}")
        write_config(tmp_path / "g.yaml", d)
        gw = GatewayProcess(tmp_path / "g.yaml")
        starting = asyncio.create_task(gw.start(port, admin))
        try:
            async with asyncio.timeout(30):  # until the gateway reads the secret (and waits)
                while gw.proc is None or not _holds(gw.proc.pid, fifo):
                    await asyncio.sleep(0.01)
            gw.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.2)
            os.write(writer, b"start-secret\n")
            later = tmp_path / "later"
            later.write_text("start-secret\n")
            os.replace(later, fifo)  # the reload the signal asked for reads a plain file
        finally:
            os.close(writer)  # end of file for the gateway's read
        await starting
        try:
            async with asyncio.timeout(10):  # the remembered SIGHUP, applied once it is up
                while await gw.metric("webhook_gateway_config_reloads_total", result="success") < 2:
                    await asyncio.sleep(0.05)
            assert (await post(gw.base + "/hook/bot", b"{}", {TG: "start-secret"}))[0] == 200
        finally:
            assert await gw.stop() == 0


def _holds(pid: int, path: Path) -> bool:
    """True when process `pid` has `path` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False
