"""Open-loop fixed-rate HTTP/1.1 client: the latency a proxy adds at a steady, modest rate.

wrk is closed-loop (a slow answer delays the next request, hiding the slowness) and wrk2 is not
packaged for Debian, so this sends request i at start + i/rate whatever happened before, over a
pool of keep-alive connections, and records each latency from the moment its bytes were
written to the end of its response body. Requests that could not be sent on time (every
connection busy, or the client itself scheduled late) are counted, so a run that did not hold
its rate says so.

    python bench/paced.py --url http://127.0.0.1:8080/path --rate 500 --duration 10 \
        --body body.json --header "Name: value" ...

Prints one `BENCH_JSON {...}` line: sent, ok, errors, late, p50_us, p90_us, p99_us, max_us.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

LATE_S = 0.001  # a send more than this after its slot counts as late


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status


def build_request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + ("?" + parts.query if parts.query else "")
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += headers
    lines.append(f"Content-Length: {len(body)}")
    return host, port, "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def run(url: str, rate: float, duration: float, body: bytes, headers: list[str], conns: int) -> dict:
    host, port, request = build_request(url, body, headers)
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(Conn(*await asyncio.open_connection(host, port)))
    # Warm every connection and the server's caches, unrecorded.
    for _ in range(conns * 2):
        c = await pool.get()
        await c.exchange(request)
        pool.put_nowait(c)

    latencies: list[float] = []
    errors = 0
    late = 0

    async def one(slot: float) -> None:
        nonlocal errors, late
        c = await pool.get()
        sent = time.perf_counter()
        if sent - slot > LATE_S:
            late += 1
        try:
            status = await c.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            c.writer.close()
            pool.put_nowait(Conn(*await asyncio.open_connection(host, port)))
            return
        latencies.append(time.perf_counter() - sent)
        if not 200 <= status < 300:
            errors += 1
        pool.put_nowait(c)

    total = int(rate * duration)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(total):
        slot = start + i / rate
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(slot)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().writer.close()
    latencies.sort()
    us = [x * 1e6 for x in latencies]
    return {
        "sent": total,
        "ok": len(latencies) - errors,
        "errors": errors,
        "late": late,
        "p50_us": round(percentile(us, 50)),
        "p90_us": round(percentile(us, 90)),
        "p99_us": round(percentile(us, 99)),
        "max_us": round(us[-1]) if us else 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--body", required=True, help="file sent as the body, byte for byte")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()
    with open(args.body, "rb") as fh:
        body = fh.read()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(run(args.url, args.rate, args.duration, body, args.header, args.connections))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
