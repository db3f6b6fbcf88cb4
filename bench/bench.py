"""The gateway against nginx and HAProxy doing the same checks, on this machine, in one run.

`bench/run` calls this. It starts, all on loopback:

- a fast upstream: nginx answering `200 {"ok":true}` (one worker),
- nginx (one worker) doing what the gateway's Telegram route does: believe X-Forwarded-For
  from 127.0.0.1 only (`real_ip`), the Telegram allow-list (`geo`), the secret-token compare
  (`map`), then proxy to the upstream over pooled keep-alive connections,
- HAProxy (`nbthread 1`) doing what the gateway's HMAC route does: HMAC-SHA256 of the raw body
  (its `hmac` converter) compared with a header (`secure_memcmp`), then proxy,
- the gateway (one worker, then two) with both routes in enforce mode,

and drives each with wrk (one thread, 32 connections, a 513-byte Telegram update) on the
accepted path and with forged requests, then an open-loop 500 req/s run for the latency each
proxy adds over the upstream alone. The proxies under test run on CPU 1; wrk and the upstream
on CPU 0 (the two-worker gateway may use both). Ratios are only meaningful within one run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

TG_PATH = "/tg/bench/9f3c2a71d4e8"
HMAC_PATH = "/hooks/bench-hmac"
TG_SECRET = "bench-secret-token_0123456789"
HMAC_SECRET = "bench hmac secret, not a real one"
TELEGRAM_IP = "149.154.167.220"  # inside 149.154.160.0/20
FOREIGN_IP = "203.0.113.7"
PROXY_CPU = "1"
LOAD_CPU = "0"

TARGETS = {"accepted": 0.35, "forged": 0.25, "added_p99_ms": 2.0, "rss_mb": 60.0}


def telegram_update(size: int = 513) -> bytes:
    """A realistic Telegram message update, padded to exactly `size` bytes."""
    update = {
        "update_id": 734218991,
        "message": {
            "message_id": 4471,
            "from": {"id": 183927402, "is_bot": False, "first_name": "Ada", "username": "ada_l"},
            "chat": {"id": 183927402, "first_name": "Ada", "username": "ada_l", "type": "private"},
            "date": 1735689600,
            "text": "",
        },
    }
    base = len(json.dumps(update, separators=(",", ":")).encode())
    text = "Please remind me about the meeting tomorrow at ten and send the agenda. " * 10
    update["message"]["text"] = text[: size - base]
    out = json.dumps(update, separators=(",", ":")).encode()
    assert len(out) == size, len(out)
    return out


def hmac_hex(body: bytes) -> str:
    import hashlib
    import hmac

    return hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- configs


def nginx_common(tmp: Path, name: str) -> str:
    return f"""
daemon off;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 8192; }}
"""


def nginx_temp_paths(tmp: Path, name: str) -> str:
    return "\n".join(
        f"  {kind}_temp_path {tmp}/{name}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def upstream_conf(tmp: Path, port: int) -> str:
    return (
        nginx_common(tmp, "upstream")
        + f"""
http {{
  access_log off;
{nginx_temp_paths(tmp, "upstream")}
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  default_type application/json;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ return 200 '{{"ok":true}}'; }}
  }}
}}
"""
    )


def nginx_proxy_conf(tmp: Path, port: int, upstream: int) -> str:
    # Same checks, same order and same answers as the gateway's Telegram route.
    return (
        nginx_common(tmp, "nginx")
        + f"""
http {{
  log_format line '$time_iso8601 $remote_addr "$request" $status $request_time $request_id';
  access_log {tmp}/nginx.access.log line buffer=64k;
{nginx_temp_paths(tmp, "nginx")}
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  client_header_timeout 10s;
  client_body_timeout 15s;
  client_max_body_size 1m;
  default_type application/json;
  set_real_ip_from 127.0.0.1/32;
  real_ip_header X-Forwarded-For;
  real_ip_recursive on;
  geo $telegram_source {{ default 0; 149.154.160.0/20 1; 91.108.4.0/22 1; }}
  map $http_x_telegram_bot_api_secret_token $token_ok {{ default 0; "{TG_SECRET}" 1; }}
  upstream bot {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {TG_PATH} {{
      limit_except POST {{ deny all; }}
      if ($telegram_source = 0) {{ return 403 '{{"error":"source_not_allowed"}}'; }}
      if ($token_ok = 0) {{ return 401 '{{"error":"signature_mismatch"}}'; }}
      proxy_pass http://bot/webhook;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Webhook-Verdict pass;
      proxy_read_timeout 25s;
    }}
    location / {{ return 404 '{{"error":"not_found"}}'; }}
  }}
}}
"""
    )


def haproxy_conf(tmp: Path, port: int, upstream: int) -> str:
    key = base64.b64encode(HMAC_SECRET.encode()).decode()
    mismatch = """'{"error":"signature_mismatch"}'"""
    return f"""
global
  nbthread 1
  maxconn 8192
  pidfile {tmp}/haproxy.pid
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 75s
  timeout server 25s
  timeout http-request 10s
frontend hooks
  bind 127.0.0.1:{port}
  option http-buffer-request
  option forwardfor
  acl hook path {HMAC_PATH}
  http-request return status 404 content-type application/json string '{{"error":"not_found"}}' unless hook
  http-request set-var(txn.want) req.body,hmac(sha256,{key}),hex,lower
  acl signed req.hdr(X-Signature),lower,secure_memcmp(txn.want)
  http-request return status 401 content-type application/json string {mismatch} unless signed
  http-request set-header X-Webhook-Verdict pass
  http-request set-header X-Request-Id %[uuid]
  default_backend bot
backend bot
  http-reuse always
  server up 127.0.0.1:{upstream}
"""


def gateway_conf(port: int, admin: int, upstream: int, workers: int) -> str:
    doc = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin}",
        "mode": "enforce",
        "trusted_proxies": ["127.0.0.1/32"],
        "routes": [
            {
                "name": "tg",
                "path": TG_PATH,
                "upstream": f"http://127.0.0.1:{upstream}/webhook",
                "verify": {"scheme": "telegram", "secrets": ["env:BENCH_TG_SECRET"]},
                "allow_sources": ["telegram"],
            },
            {
                "name": "hmac",
                "path": HMAC_PATH,
                "upstream": f"http://127.0.0.1:{upstream}/webhook",
                "verify": {
                    "scheme": "hmac",
                    "header": "X-Signature",
                    "algorithm": "sha256",
                    "encoding": "hex",
                    "secrets": ["env:BENCH_HMAC_SECRET"],
                },
            },
        ],
    }
    if workers != 1:
        doc["workers"] = workers
    return json.dumps(doc, indent=2)  # JSON is YAML


# ---------------------------------------------------------------- processes


@dataclass
class Stack:
    """Every process the bench started, stopped (by pid) on exit whatever happens."""

    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], cpu: str | None, env: dict[str, str] | None = None) -> int:
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", cpu, *cmd]
        out = open(self.tmp / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        out.close()
        self.procs.append(proc)
        return proc.pid

    def stop(self, pid: int, timeout: float = 30) -> None:
        for proc in self.procs:
            if proc.pid == pid and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc.pid, 10)


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    tmp.chmod(0o755)  # nginx workers may run as another user
    s = Stack(tmp)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp, ignore_errors=True)


def request(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(port: int, path: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request(port, path, b"{}", {})
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on port {port}") from None
            time.sleep(0.05)


def family(pid: int) -> list[int]:
    """`pid` and its children (the workers of `workers: N`)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return pids


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by `pid` and its children."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for p in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            user += int(fields[11]) / tick  # utime, after the state field
            system += int(fields[12]) / tick
    return user, system


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of `pid` and its children, in MB."""
    now = peak = 0.0
    for p in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    now += int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) / 1024
    return now, peak


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class Load:
    path: str
    headers: dict[str, str]
    expect: int  # the status every response must have


def loads(body: bytes) -> dict[str, Load]:
    sig = hmac_hex(body)
    return {
        "tg_accepted": Load(
            TG_PATH,
            {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "X-Forwarded-For": TELEGRAM_IP},
            200,
        ),
        "tg_forged_token": Load(
            TG_PATH,
            {"X-Telegram-Bot-Api-Secret-Token": "forged-token", "X-Forwarded-For": TELEGRAM_IP},
            401,
        ),
        "tg_forged_source": Load(
            TG_PATH,
            {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "X-Forwarded-For": FOREIGN_IP},
            403,
        ),
        "hmac_accepted": Load(HMAC_PATH, {"X-Signature": sig}, 200),
        "hmac_forged": Load(HMAC_PATH, {"X-Signature": "0" * 64}, 401),
    }


def load_client(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a load client on the load CPU and return the `BENCH_JSON` summary it prints."""
    pinned = ["taskset", "-c", LOAD_CPU, *cmd] if shutil.which("taskset") else cmd
    out = subprocess.run(pinned, env=env, capture_output=True, text=True, timeout=timeout).stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"{' '.join(cmd)} printed no summary:\n{out}")
    summary: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
    return summary


def run_wrk(script: str, url: str, duration: float, connections: int, env: dict[str, str]) -> dict[str, Any]:
    """wrk (one thread) with one of the bench's Lua scripts; its summary (see common.lua)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "5s"]
    cmd += ["-s", str(BENCH / script), url]
    return load_client(cmd, duration + 60, {**os.environ, "BENCH_LUA": str(BENCH), **env})


def wrk(port: int, load: Load, body_file: Path, duration: float, connections: int) -> dict[str, float]:
    env = {
        "BENCH_BODY": str(body_file),
        "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in load.headers.items()),
    }
    r = run_wrk("post.lua", f"http://127.0.0.1:{port}{load.path}", duration, connections, env)
    seconds = r["duration_us"] / 1e6
    # wrk counts non-2xx/3xx answers as "status" errors: for a forged load every answer is one.
    wrong = r["status"] if load.expect < 400 else r["requests"] - r["status"]
    return {
        "rps": r["requests"] / seconds,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["connect"] + r["read"] + r["write"] + r["timeout"] + wrong,
        "requests": r["requests"],
    }


def paced(port: int, load: Load, body_file: Path, rate: float, duration: float) -> dict[str, float]:
    cmd = [
        sys.executable,
        str(BENCH / "paced.py"),
        "--url",
        f"http://127.0.0.1:{port}{load.path}",
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--body",
        str(body_file),
    ]
    for k, v in load.headers.items():
        cmd += ["--header", f"{k}: {v}"]
    r = load_client(cmd, duration + 60)
    return {
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["errors"],
        "late": r["late"],
        "sent": r["sent"],
    }


def check(port: int, load: Load, body: bytes, who: str) -> None:
    """One request before measuring: each peer must answer each load the same way."""
    status, answer = request(port, load.path, body, load.headers)
    if status != load.expect:
        raise RuntimeError(f"{who}: {load.path} answered {status} {answer[:200]!r}, expected {load.expect}")


def profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """py-spy in the background on `pid`, as collapsed stacks (one line per stack, with counts)."""
    if not shutil.which("py-spy"):
        print("py-spy not installed: no profile", file=sys.stderr)
        return None
    cmd = ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    cmd += ["--duration", str(int(seconds)), "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    duration: float
    connections: int
    rate: float
    paced_duration: float
    workers: tuple[int, ...]
    profile: bool
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)

    def measure(self, key: str, port: int, load: Load, body: Path, pid: int | None = None) -> None:
        """One wrk run; with `pid`, also the CPU that process (and its workers) spent per request:
        what separates its own work from waiting on the kernel or the load generator."""
        before = cpu_seconds(pid) if pid is not None else None
        r = wrk(port, load, body, self.duration, self.connections)
        cpu = ""
        if before is not None and pid is not None and r["requests"]:
            after = cpu_seconds(pid)
            r["cpu_user_us"] = (after[0] - before[0]) / r["requests"] * 1e6
            r["cpu_sys_us"] = (after[1] - before[1]) / r["requests"] * 1e6
            cpu = f"  cpu/req {r['cpu_user_us']:5.1f} us user {r['cpu_sys_us']:5.1f} us sys"
        self.results[key] = r
        print(
            f"  {key:<32} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
            + cpu
            + (f"  ERRORS {r['errors']:.0f}" if r["errors"] else ""),
            flush=True,
        )


def run(args: argparse.Namespace) -> dict[str, object]:
    body = telegram_update()
    all_loads = loads(body)
    r = Run(args.duration, args.connections, args.rate, args.paced_duration, args.workers, args.profile)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    with stack() as s:
        body_file = s.tmp / "update.json"
        body_file.write_bytes(body)
        up_port, ng_port, ha_port = free_port(), free_port(), free_port()
        (s.tmp / "upstream.conf").write_text(upstream_conf(s.tmp, up_port))
        (s.tmp / "nginx.conf").write_text(nginx_proxy_conf(s.tmp, ng_port, up_port))
        (s.tmp / "haproxy.cfg").write_text(haproxy_conf(s.tmp, ha_port, up_port))
        s.start("upstream", ["nginx", "-p", str(s.tmp), "-c", str(s.tmp / "upstream.conf")], LOAD_CPU)
        wait_ready(up_port, "/")
        upstream_load = Load("/webhook", {}, 200)

        print("upstream alone (nginx return 200)", flush=True)
        r.measure("upstream", up_port, upstream_load, body_file)

        if "peers" in args.only:
            ng = s.start("nginx", ["nginx", "-p", str(s.tmp), "-c", str(s.tmp / "nginx.conf")], PROXY_CPU)
            wait_ready(ng_port, "/")
            print("nginx (1 worker): real_ip + geo allow-list + token map + proxy_pass", flush=True)
            for name in ("tg_accepted", "tg_forged_token", "tg_forged_source"):
                check(ng_port, all_loads[name], body, "nginx")
                r.measure(f"nginx/{name}", ng_port, all_loads[name], body_file, ng)
            s.stop(ng)
            ha = s.start("haproxy", ["haproxy", "-db", "-f", str(s.tmp / "haproxy.cfg")], PROXY_CPU)
            wait_ready(ha_port, "/")
            print("haproxy (nbthread 1): hmac(sha256) of the body + secure_memcmp + proxy", flush=True)
            for name in ("hmac_accepted", "hmac_forged"):
                check(ha_port, all_loads[name], body, "haproxy")
                r.measure(f"haproxy/{name}", ha_port, all_loads[name], body_file, ha)
            s.stop(ha)

        if "floor" in args.only:
            fl_port = free_port()
            fl = s.start("floor", [sys.executable, str(BENCH / "floor.py"), str(fl_port)], PROXY_CPU)
            wait_ready(fl_port, "/")
            print("python floor: uvloop + httptools answering a constant 401, no checks", flush=True)
            r.measure("floor/constant_401", fl_port, Load(TG_PATH, {}, 401), body_file, fl)
            s.stop(fl)

        for workers in r.workers:
            gw_port, admin = free_port(), free_port()
            conf = s.tmp / f"gateway-{workers}.yaml"
            conf.write_text(gateway_conf(gw_port, admin, up_port, workers))
            env = {
                **os.environ,
                "BENCH_TG_SECRET": TG_SECRET,
                "BENCH_HMAC_SECRET": HMAC_SECRET,
                "PYTHONPATH": str(ROOT),
            }
            cmd = [sys.executable, "-m", "gateway", "run", "--config", str(conf)]
            # One worker is pinned like the peers; more than one get both cores.
            gw = s.start(f"gateway-{workers}", cmd, PROXY_CPU if workers == 1 else None, env)
            wait_ready(gw_port, "/")
            label = f"gateway-{workers}w"
            print(f"gateway ({workers} worker{'s' if workers > 1 else ''}): every check on", flush=True)
            names = ["tg_accepted", "tg_forged_token"]
            if workers == 1:
                names += ["tg_forged_source", "hmac_accepted", "hmac_forged"]
            for name in names:
                check(gw_port, all_loads[name], body, "gateway")
                prof = None
                if r.profile and workers == 1 and name in ("tg_accepted", "tg_forged_token"):
                    prof = profile(gw, RESULTS / f"profile-{stamp}-{name}.txt", r.duration)
                r.measure(f"{label}/{name}", gw_port, all_loads[name], body_file, gw)
                if prof is not None:
                    prof.wait(30)
            now, peak = rss_mb(gw)
            r.rss[label] = peak
            print(f"  RSS now {now:.1f} MB, peak {peak:.1f} MB", flush=True)
            if workers == 1 and "paced" in args.only:
                paced_port = gw_port
            else:
                s.stop(gw)

        if "paced" in args.only:
            print(f"fixed rate: {r.rate:.0f} req/s for {r.paced_duration:.0f} s, open loop", flush=True)
            targets = [("upstream", up_port, upstream_load)]
            if "peers" in args.only:
                ng = s.start("nginx", ["nginx", "-p", str(s.tmp), "-c", str(s.tmp / "nginx.conf")], PROXY_CPU)
                wait_ready(ng_port, "/")
                targets.append(("nginx", ng_port, all_loads["tg_accepted"]))
            if 1 in r.workers:
                targets.append(("gateway-1w", paced_port, all_loads["tg_accepted"]))
            for name, port, load in targets:
                p = paced(port, load, body_file, r.rate, r.paced_duration)
                r.results[f"paced/{name}"] = p
                print(
                    f"  {name:<12} p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms"
                    f"  late sends {p['late']:.0f}/{p['sent']:.0f}  errors {p['errors']:.0f}",
                    flush=True,
                )
            if 1 in r.workers:
                _, peak = rss_mb(gw)
                r.rss["gateway-1w"] = max(r.rss.get("gateway-1w", 0.0), peak)
    report = {
        "stamp": stamp,
        "machine": machine(),
        "settings": {
            "duration_s": r.duration,
            "connections": r.connections,
            "wrk_threads": 1,
            "body_bytes": len(body),
            "rate": r.rate,
            "paced_duration_s": r.paced_duration,
        },
        "results": r.results,
        "rss_peak_mb": r.rss,
    }
    text = table(report)
    print()
    print(text)
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2))
    (RESULTS / f"bench-{stamp}.txt").write_text(text + "\n")
    shutil.copy(RESULTS / f"bench-{stamp}.txt", RESULTS / "latest.txt")
    print(f"\nwritten: bench/results/bench-{stamp}.json and .txt")
    return report


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    versions = {}
    for tool, cmd in (("nginx", ["nginx", "-v"]), ("haproxy", ["haproxy", "-v"]), ("wrk", ["wrk", "-v"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(cmd, capture_output=True, text=True)
            versions[tool] = (out.stdout + out.stderr).strip().splitlines()[0]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": versions,
    }


def table(report: dict) -> str:
    res: dict[str, dict[str, float]] = report["results"]
    lines = [
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"load average at start {report['machine']['loadavg_at_start'][0]:.2f}",
        f"wrk: 1 thread, {report['settings']['connections']} connections, "
        f"{report['settings']['duration_s']:.0f} s each, {report['settings']['body_bytes']}-byte update",
        "",
        f"{'load':<22} {'peer':<22} {'peer req/s':>10} {'p50/p99 ms':>13}"
        f" {'gateway req/s':>13} {'p50/p99 ms':>13} {'ratio':>6} {'target':>7}",
    ]

    def row(load: str, peer: str, gw: str, target: float | None) -> None:
        p, g = res.get(peer), res.get(gw)
        if g is None:
            return
        ratio = g["rps"] / p["rps"] if p else None
        mark = ""
        if ratio is not None and target is not None:
            mark = f">={target:.2f} " + ("ok" if ratio >= target else "MISS")
        lines.append(
            f"{load:<22} {peer.split('/')[0] if p else '-':<22} "
            + (f"{p['rps']:>10.0f} {p['p50_ms']:>6.2f}/{p['p99_ms']:<6.2f}" if p else f"{'-':>10} {'':>13}")
            + f" {g['rps']:>13.0f} {g['p50_ms']:>6.2f}/{g['p99_ms']:<6.2f}"
            + (f" {ratio:>6.2f} {mark}" if ratio is not None else "")
        )

    row("telegram accepted", "nginx/tg_accepted", "gateway-1w/tg_accepted", TARGETS["accepted"])
    row("telegram forged token", "nginx/tg_forged_token", "gateway-1w/tg_forged_token", TARGETS["forged"])
    row("telegram forged source", "nginx/tg_forged_source", "gateway-1w/tg_forged_source", TARGETS["forged"])
    row("hmac accepted", "haproxy/hmac_accepted", "gateway-1w/hmac_accepted", TARGETS["accepted"])
    row("hmac forged", "haproxy/hmac_forged", "gateway-1w/hmac_forged", TARGETS["forged"])
    for w in (2, 3, 4):
        row(f"telegram accepted {w}w", "gateway-1w/tg_accepted", f"gateway-{w}w/tg_accepted", None)
        row(f"forged token {w}w", "gateway-1w/tg_forged_token", f"gateway-{w}w/tg_forged_token", None)
    cpu = [(k, v) for k, v in res.items() if "cpu_user_us" in v]
    if cpu:
        lines += ["", "CPU per request of the server under test (user + system, microseconds)"]
        for k, v in cpu:
            user, system = v["cpu_user_us"], v["cpu_sys_us"]
            lines.append(f"  {k:<32} {user:6.1f} + {system:5.1f} = {user + system:6.1f}")
        lines.append("")
    if "floor/constant_401" in res:
        f, n = res["floor/constant_401"], res.get("nginx/tg_forged_token")
        ratio = f" {f['rps'] / n['rps']:>6.2f} of nginx forged" if n else ""
        lines.append(
            f"{'python floor (no work)':<22} {'uvloop+httptools 401':<22} {f['rps']:>10.0f}"
            f" {f['p50_ms']:>6.2f}/{f['p99_ms']:<6.2f}{ratio}"
        )
    if "upstream" in res:
        u = res["upstream"]
        lines.append(f"{'upstream alone':<22} {'nginx return 200':<22} {u['rps']:>10.0f}")
    base = res.get("paced/upstream")
    if base:
        lines += [
            "",
            f"fixed rate {report['settings']['rate']:.0f} req/s, open loop"
            " (latency added over the upstream alone)",
        ]
        for name in ("upstream", "nginx", "gateway-1w"):
            p = res.get(f"paced/{name}")
            if p is None:
                continue
            added = p["p99_ms"] - base["p99_ms"]
            mark = ""
            if name == "gateway-1w":
                mark = f"  target <= {TARGETS['added_p99_ms']:.1f} ms " + (
                    "ok" if added <= TARGETS["added_p99_ms"] else "MISS"
                )
            extra = (
                ""
                if name == "upstream"
                else f"  added p50 {p['p50_ms'] - base['p50_ms']:+.3f} p99 {added:+.3f}"
            )
            lines.append(
                f"  {name:<12} p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms{extra}{mark}"
                f"  (late {p['late']:.0f}/{p['sent']:.0f}, errors {p['errors']:.0f})"
            )
    if report["rss_peak_mb"]:
        lines.append("")
        for label, mb in report["rss_peak_mb"].items():
            mark = f"  target <= {TARGETS['rss_mb']:.0f} MB " + ("ok" if mb <= TARGETS["rss_mb"] else "MISS")
            lines.append(
                f"RSS peak {label}: {mb:.1f} MB (all processes){mark if label == 'gateway-1w' else ''}"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description="gateway vs nginx and HAProxy, one run, on loopback")
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rate", type=float, default=500, help="fixed-rate run, req/s (default 500)")
    p.add_argument("--paced-duration", type=float, default=10)
    p.add_argument(
        "--workers", type=lambda v: tuple(int(x) for x in v.split(",")), default=(1, 2), help="e.g. 1,2"
    )
    p.add_argument(
        "--only",
        type=lambda v: set(v.split(",")),
        default={"peers", "paced", "floor"},
        help="parts besides the gateway: peers,paced,floor (default all); 'none' for the gateway alone",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the one-worker gateway into results/")
    missing = [t for t in ("wrk", "nginx", "haproxy") if not shutil.which(t)]
    if missing:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install wrk nginx-light haproxy)", file=sys.stderr
        )
        return 1
    run(p.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
