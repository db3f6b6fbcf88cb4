"""Real Redis topologies on loopback for the failover tests: a master with a replica watched by
three `redis-sentinel` processes, and a Redis Cluster of three masters with a replica each.
Everything runs from Debian's packages (scripts/test installs them); nodes are killed with
SIGKILL, like a crashed or partitioned host."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.leaks import note_signature
from tests.support.process import free_port

PASSWORD = note_signature("redis-node-pw-Not-For-Logs-2c9e")
SENTINEL_PASSWORD = note_signature("sentinel-pw-Not-For-Logs-81d4")
MASTER_NAME = "gwmaster"
DOWN_AFTER_MS = 1000  # sentinel: a master silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 3000
CLUSTER_NODE_TIMEOUT_MS = 1000


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"no {name}: scripts/test installs it (apt-get install {package})")
    return found


def command(port: int, *args: str, password: str = PASSWORD, timeout: float = 2.0) -> str:
    """One redis-cli command, its output as text ('' when the node does not answer)."""
    cli = _binary("redis-cli", "redis-tools")
    try:
        out = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning", "-a", password, *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout.decode(errors="replace").strip()


class Process:
    """One redis-server / redis-sentinel child with its log in `workdir`."""

    def __init__(self, argv: list[str], workdir: Path, name: str, port: int, password: str) -> None:
        self.argv, self.workdir, self.name, self.port, self.password = argv, workdir, name, port, password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if command(self.port, "PING", password=self.password) == "PONG":
                return
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def redis_node(workdir: Path, name: str, port: int, *extra: str) -> Process:
    argv = [
        _binary("redis-server", "redis-server"),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--requirepass", PASSWORD,
        "--masterauth", PASSWORD,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--dbfilename", f"{name}.rdb",
        "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
        *extra,
    ]  # fmt: skip
    return Process(argv, workdir, name, port, PASSWORD)


class SentinelSetup:
    """One master, one replica, three sentinels (quorum 2), all on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        master_port, replica_port = free_port(), free_port()
        self.master = redis_node(workdir, "master", master_port)
        self.replica = redis_node(
            workdir, "replica", replica_port, "--replicaof", "127.0.0.1", str(master_port)
        )
        self.sentinels = [self._sentinel(i, master_port) for i in range(3)]

    def _sentinel(self, i: int, master_port: int) -> Process:
        port = free_port()
        conf = self.workdir / f"sentinel{i}.conf"  # sentinel rewrites its file: one each
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {self.workdir}",
                    f"requirepass {SENTINEL_PASSWORD}",
                    f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2",
                    f"sentinel auth-pass {MASTER_NAME} {PASSWORD}",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    "",
                ]
            )
        )
        argv = [_binary("redis-sentinel", "redis-sentinel"), str(conf)]
        return Process(argv, self.workdir, f"sentinel{i}", port, SENTINEL_PASSWORD)

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        self._wait_for(lambda: "master_link_status:up" in command(self.replica.port, "INFO", "replication"))
        for s in self.sentinels:
            s.start()
        # Every sentinel knows the replica and the other two sentinels before anything fails.
        for s in self.sentinels:
            self._wait_for(lambda s=s: self._sentinel_sees_everything(s))

    def _sentinel_sees_everything(self, s: Process) -> bool:
        out = command(s.port, "SENTINEL", "MASTER", MASTER_NAME, password=SENTINEL_PASSWORD).split("\n")
        fields = dict(zip(out[::2], out[1::2], strict=False))
        return fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2"

    def master_address(self) -> str:
        out = command(
            self.sentinels[0].port,
            "SENTINEL",
            "GET-MASTER-ADDR-BY-NAME",
            MASTER_NAME,
            password=SENTINEL_PASSWORD,
        ).split("\n")
        return ":".join(out) if len(out) == 2 else ""

    def _wait_for(self, ready: object, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise RuntimeError("sentinel setup did not settle: " + self.logs())

    def logs(self) -> str:
        return "\n".join(
            p.log_path.read_text(errors="replace")[-2000:] for p in self.processes if p.log_path.exists()
        )

    @property
    def processes(self) -> list[Process]:
        return [self.master, self.replica, *self.sentinels]

    def stop(self) -> None:
        for p in self.processes:
            p.kill()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no port pair for a cluster node")


class ClusterSetup:
    """Three masters, one replica each, created by `redis-cli --cluster create`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes = [
            redis_node(
                workdir,
                f"node{i}",
                port,
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{i}.conf",
                "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                "--cluster-replica-validity-factor", "0",  # a replica may always take over
                # The other masters keep serving while one's slots wait for its replica
                # (docs/redis-cluster.md recommends it).
                "--cluster-require-full-coverage", "no",
            )
            for i, port in enumerate(cluster_port() for _ in range(6))
        ]  # fmt: skip

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self) -> None:
        for n in self.nodes:
            n.start()
        cli = _binary("redis-cli", "redis-tools")
        create = ["--cluster", "create", *self.addresses, "--cluster-replicas", "1", "--cluster-yes"]
        out = subprocess.run(
            [cli, "--no-auth-warning", "-a", PASSWORD, *create],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stdout.decode() + out.stderr.decode())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (
                all(self.state(n) == "ok" for n in self.nodes)
                and len(self.masters()) == 3
                and all(self.synced(n) for n in self.nodes)
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("cluster did not reach state ok")

    @staticmethod
    def synced(node: Process) -> bool:
        """A master, or a replica whose link to its master is up (the initial sync is done)."""
        info = command(node.port, "INFO", "replication")
        return "role:master" in info or "master_link_status:up" in info

    @staticmethod
    def state(node: Process) -> str:
        for line in command(node.port, "CLUSTER", "INFO").splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return ""

    def masters(self, asking: Process | None = None) -> dict[str, tuple[int, int]]:
        """address -> a slot range it serves, as a live node sees it."""
        for node in [asking] if asking else self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            found: dict[str, tuple[int, int]] = {}
            for line in command(node.port, "CLUSTER", "NODES").splitlines():
                parts = line.split()
                if len(parts) < 9 or "master" not in parts[2] or "fail" in parts[2]:
                    continue
                lo, _, hi = parts[8].partition("-")
                found[parts[1].split("@")[0]] = (int(lo), int(hi or lo))
            return found
        return {}

    def node_at(self, address: str) -> Process:
        return next(n for n in self.nodes if n.address == address)

    def logs(self) -> str:
        return "\n".join(
            n.log_path.read_text(errors="replace")[-2000:] for n in self.nodes if n.log_path.exists()
        )

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


@pytest.fixture
def cluster_setup(tmp_path: Path) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp_path)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()
