"""Soak run: the gateway driven as Telegram drives it, under faults, then an account of every
update. `bench/soak` is the entry point (it brings the venv and redis-server).

Three set-ups, one after the other, each its own real processes on loopback:
  a  one gateway, memory store, passthrough route (telegram scheme)
  b  two gateways (two ports, connections spread over both) sharing a redis-server, replay on
  c  one gateway, `delivery: spool`, memory store

Load: N keep-alive connections, unique increasing update_ids at a target rate, the valid secret
token, ~50 chats; every non-2xx and every connection error is retried with the same bytes until
a 2xx. Faults, scaled to the duration: the config rewritten (temp file + rename) flipping the
route between report-only and enforce every 5 s, SIGHUP every 3 s, the bot killed twice, Redis
killed once (b), one gateway SIGKILLed and restarted.

At the end (after a bounded drain) a table per set-up; exit 1 if an acknowledged update never
reached the bot (or a set-up could not run).

    bench/soak                                  defaults: 40 connections, 400/s, 120 s per set-up
    bench/soak --duration 10 --rate 100 --setups a,c --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOT = Path(__file__).resolve().with_name("soakbot.py")
CHATS = 50
ROUTE = "soak"
SETUPS = {
    "a": "one gateway, memory store, passthrough",
    "b": "two gateways, shared Redis, replay on",
    "c": "one gateway, spool, memory store",
}
MAX_LATENCY_SAMPLES = 500_000  # bounded: a few MB even for a long run
FLIP_EVERY_S = 5.0
HUP_EVERY_S = 3.0


# --- accounting: pure, unit-tested --------------------------------------------------------------


def account(acked: Iterable[int], delivered: Counter[int]) -> dict[str, Any]:
    """What the bot recorded against what the gateway acknowledged."""
    acked_set = set(acked)
    lost = sorted(u for u in acked_set if delivered[u] == 0)
    return {
        "acknowledged": len(acked_set),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "delivered": sum(1 for u in delivered if delivered[u] > 0),
        "delivered_more_than_once": sum(1 for c in delivered.values() if c > 1),
        "deliveries": sum(delivered.values()),
    }


def read_delivered(path: Path) -> Counter[int]:
    counts: Counter[int] = Counter()
    if not path.exists():
        return counts
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            counts[int(line)] += 1
    return counts


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # A driver killed by a timeout must not leave gateways, bots or Redis behind.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class Bot:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.out = workdir / "delivered.txt"
        self.log = workdir / "bot.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        argv = [sys.executable, str(BOT), "--port", str(self.port), "--out", str(self.out)]
        self.proc = spawn(argv, self.log)
        await wait_port(self.port, self.proc)

    def kill(self) -> None:
        stop(self.proc)
        self.proc = None


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("no redis-server (apt-get install redis-server)")
        argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        self.proc = spawn(argv, self.workdir / "redis.log")
        await wait_port(self.port, self.proc)

    def kill(self) -> None:
        stop(self.proc)
        self.proc = None


@dataclass
class Gateway:
    """One gateway slot: its ports stay, its process may be SIGKILLed and started again."""

    index: int
    config: Path
    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    rss_start: float | None = None
    rss_end: float | None = None
    rss_peak: float = 0.0
    cpu_by_pid: dict[int, float] = field(default_factory=dict)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        argv = [
            sys.executable, "-m", "gateway", "run", "--config", str(self.config),
            "--listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{self.admin_port}",
        ]  # fmt: skip
        self.proc = spawn(argv, self.workdir / f"gateway{self.index}.log", self.env)
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway {self.index} exited with {self.proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(f"{self.admin}/readyz") as r:
                    if r.status == 200:
                        # SIGHUP only once the handler is installed: before, it would kill.
                        self.ready = True
                        return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"gateway {self.index} not ready after 60 s")

    def sigkill(self) -> None:
        self.ready = False
        stop(self.proc)

    def sample_rss(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        value = rss_mib(self.proc.pid)
        if value is not None:
            self.rss_peak = max(self.rss_peak, value)
        # The last reading per process: a SIGKILLed one keeps what it had used by then.
        cpu = cpu_seconds(self.proc.pid)
        if cpu is not None:
            self.cpu_by_pid[self.proc.pid] = cpu
        return value


# --- one set-up -----------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    rate: float
    connections: int
    drain: float
    spool_drain: float
    forget_delivered: int = 0


@dataclass
class Stats:
    acked: set[int] = field(default_factory=set)
    unacked: set[int] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    attempts: int = 0
    acked_in_window: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    backlog: list[tuple[float, float]] = field(default_factory=list)
    # (seconds since start, updates the bot had recorded so far), sampled with the backlog
    delivered_series: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)


def update_body(update_id: int, when: int) -> bytes:
    chat = 1000 + update_id % CHATS
    update = {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": when,
            "chat": {"id": chat, "type": "private", "first_name": f"user{chat}"},
            "from": {"id": chat, "is_bot": False, "first_name": f"user{chat}"},
            "text": f"soak update {update_id}",
        },
    }
    return json.dumps(update, separators=(",", ":")).encode()


def gateway_config(setup: str, mode: str, bot: Bot, workdir: Path, path: str) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": ROUTE,
        "path": path,
        "upstream": f"http://127.0.0.1:{bot.port}/webhook",
        "mode": mode,
        "verify": {"scheme": "telegram", "secrets": ["env:SOAK_TG_SECRET"]},
    }
    config: dict[str, Any] = {
        "listen": "127.0.0.1:8080",  # each process gets --listen / --admin-listen
        "admin_listen": "127.0.0.1:9090",
        "mode": "enforce",
        # A SIGKILLed gateway's replay reservations are leases of upstream_timeout + 10 s:
        # a short upstream_timeout keeps the retries it blocks (409) within the drain.
        "limits": {"upstream_timeout": "5s"},
        "routes": [route],
    }
    if setup == "b":
        config["store"] = {
            "backend": "redis",
            "redis_url": "env:SOAK_REDIS_URL",
            "on_store_error": "fail-closed",
        }
        route["replay"] = {"key": "update_id"}
    if setup == "c":
        config["spool"] = {"path": str(workdir / "spool" / "spool.db")}
        route["delivery"] = "spool"
    return config


def write_config(target: Path, config: dict[str, Any]) -> None:
    # As a deploy does: a whole new file renamed over the old one, never a partial write.
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, target)


async def scrape_spool_depth(session: aiohttp.ClientSession, gw: Gateway) -> float | None:
    try:
        async with session.get(f"{gw.admin}/metrics") as r:
            text = await r.text()
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
    total = None
    for line in text.splitlines():
        if line.startswith("webhook_gateway_spool_depth{"):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


class Run:
    def __init__(self, setup: str, opts: Options, workdir: Path) -> None:
        self.setup = setup
        self.opts = opts
        self.workdir = workdir
        self.stats = Stats()
        self.secret = secrets.token_urlsafe(24).replace("-", "_")
        self.path = f"/tg/soak/{secrets.token_hex(8)}"
        self.bot = Bot(workdir)
        self.redis = Redis(workdir) if setup == "b" else None
        self.config_path = workdir / "gateway.yaml"
        self.mode = "enforce"
        self.gateways: list[Gateway] = []
        self.t0 = 0.0
        self.stop_sampling = asyncio.Event()
        self._bot_offset = 0
        self._bot_count = 0
        self.load_avg: list[float] = []
        self.driver_cpu = 0.0

    def note(self, what: str) -> None:
        self.stats.events.append((round(time.monotonic() - self.t0, 2), what))

    def config(self) -> dict[str, Any]:
        return gateway_config(self.setup, self.mode, self.bot, self.workdir, self.path)

    async def execute(self) -> dict[str, Any]:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            await self.bot.start()
            env = {**os.environ, "SOAK_TG_SECRET": self.secret}
            if self.redis is not None:
                await self.redis.start()
                env["SOAK_REDIS_URL"] = self.redis.url
            write_config(self.config_path, self.config())
            count = 2 if self.setup == "b" else 1
            self.gateways = [Gateway(i, self.config_path, env, self.workdir) for i in range(count)]
            for gw in self.gateways:
                await gw.start(session)
            await asyncio.sleep(0.5)  # settle before the baseline
            for gw in self.gateways:
                gw.rss_start = gw.sample_rss()
            self.t0 = time.monotonic()
            self.load_avg = [round(os.getloadavg()[0], 2)]
            cpu0 = time.process_time()
            sampler = asyncio.create_task(self.sample(session))
            faults = asyncio.create_task(self.faults(session))
            await self.load()
            self.note("load and retries done")
            with contextlib.suppress(asyncio.CancelledError):
                faults.cancel()
                await faults
            # Whatever a fault left down comes back before the final drain.
            await self.heal(session)
            await self.wait_delivered()
            self.note("delivery drain done")
            self.stop_sampling.set()
            await sampler
            if self.setup == "c":
                depth = await scrape_spool_depth(session, self.gateways[0])
                if depth is not None:
                    self.stats.backlog.append((round(time.monotonic() - self.t0, 1), depth))
                    self.stats.delivered_series.append((self.stats.backlog[-1][0], self.bot_lines()))
            for gw in self.gateways:
                gw.rss_end = gw.sample_rss()
            self.driver_cpu = time.process_time() - cpu0
            self.load_avg.append(round(os.getloadavg()[0], 2))
        finally:
            for gw in self.gateways:
                stop(gw.proc, signal.SIGTERM, wait=15)
            self.bot.kill()
            if self.redis is not None:
                self.redis.kill()
            await session.close()
        return self.result()

    async def heal(self, session: aiohttp.ClientSession) -> None:
        # A fault cancelled half-way may have left a process started but not yet answering.
        if self.bot.proc is None or self.bot.proc.poll() is not None:
            await self.bot.start()
        else:
            await wait_port(self.bot.port, self.bot.proc)
        if self.redis is not None:
            if self.redis.proc is None or self.redis.proc.poll() is not None:
                await self.redis.start()
            else:
                await wait_port(self.redis.port, self.redis.proc)
        for gw in self.gateways:
            if not gw.ready:
                stop(gw.proc)
                await gw.start(session)

    # -- load --

    async def load(self) -> None:
        opts = self.opts
        queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=opts.connections * 2)
        end = self.t0 + opts.duration
        give_up = end + opts.drain
        headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": self.secret}

        async def produce() -> None:
            # Update i exists from t0 + i/rate on, as at Telegram, whatever happened before; a
            # full queue (every connection busy) only delays its sending, which shows as an
            # acknowledged rate below the target. The count is always duration * rate.
            total = int(opts.duration * opts.rate)
            first_id = 100_000
            sent = 0
            while sent < total:
                due = min(int((time.monotonic() - self.t0) * opts.rate) + 1, total)
                while sent < due:
                    await queue.put(first_id + sent)
                    sent += 1
                    self.stats.sent = sent
                await asyncio.sleep(0.01)
            for _ in range(opts.connections):
                await queue.put(None)

        async def connection(i: int) -> None:
            gw = self.gateways[i % len(self.gateways)]
            url = gw.url + self.path
            connector = aiohttp.TCPConnector(limit=1)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
                while (update_id := await queue.get()) is not None:
                    if time.monotonic() > give_up:
                        self.stats.unacked.add(update_id)
                        continue
                    body = update_body(update_id, int(time.time()))
                    delay = 0.05
                    while True:
                        self.stats.attempts += 1
                        started = time.monotonic()
                        try:
                            async with s.post(url, data=body, headers=headers) as r:
                                await r.read()
                                status = r.status
                        except (TimeoutError, aiohttp.ClientError, OSError):
                            status = 0
                        took = time.monotonic() - started
                        if 200 <= status < 300:
                            self.stats.acked.add(update_id)
                            if started < end:
                                self.stats.acked_in_window += 1
                            if len(self.stats.latencies) < MAX_LATENCY_SAMPLES:
                                self.stats.latencies.append(took)
                            break
                        self.stats.failures[str(status) if status else "conn_error"] += 1
                        if time.monotonic() > give_up:
                            self.stats.unacked.add(update_id)
                            break
                        # Telegram backs off too; the same bytes go again.
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 1.0)

        await asyncio.gather(produce(), *(connection(i) for i in range(opts.connections)))

    # -- faults --

    def schedule(self) -> list[tuple[float, str]]:
        d = self.opts.duration
        down = min(3.0, max(1.0, 0.05 * d))
        plan: list[tuple[float, str]] = []
        t = FLIP_EVERY_S
        while t < d:
            plan.append((t, "flip"))
            t += FLIP_EVERY_S
        t = HUP_EVERY_S
        while t < d:
            plan.append((t, "hup"))
            t += HUP_EVERY_S
        plan += [(0.15 * d, "bot_kill"), (0.15 * d + down, "bot_start")]
        plan += [(0.55 * d, "bot_kill"), (0.55 * d + down, "bot_start")]
        if self.redis is not None:
            plan += [(0.35 * d, "redis_kill"), (0.35 * d + down, "redis_start")]
        plan.append((0.78 * d, "gateway_kill"))
        return sorted(plan)

    async def faults(self, session: aiohttp.ClientSession) -> None:
        # Each fault its own task: a process that is slow to start does not delay the next one.
        running: set[asyncio.Task[None]] = set()
        try:
            for at, what in self.schedule():
                delay = self.t0 + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self.fault(what, session))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running)
        finally:
            for task in list(running):
                task.cancel()

    async def fault(self, what: str, session: aiohttp.ClientSession) -> None:
        stats = self.stats
        if what == "flip":
            self.mode = "report-only" if self.mode == "enforce" else "enforce"
            write_config(self.config_path, self.config())
        elif what == "hup":
            for gw in self.gateways:
                if gw.ready and gw.proc is not None and gw.proc.poll() is None:
                    gw.proc.send_signal(signal.SIGHUP)
                else:
                    stats.faults["hup_skipped"] += 1
                    continue
                stats.faults["hup"] += 1
            self.note("hup")
            return
        elif what == "bot_kill":
            self.bot.kill()
        elif what == "bot_start":
            await self.bot.start()
        elif what == "redis_kill" and self.redis is not None:
            self.redis.kill()
        elif what == "redis_start" and self.redis is not None:
            await self.redis.start()
        elif what == "gateway_kill":
            gw = self.gateways[-1]
            gw.sigkill()
            self.note("gateway_kill")
            stats.faults["gateway_kill"] += 1
            # A supervisor restarts it at once; its start-up time is the outage.
            await gw.start(session)
            self.note("gateway_start")
            return
        stats.faults[what] += 1
        self.note(what)

    # -- sampling and drain --

    def bot_lines(self) -> int:
        # Incremental: only the bytes appended since the last call are read.
        try:
            with open(self.bot.out, "rb") as f:
                f.seek(self._bot_offset)
                chunk = f.read()
        except OSError:
            return self._bot_count
        self._bot_offset += len(chunk)
        self._bot_count += chunk.count(b"\n")
        return self._bot_count

    async def sample(self, session: aiohttp.ClientSession) -> None:
        while not self.stop_sampling.is_set():
            for gw in self.gateways:
                gw.sample_rss()
            if self.setup == "c":
                depth = await scrape_spool_depth(session, self.gateways[0])
                if depth is not None:
                    self.stats.backlog.append((round(time.monotonic() - self.t0, 1), depth))
                    self.stats.delivered_series.append((self.stats.backlog[-1][0], self.bot_lines()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_sampling.wait(), 1.0)

    async def wait_delivered(self) -> None:
        # Passthrough: a 2xx means the bot answered, so this returns at once. Spool: bounded wait
        # for the backlog to reach the bot.
        deadline = time.monotonic() + self.opts.spool_drain
        while time.monotonic() < deadline:
            delivered = read_delivered(self.bot.out)
            if all(delivered[u] for u in self.stats.acked):
                return
            await asyncio.sleep(0.5)

    def result(self) -> dict[str, Any]:
        delivered = read_delivered(self.bot.out)
        # Self-check of the accounting: pretend the bot never recorded some ids.
        for update_id in sorted(self.stats.acked)[: self.opts.forget_delivered]:
            delivered.pop(update_id, None)
        acc = account(self.stats.acked, delivered)
        lat = sorted(self.stats.latencies)
        s = self.stats
        return {
            "setup": self.setup,
            "title": SETUPS[self.setup],
            "duration_s": self.opts.duration,
            "target_rate": self.opts.rate,
            "connections": self.opts.connections,
            "sent": s.sent,
            "attempts": s.attempts,
            **acc,
            "acked_rate": round(s.acked_in_window / self.opts.duration, 1),
            "unacknowledged": len(s.unacked),
            "non_2xx": dict(sorted(s.failures.items())),
            "p50_ms": round(percentile(lat, 50) * 1000, 1),
            "p99_ms": round(percentile(lat, 99) * 1000, 1),
            "rss_mib": [
                {
                    "gateway": gw.index,
                    "start": round(gw.rss_start or 0.0, 1),
                    "end": round(gw.rss_end or 0.0, 1),
                    "peak": round(gw.rss_peak, 1),
                    "starts": gw.starts,
                }
                for gw in self.gateways
            ],
            "gateway_cpu_s": [round(sum(gw.cpu_by_pid.values()), 1) for gw in self.gateways],
            "driver_cpu_s": round(self.driver_cpu, 1),
            "load_avg_start_end": self.load_avg,
            "faults": dict(sorted(s.faults.items())),
            "backlog": s.backlog,
            "delivered_series": s.delivered_series,
            "events": s.events,
        }


# --- report ---------------------------------------------------------------------------------------


def backlog_line(samples: list[tuple[float, float]], points: int = 16) -> str:
    if not samples:
        return "-"
    step = max(1, len(samples) // points)
    picked = samples[::step]
    if picked[-1] != samples[-1]:
        picked.append(samples[-1])
    return " ".join(f"{t:g}s:{int(d)}" for t, d in picked)


def rate_line(series: list[tuple[float, int]], points: int = 16) -> str:
    """Deliveries per second between the same sample times as the backlog line."""
    if len(series) < 2:
        return "-"
    step = max(1, len(series) // points)
    picked = series[::step]
    if picked[-1] != series[-1]:
        picked.append(series[-1])
    out = []
    for (t0, n0), (t1, n1) in itertools.pairwise(picked):
        out.append(f"{t1:g}s:{(n1 - n0) / (t1 - t0):.0f}" if t1 > t0 else f"{t1:g}s:-")
    return " ".join(out)


def table(results: list[dict[str, Any]]) -> str:
    def rss(r: dict[str, Any]) -> str:
        return ", ".join(f"{g['start']:.0f}->{g['end']:.0f} (peak {g['peak']:.0f})" for g in r["rss_mib"])

    def non2xx(r: dict[str, Any]) -> str:
        return " ".join(f"{k}:{v}" for k, v in r["non_2xx"].items()) or "none"

    def faults(r: dict[str, Any]) -> str:
        return " ".join(f"{k}:{v}" for k, v in r["faults"].items())

    rows: list[tuple[str, Any]] = [
        ("acknowledged (2xx)", lambda r: r["acknowledged"]),
        ("acked rate during load /s", lambda r: r["acked_rate"]),
        ("acked, never delivered", lambda r: r["lost"]),
        ("delivered more than once", lambda r: r["delivered_more_than_once"]),
        ("never acknowledged (gave up)", lambda r: r["unacknowledged"]),
        ("non-2xx by status", non2xx),
        ("latency p50 / p99 ms", lambda r: f"{r['p50_ms']} / {r['p99_ms']}"),
        ("RSS MiB start->end", rss),
        ("CPU s: gateways / driver", lambda r: f"{r['gateway_cpu_s']} / {r['driver_cpu_s']}"),
        ("load average start, end", lambda r: ", ".join(map(str, r["load_avg_start_end"]))),
        ("faults", faults),
    ]
    out = []
    for r in results:
        out.append(f"== {r['setup']}: {r['title']} ({r['duration_s']:g} s, {r['target_rate']:g}/s, "
                   f"{r['connections']} connections)")  # fmt: skip
        for name, get in rows:
            out.append(f"  {name:<30} {get(r)}")
        if r["setup"] == "c":
            out.append(f"  {'spool backlog over time':<30} {backlog_line(r['backlog'])}")
            out.append(f"  {'bot deliveries/s over time':<30} {rate_line(r['delivered_series'])}")
        if r["lost"]:
            out.append(f"  LOST (first ids): {r['lost_ids']}")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load per set-up (default 120)")
    p.add_argument("--rate", type=float, default=400.0, help="updates per second offered (default 400)")
    p.add_argument("--connections", type=int, default=40, help="keep-alive connections (default 40)")
    p.add_argument("--setups", default="a,b,c", help="which set-ups, in order (default a,b,c)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON here")
    p.add_argument("--drain", type=float, default=45.0, help="seconds retries may go on after the load (45)")
    p.add_argument("--spool-drain", type=float, default=120.0, help="longest wait for spool delivery (120)")
    p.add_argument("--workdir", help="keep configs, logs and the bot's record here (default: temp, removed)")
    p.add_argument("--forget-delivered", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown or not setups:
        p.error(f"--setups: pick from a,b,c (got {args.setups!r})")
    if args.duration <= 0 or args.rate <= 0 or args.connections <= 0:
        p.error("--duration, --rate and --connections must be positive")
    args.setup_list = setups
    return args


async def run_all(args: argparse.Namespace, root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    opts = Options(
        args.duration, args.rate, args.connections, args.drain, args.spool_drain, args.forget_delivered
    )
    results, errors = [], []
    for setup in args.setup_list:
        workdir = root / setup
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"soak: set-up {setup} ({SETUPS[setup]}) ...", file=sys.stderr, flush=True)
        try:
            results.append(await Run(setup, opts, workdir).execute())
        except Exception as exc:  # reported; the other set-ups still run
            errors.append(f"set-up {setup}: {exc!r} (logs in {workdir})")
    return results, errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep = args.workdir is not None
    root = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="soak-"))
    root.mkdir(parents=True, exist_ok=True)
    results, errors = asyncio.run(run_all(args, root))
    print(table(results))
    for e in errors:
        print(f"ERROR {e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "errors": errors}, indent=1) + "\n")
    lost = sum(r["lost"] for r in results)
    failed = bool(lost or errors)
    if lost:
        print(f"FAIL: {lost} acknowledged update(s) never reached the bot")
    if not keep and not failed:
        shutil.rmtree(root, ignore_errors=True)
    elif not keep:
        print(f"logs kept in {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
