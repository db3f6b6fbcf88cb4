"""The gateway as users run it (`python -m gateway run --config FILE`) in a child process:
`GatewayProcess` for async tests (ports chosen by the test), `gateway_process` for sync ones
(ports read from its `listening` log line)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.env import ENV, ROOT_DIR
from tests.support.leaks import record_output
from tests.support.metrics import metric_value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python -m gateway run` as a real child process on free loopback ports."""

    def __init__(
        self, config_path: Path, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.config_path = config_path
        self.args = list(args)  # after `run --config PATH`, e.g. ["--listen", "127.0.0.1:8081"]
        self.env = {**ENV, "PATH": "/usr/bin:/bin", **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        # A file, not a pipe: a child blocked on a full pipe would look like a hang.
        self.stderr_path = config_path.with_suffix(".stderr")
        self._stderr_file = open(self.stderr_path, "wb")  # noqa: SIM115

    async def start(self, port: int, admin_port: int) -> None:
        self.port, self.admin_port = port, admin_port
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(self.config_path),
            *self.args,
            cwd=ROOT_DIR,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._stderr_file,
        )
        async with asyncio.timeout(30):
            while True:
                try:
                    async with aiohttp.ClientSession() as s, s.get(f"{self.admin}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self.proc.returncode is not None:
                    raise RuntimeError(self.stderr)
                await asyncio.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def metric(self, name: str, **labels: str) -> float:
        async with aiohttp.ClientSession() as s, s.get(self.admin + "/metrics") as r:
            return metric_value(await r.text(), name, labels)

    async def stop(self, sig: int | None = 15) -> int:
        """Send `sig` (None: it was already signalled) and wait for the exit code."""
        assert self.proc is not None
        if sig is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), 60)
        finally:
            self._stderr_file.close()

    @property
    def stderr(self) -> str:
        if not self._stderr_file.closed:
            self._stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        self._stderr_file.close()


@dataclass
class SyncGatewayProcess:
    """A gateway child process started by `gateway_process`, for sync tests."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    public_port: int = 0
    admin_port: int = 0
    startup: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        return (self.workdir / "stderr.log").read_text(errors="replace")

    def stdout_text(self) -> str:
        return (self.workdir / "stdout.log").read_text(errors="replace")

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        record_output("metrics", text)
        return text

    def problems(self) -> list[str]:
        """Error-level log lines and tracebacks: the gateway must never produce any on input."""
        out = []
        for line in self.stderr_text().splitlines():
            if "Traceback" in line or '"level": "error"' in line or '"level": "critical"' in line:
                out.append(line)
        return out

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def nofile_soft(self) -> int:
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        raise AssertionError("no Max open files line")


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def gateway_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ENV)
    env["PYTHONPATH"] = str(ROOT_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


START_TIMEOUT = 20.0


def _nofile(soft: int | None) -> Any:
    if soft is None:
        return None

    def lower() -> None:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return lower


@contextlib.contextmanager
def gateway_process(
    config: dict[str, Any],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    nofile_soft: int | None = None,
) -> Iterator[SyncGatewayProcess]:
    """Run the gateway as users do; yield once it listens; stop it and keep its output."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(path)],
            cwd=ROOT_DIR,
            env=gateway_env(env),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            preexec_fn=_nofile(nofile_soft),
        )
    gw = SyncGatewayProcess(proc, workdir)
    try:
        _wait_listening(gw)
        yield gw
    finally:
        stop_process(proc)
        record_output("gateway stderr", gw.stderr_text())
        record_output("gateway stdout", gw.stdout_text())


def _wait_listening(gw: SyncGatewayProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in gw.stderr_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "starting":
                gw.startup = record
            if record.get("event") == "listening":
                gw.public_port = int(str(record["public"]).rpartition(":")[2])
                gw.admin_port = int(str(record["admin"]).rpartition(":")[2])
                return
        if gw.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {gw.proc.returncode}:\n{gw.stderr_text()}")
        time.sleep(0.05)
    raise AssertionError(f"gateway did not listen within {START_TIMEOUT}s:\n{gw.stderr_text()}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
