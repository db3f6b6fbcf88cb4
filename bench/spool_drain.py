"""How fast a spool route drains to a healthy bot, against how fast its listener acknowledges.

`bench/spool` calls this. For each `spool_concurrency` asked for (default 1 and 8), all on
loopback, with the gateway pinned to CPU 1 and wrk and the bot (nginx answering 200) on CPU 0:

1. **ack**: the bot is down; wrk (40 connections, unique Telegram updates over 50 chats) drives
   the spool route for `--duration` seconds. Every 200 is a row committed to SQLite (fsynced).
2. **drain**: the bot comes up; the time from the first delivery to the last gives the drain
   rate with no inflow.
3. **both**: wrk drives the route again with the bot up; the rows delivered meanwhile and the
   backlog left at the end say whether delivery keeps pace with the listener at full load.

The spool keeps pace when drain / ack is comfortably above 1; the target is 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

from bench import (
    LOAD_CPU,
    PROXY_CPU,
    RESULTS,
    TELEGRAM_IP,
    TG_PATH,
    TG_SECRET,
    Stack,
    free_port,
    machine,
    profile,
    rss_mb,
    run_wrk,
    stack,
    upstream_conf,
    wait_ready,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TARGET = 1.5
CONNECTIONS = 40


def gateway_conf(port: int, admin: int, upstream: int, spool: Path, concurrency: int) -> str:
    doc = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin}",
        "mode": "enforce",
        "trusted_proxies": ["127.0.0.1/32"],
        "spool": {"path": str(spool)},
        "routes": [
            {
                "name": "tg",
                "path": TG_PATH,
                "upstream": f"http://127.0.0.1:{upstream}/webhook",
                "verify": {"scheme": "telegram", "secrets": ["env:BENCH_TG_SECRET"]},
                "allow_sources": ["telegram"],
                "delivery": "spool",
                "spool_concurrency": concurrency,
            }
        ],
    }
    return json.dumps(doc, indent=2)  # JSON is YAML


def metric(admin: int, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def delivered(admin: int) -> float:
    return metric(admin, "webhook_gateway_spool_deliveries_total", route="tg", result="delivered")


def wrk(port: int, duration: float, start: int) -> dict[str, float]:
    env = {
        "BENCH_START": str(start),
        "BENCH_HEADERS": f"X-Telegram-Bot-Api-Secret-Token: {TG_SECRET}\nX-Forwarded-For: {TELEGRAM_IP}",
    }
    r = run_wrk("spool.lua", f"http://127.0.0.1:{port}{TG_PATH}", duration, CONNECTIONS, env)
    seconds = r["duration_us"] / 1e6
    acked = r["requests"] - r["status"]  # wrk counts non-2xx answers as status errors
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["status"]
    return {"acked": acked, "seconds": seconds, "rate": acked / seconds, "errors": errors}


def wait_drained(admin: int, target: float, limit: float) -> tuple[float, float]:
    """Poll until `target` rows were delivered: (seconds from the first delivery, seconds from now)."""
    began = time.monotonic()
    first: float | None = None
    while True:
        done = delivered(admin)
        now = time.monotonic()
        if first is None and done > 0:
            first = now
        if done >= target:
            return now - (first or began), now - began
        if now - began > limit:
            raise RuntimeError(f"only {done:.0f} of {target:.0f} rows delivered in {limit:.0f} s")
        time.sleep(0.05)


def one(s: Stack, n: int, concurrency: int, duration: float, spy: bool) -> dict[str, float]:
    port, admin, up = free_port(), free_port(), free_port()
    spool = s.tmp / f"spool-{n}.db"
    conf = s.tmp / f"gateway-{n}.yaml"
    conf.write_text(gateway_conf(port, admin, up, spool, concurrency))
    env = {**os.environ, "BENCH_TG_SECRET": TG_SECRET, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "gateway", "run", "--config", str(conf)]
    gw = s.start(f"gateway-{n}", cmd, PROXY_CPU, env)
    wait_ready(port, "/")
    (s.tmp / f"upstream-{n}.conf").write_text(upstream_conf(s.tmp, up))

    ack = wrk(port, duration, 1)
    # The gateway's count, not wrk's: wrk leaves out the answers still in flight when it stops.
    spooled = metric(admin, "webhook_gateway_requests_total", route="tg", outcome="spooled")
    if spooled < ack["acked"]:
        raise RuntimeError(f"wrk counted {ack['acked']:.0f} acknowledgements, the gateway {spooled:.0f}")
    bot = s.start(
        f"upstream-{n}",
        ["nginx", "-p", str(s.tmp), "-c", str(s.tmp / f"upstream-{n}.conf")],
        LOAD_CPU,
    )
    if spy:
        profile(gw, RESULTS / f"spool-drain-{n}-{concurrency}.collapsed", duration)
    drain_s, total_s = wait_drained(admin, spooled, limit=max(300.0, duration * 30))

    before = delivered(admin)
    both = wrk(port, duration, 10_000_000)
    during = delivered(admin) - before
    total = metric(admin, "webhook_gateway_requests_total", route="tg", outcome="spooled")
    backlog = total - delivered(admin)
    rss = rss_mb(gw)
    s.stop(gw)
    s.stop(bot)
    return {
        "concurrency": concurrency,
        "ack_rate": ack["rate"],
        "ack_errors": ack["errors"],
        "backlog": spooled,
        "drain_rate": spooled / drain_s,
        "resume_s": total_s - drain_s,
        "ratio": spooled / drain_s / ack["rate"],
        "both_ack_rate": both["rate"],
        "both_delivered_rate": during / both["seconds"],
        "both_backlog_end": backlog,
        "rss_peak_mb": rss[1],
    }


def table(rows: list[dict[str, float]]) -> str:
    out = [
        "spool_concurrency  ack/s (bot down)  drain/s (no inflow)  drain/ack  target  "
        "| both at once: ack/s  delivered/s  backlog at end",
    ]
    for r in rows:
        verdict = "met" if r["ratio"] >= TARGET else "MISSED"
        out.append(
            f"{r['concurrency']:>17}  {r['ack_rate']:>16.0f}  {r['drain_rate']:>19.0f}  {r['ratio']:>9.2f}"
            f"  {verdict:>6}  | {r['both_ack_rate']:>19.0f}  {r['both_delivered_rate']:>11.0f}"
            f"  {r['both_backlog_end']:>14.0f}"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk phase")
    ap.add_argument("--concurrency", default="1,8", help="spool_concurrency values, comma-separated")
    ap.add_argument("--profile", action="store_true", help="py-spy the gateway while it drains")
    args = ap.parse_args()
    rows = []
    with stack() as s:
        for n, c in enumerate(int(x) for x in args.concurrency.split(",")):
            print(f"spool_concurrency {c}: ack phase, drain phase, both", flush=True)
            rows.append(one(s, n, c, args.duration, args.profile))
    report = table(rows)
    print()
    print(report)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"spool-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    (RESULTS / f"spool-{stamp}.txt").write_text(report + "\n")
    print(f"\nwritten: {out} and .txt")
    return 0 if all(r["ratio"] >= TARGET for r in rows if r["concurrency"] > 1) else 1


if __name__ == "__main__":
    sys.exit(main())
