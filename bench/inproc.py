"""The gateway's own cost per request, without sockets: what the Python does, nothing else.

    .venv/bin/python bench/inproc.py [--requests 50000] [--profile tg_forged_token]

Feeds the bench's requests straight into the public listener's protocol (a transport that
only counts what is written) with the bench's gateway config, and prints microseconds per
request for each load. Accepted loads go to a real upstream on loopback (a tiny asyncio
server answering 200), so they include the upstream round trip's system calls. `--profile`
runs one load under cProfile and prints the top functions. Not a substitute for `bench/run`
(no wrk, no kernel): a quick way to see what a change to the request path costs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import HMAC_SECRET, TG_SECRET, gateway_conf, loads, telegram_update
from gateway.config import build, parse_yaml
from gateway.serve.service import Service, settle_garbage_collector


class CountingTransport(asyncio.Transport):
    """Stands in for the client's socket: counts answers, remembers the last one."""

    def __init__(self) -> None:
        super().__init__()
        self.last: bytes | None = None  # the last answer not yet checked
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.last = bytes(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Upstream(asyncio.Protocol):
    ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # One request per read is all this driver ever sends on a connection at a time.
        self.transport.write(self.ANSWER)  # type: ignore[attr-defined]


def raw(path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def run_load(service: Service, data: bytes, expect: int, n: int, conns: int = 32) -> float:
    """Seconds per request: `conns` connections each send a request, all are answered, again,
    until `n` requests; like wrk's closed loop, so answers are written in bursts as in a run."""
    server = service._http
    assert server is not None
    pairs = []
    for _ in range(conns):
        conn = server()
        transport = CountingTransport()
        conn.connection_made(transport)
        pairs.append((conn, transport))
    want = b"HTTP/1.1 %d " % expect
    rounds = max(1, n // conns)
    started = time.perf_counter()
    for _ in range(rounds):
        for conn, _t in pairs:
            conn.data_received(data)
        for _conn, transport in pairs:
            # Answers go out at the end of the loop pass (forwarded ones a few passes later).
            while transport.last is None:
                await asyncio.sleep(0)
            if not transport.last.startswith(want):
                raise SystemExit(f"expected {want!r}, got {transport.last[:40]!r}")
            transport.last = None
    elapsed = time.perf_counter() - started
    for conn, _t in pairs:
        conn.connection_lost(None)
    return elapsed / (rounds * conns)


async def main_async(args: argparse.Namespace) -> None:
    os.environ["BENCH_TG_SECRET"] = TG_SECRET
    os.environ["BENCH_HMAC_SECRET"] = HMAC_SECRET
    loop = asyncio.get_running_loop()
    up = await loop.create_server(Upstream, "127.0.0.1", 0)
    up_port = up.sockets[0].getsockname()[1]
    config = build(parse_yaml(gateway_conf(0, 0, up_port, 1)))
    service = Service(config, log_stream=io.StringIO())
    await service.start()
    settle_garbage_collector()  # as `webhook-gateway run` does once serving
    try:
        body = telegram_update()
        for name, load in loads(body).items():
            if args.only and name not in args.only:
                continue
            data = raw(load.path, load.headers, body)
            await run_load(service, data, load.expect, 2000)  # warm up
            service.access_log._stream = io.StringIO()
            if args.profile == name:
                prof = cProfile.Profile()
                prof.enable()
                per = await run_load(service, data, load.expect, args.requests)
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
                print(out.getvalue())
            else:
                per = await run_load(service, data, load.expect, args.requests)
            print(f"{name:<20} {per * 1e6:7.1f} us/request  ({1 / per:,.0f} req/s on one core)")
    finally:
        await service.stop()
        up.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--only", type=lambda v: set(v.split(",")), default=None)
    p.add_argument("--profile", default=None, help="a load name to run under cProfile")
    args = p.parse_args()
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
