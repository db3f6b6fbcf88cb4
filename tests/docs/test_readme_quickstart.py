"""The README's quick start, pasted in order as a newcomer would, gives what the README says.

Each ```sh block of "## Quick start" is run command by command from the repository root.
`# -> TEXT` under a command is output the README promises: it must appear. A server (`run`,
`demo --serve`: they serve until Ctrl-C) stays up for the commands after it once its promised
output appeared, and gets SIGINT, as Ctrl-C sends, before the next `scripts/gateway` command and
at the end, and must then exit 0; every other command must exit 0. `scripts/test` is the suite
running this test, so it is the one command not run. Ports 8080/9090 become free ports (in the
commands, and for the gateway through WEBHOOK_GATEWAY_LISTEN / _ADMIN_LISTEN) so the test can
run beside anything else.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from tests.support.env import ROOT_DIR
from tests.support.process import free_port

# The first scripts/gateway call may install the package into .venv.
DEADLINE = 300.0


@dataclass
class Step:
    command: str
    expect: list[str] = field(default_factory=list)


def quickstart_steps() -> list[Step]:
    text = (ROOT_DIR / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    steps: list[Step] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        pending = ""
        for line in block.splitlines():
            if line.startswith("# -> "):
                steps[-1].expect.append(line[len("# -> ") :])
            elif line.startswith("#") or not line.strip():
                continue
            elif line.endswith("\\"):
                pending += line[:-1] + " "
            else:
                steps.append(Step(pending + line))
                pending = ""
    return steps


class Running:
    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=ROOT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: SIGINT reaches it as Ctrl-C would
        )
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
                self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait_for(self, expect: list[str], server: bool) -> None:
        """Until the command exits, or (a server) everything promised has appeared."""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self._reader.join(10)
                return
            if server and all(e in self.text for e in expect):
                return
            time.sleep(0.05)
        pytest.fail(f"{self.command!r} neither exited nor printed {expect!r}:\n{self.text}")

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self._reader.join(10)
        return code


def test_quickstart_steps_are_found() -> None:
    steps = quickstart_steps()
    commands = [s.command for s in steps]
    assert commands[0] == "scripts/gateway demo"
    assert "scripts/gateway demo --serve" in commands
    assert any(c.startswith("TG_SECRET=") and c.endswith("scripts/gateway run") for c in commands)
    assert sum(c.startswith("curl ") for c in commands) == 2
    assert commands[-1] == "scripts/test"
    assert all(s.expect for s in steps if s.command != "scripts/test")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands use curl")
def test_readme_quickstart_commands_do_what_the_readme_says() -> None:
    port, admin = free_port(), free_port()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "WEBHOOK_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "WEBHOOK_GATEWAY_ADMIN_LISTEN": f"127.0.0.1:{admin}",
    }
    servers: list[Running] = []

    def stop_servers() -> None:
        while servers:
            server = servers.pop()
            code = server.interrupt()
            assert code == 0, f"{server.command!r} exited {code} on Ctrl-C:\n{server.text}"

    ran = 0
    try:
        for step in quickstart_steps():
            if step.command == "scripts/test":
                continue  # the suite this test is part of
            command = step.command.replace(":8080", f":{port}").replace(":9090", f":{admin}")
            if command.startswith(("scripts/gateway", "TG_SECRET=")):
                stop_servers()  # the README's "Stop the demo with Ctrl-C"
            running = Running(command, env)
            server = command.endswith((" run", " --serve"))
            running.wait_for(step.expect, server)
            ran += 1
            for promised in step.expect:
                assert promised in running.text, (
                    f"{step.command!r} did not print {promised!r}:\n{running.text}"
                )
            if server:
                assert running.proc.poll() is None, f"{step.command!r} stopped:\n{running.text}"
                servers.append(running)
            else:
                assert running.proc.returncode == 0, f"{step.command!r} failed:\n{running.text}"
        stop_servers()
    finally:
        for left in servers:
            if left.proc.poll() is None:
                os.killpg(left.proc.pid, signal.SIGKILL)
    assert ran == len(quickstart_steps()) - 1
