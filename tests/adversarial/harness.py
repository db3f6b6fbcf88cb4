"""A real gateway process, a recording upstream in a thread, and raw sockets on loopback.

Sync on purpose: the adversarial tests speak bytes on sockets, and hypothesis drives sync
tests best. The gateway runs as `python -m gateway run --config FILE` exactly as users run it,
under the C parser or the pure-Python one (`AIOHTTP_NO_EXTENSIONS=1`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, settings

from tests.helpers import ENV, RecordingUpstream, record_output, recording_upstream

ROOT = Path(__file__).resolve().parents[2]
PARSERS = ("c", "python")
TG_PATH = "/hook/tg"
HMAC_PATH = "/hook/hmac"
START_TIMEOUT = 20.0

# Hypothesis examples per property test: few by default (CI time), more with ADVERSARIAL_EXAMPLES.
SETTINGS = settings(
    max_examples=int(os.environ.get("ADVERSARIAL_EXAMPLES", "40")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


class ThreadedUpstream:
    """`tests.helpers.RecordingUpstream` on its own event loop in a daemon thread."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.up: RecordingUpstream | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> ThreadedUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recording upstream did not start")
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test thread by __enter__
            self.error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with recording_upstream(**self._kwargs) as up:
            self.up = up
            self._ready.set()
            await self._stop.wait()

    @property
    def port(self) -> int:
        assert self.up is not None
        return self.up.port

    @property
    def received(self) -> list[Any]:
        assert self.up is not None
        return self.up.received

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def gateway_config(upstream: ThreadedUpstream, **top: Any) -> dict[str, Any]:
    """Two enforcing routes (telegram token, body HMAC) that forward only authenticated updates."""
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "mode": "enforce",
        "trusted_proxies": ["127.0.0.1/32"],
        "limits": {"header_timeout": "3s", "body_timeout": "3s", "upstream_timeout": "10s"},
        "routes": [
            {
                "name": "tg",
                "path": TG_PATH,
                "upstream": upstream.url("/tg"),
                "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET", "env:TG_SECRET_2"]},
            },
            {
                "name": "hmac",
                "path": HMAC_PATH,
                "upstream": upstream.url("/hmac"),
                "verify": {
                    "scheme": "hmac",
                    "header": "X-Signature",
                    "algorithm": "sha256",
                    "encoding": "hex",
                    "prefix": "sha256=",
                    "secrets": ["env:HMAC_SECRET"],
                },
            },
        ],
    }
    config.update(top)
    return config


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    workdir: Path
    parser: str
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


def gateway_env(parser: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"}
    env.update(ENV)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if parser == "python":
        env["AIOHTTP_NO_EXTENSIONS"] = "1"
    env.update(extra or {})
    return env


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
    parser: str = "c",
    env: dict[str, str] | None = None,
    nofile_soft: int | None = None,
) -> Iterator[GatewayProcess]:
    """Run the gateway as users do; yield once it listens; stop it and keep its output."""
    assert parser in PARSERS
    if parser == "python":
        config = {**config, "allow_pure_python_parser": True}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(path)],
            cwd=ROOT,
            env=gateway_env(parser, env),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            preexec_fn=_nofile(nofile_soft),
        )
    gw = GatewayProcess(proc, workdir, parser)
    try:
        _wait_listening(gw)
        yield gw
    finally:
        stop_process(proc)
        record_output(f"gateway stderr ({parser})", gw.stderr_text())
        record_output(f"gateway stdout ({parser})", gw.stdout_text())


def _wait_listening(gw: GatewayProcess) -> None:
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


# ---------------------------------------------------------------- raw sockets


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until the peer closes or `timeout` passes. -> (bytes, closed)."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def exchange(
    port: int,
    pieces: Sequence[bytes],
    *,
    read_timeout: float = 6.0,
    pause: float = 0.0,
    shut_wr: bool = False,
) -> tuple[bytes, bool]:
    """Send `pieces` (with `pause` between them) on a fresh socket; -> (all bytes read, closed)."""
    with connect(port) as sock:
        try:
            for i, piece in enumerate(pieces):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(piece)
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may close before it has read everything: that is a close
        data, closed = read_all(sock, read_timeout)
    record_output("raw response", data)
    return data, closed


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def parse_responses(data: bytes) -> list[Response]:
    """Every complete HTTP/1.1 response in `data`, in order (the gateway always sends a length)."""
    out: list[Response] = []
    rest = data
    while rest:
        head, sep, tail = rest.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"truncated response head: {rest[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        version, _, status_reason = lines[0].partition(" ")
        assert version in ("HTTP/1.0", "HTTP/1.1"), f"not an HTTP/1 status line: {lines[0]!r}"
        status = int(status_reason[:3])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        if 100 <= status < 200:  # an interim answer (100 Continue): no body
            out.append(Response(status, headers, b""))
            rest = tail
            continue
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
        if length is None:
            assert not tail, f"response without Content-Length followed by {tail[:100]!r}"
            out.append(Response(status, headers, tail))
            break
        assert len(tail) >= length, f"truncated body: {len(tail)} < {length}"
        out.append(Response(status, headers, tail[:length]))
        rest = tail[length:]
    return out


class Conn:
    """One keep-alive client connection that reads exactly one response per request."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = connect(port, timeout)
        self.timeout = timeout
        self._buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> Response:
        deadline = time.monotonic() + self.timeout
        while True:
            head, sep, tail = self._buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(tail) >= length:
                    one = head + sep + tail[:length]
                    self._buf = tail[length:]
                    record_output("raw response", one)
                    return parse_responses(one)[0]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete response; have {self._buf[:200]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; have {self._buf[:200]!r}")
            self._buf += chunk

    def request(self, data: bytes) -> Response:
        self.send(data)
        return self.response()


def post_bytes(path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A well-formed HTTP/1.1 POST as bytes."""
    lines = [f"POST {path} HTTP/1.1", "Host: gw", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def metric(text: str, name: str, **labels: str) -> float:
    from tests.helpers import metric_value

    return metric_value(text, name, labels)
