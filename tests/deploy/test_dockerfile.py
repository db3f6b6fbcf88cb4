"""The Dockerfile: hadolint-clean, and its own build steps (wheel, fresh venv, install) run as
written, without Docker; the installed `webhook-gateway` then checks the shipped config and
serves it with the whole filesystem read-only."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.deploy_support import REPO
from tests.deploy.dockerfile_emulator import DockerIgnore, Emulator, parse, substitute

DOCKERFILE = REPO / "Dockerfile"
CONFIG_IN_IMAGE = "/etc/webhook-gateway/gateway.yaml"
USER_SETUP = re.compile(r"^groupadd .*&& useradd ")


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return subprocess.run(
        [exe, "--no-color", str(path)], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_hadolint_is_clean() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """hadolint really lints: an unpinned base run as root is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN pip install aiohttp\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3002", "DL3013"):
        assert rule in result.stdout


def test_image_shape() -> None:
    preamble, stages = parse(DOCKERFILE.read_text())
    args = {a.args.split("=", 1)[0]: a.args.split("=", 1)[1] for a in preamble if a.cmd == "ARG"}
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    for stage in stages:
        image = substitute(stage.base, args)
        assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", image), image
    final = stages[-1].instructions
    env = " ".join(i.args for i in final if i.cmd == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    [user] = [i.args for i in final if i.cmd == "USER"]
    uid, _, gid = user.partition(":")
    # numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    assert [i.cmd for i in final].index("USER") > max(
        n for n, i in enumerate(final) if i.cmd in {"RUN", "COPY"}
    ), "USER must come after the last RUN/COPY"
    emulator = Emulator(DOCKERFILE, REPO, Path("/nonexistent"))
    assert emulator.exec_form("ENTRYPOINT") == ["webhook-gateway"]
    assert emulator.exec_form("CMD") == ["run", "--config", CONFIG_IN_IMAGE]
    copies = [i.args for i in final if i.cmd == "COPY"]
    assert any(c.endswith(f" {CONFIG_IN_IMAGE}") for c in copies), "the shipped config is in the image"


def test_dockerignore_keeps_the_context_small() -> None:
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    for kept in (
        "pyproject.toml",
        "README.md",
        "gateway/cli.py",
        "gateway/presets.yaml",
        "config/gateway.yaml",
    ):
        assert not ignore.excluded(kept), kept
    for dropped in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/commands/test_cli.py",
        "gateway/__pycache__/cli.cpython-311.pyc",
    ):
        assert ignore.excluded(dropped), dropped


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Emulator:
    """The image, built by running the Dockerfile's steps (build stage RUN steps executed as they
    stand; the runtime stage's only RUN creates the user, which is not done on this machine)."""
    tmp = tmp_path_factory.mktemp("image")
    emulator = Emulator(DOCKERFILE, REPO, tmp / "root")
    home = tmp / "home"
    home.mkdir()
    base_env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("PIP_", "SSL_", "REQUESTS_CA")) or k.lower().endswith("_proxy") or k == "LANG"
    }
    # the python image's interpreter: this one
    base_env |= {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(home)}
    for i in range(len(emulator.stages) - 1):
        emulator.run_stage(i, base_env)
    runtime_env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    skipped = emulator.run_stage(len(emulator.stages) - 1, runtime_env, execute_run=False)
    assert all(USER_SETUP.match(cmd) for cmd in skipped), skipped
    return emulator


def _runtime_env(image: Emulator, **extra: str) -> dict[str, str]:
    env = dict(image.envs[image.stage_name(-1)])
    env.pop("TG_SECRET", None)
    return env | extra


def _entrypoint(image: Emulator) -> str:
    env = _runtime_env(image)
    [name] = image.exec_form("ENTRYPOINT")
    found = shutil.which(name, path=env["PATH"])
    assert found, f"{name} is not on the image's PATH"
    assert Path(found).is_relative_to(image.root), f"{name} resolved outside the image: {found}"
    return found


def test_the_installed_command_checks_the_shipped_config(image: Emulator) -> None:
    config = image.host(CONFIG_IN_IMAGE)
    assert config.read_bytes() == (REPO / "config" / "gateway.yaml").read_bytes()
    result = subprocess.run(
        [_entrypoint(image), "check", "--config", str(config)],
        env=_runtime_env(image, TG_SECRET="a-telegram-secret_0123"),
        cwd=image.host(image.workdirs[image.stage_name(-1)] if False else "/"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{config}: ok (1 route(s): my-bot=report-only)"


def test_the_installed_command_reports_a_missing_secret(image: Emulator) -> None:
    config = image.host(CONFIG_IN_IMAGE)
    result = subprocess.run(
        [_entrypoint(image), "check", "--config", str(config)],
        env=_runtime_env(image),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "routes[0].verify.secrets[0]: environment variable TG_SECRET is not set" in result.stderr


def test_the_image_holds_the_package_not_the_checkout(image: Emulator) -> None:
    venv = Path(_runtime_env(image)["VENV"])
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gateway, sys; print(gateway.__file__)"],
        env=_runtime_env(image),
        cwd=image.root,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert Path(out).is_relative_to(venv / "lib")
    assert (Path(out).parent / "presets.yaml").is_file(), "package data (presets.yaml) is installed"
    # the redis extra is installed: `store: {backend: redis}` works in the image
    subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import gateway.store.redis"],
        env=_runtime_env(image),
        cwd=image.root,
        check=True,
        timeout=30,
    )
    assert not (venv / "bin" / "pip").exists(), "pip is removed from the runtime venv"
    site = Path(out).parent.parent
    assert not list(site.glob("setuptools*")), "so is setuptools: nothing installs at run time"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _can_make_read_only_namespace() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -o remount,bind,ro / && echo ok"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() == "ok"


# Inside a private mount namespace: every mount read-only, proven by a failing write, then exec.
READ_ONLY = """
awk '{print $2}' /proc/self/mounts | while read -r m; do mount -o remount,bind,ro "$m" 2>/dev/null || :; done
if touch "$PROBE" 2>/dev/null; then echo "filesystem still writable" >&2; exit 97; fi
exec "$@"
"""


@pytest.mark.skipif(not _can_make_read_only_namespace(), reason="needs root and mount namespaces (unshare)")
def test_the_image_command_serves_on_a_read_only_filesystem(image: Emulator, tmp_path: Path) -> None:
    """The image's ENTRYPOINT + CMD run the shipped config (ports moved to free loopback ports)
    with every filesystem read-only: it serves, is ready, and shuts down cleanly on SIGTERM."""
    public, admin = _free_port(), _free_port()
    shipped = image.host(CONFIG_IN_IMAGE).read_text()
    config = re.sub(r"(?m)^listen: \S+", f"listen: 127.0.0.1:{public}", shipped)
    config = re.sub(r"(?m)^admin_listen: \S+", f"admin_listen: 127.0.0.1:{admin}", config)
    assert config != shipped
    run_config = tmp_path / "gateway.yaml"
    run_config.write_text(config)
    cmd = image.exec_form("CMD")
    cmd[cmd.index(CONFIG_IN_IMAGE)] = str(run_config)
    env = _runtime_env(image, TG_SECRET="a-telegram-secret_0123", PROBE=str(tmp_path / "probe"))
    before = sorted(p for p in image.root.rglob("*"))
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", READ_ONLY, "sh", _entrypoint(image), *cmd],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                    ready = json.loads(r.read())
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        assert ready == {"status": "ready"}
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as r:
            metrics = r.read().decode()
        assert 'webhook_gateway_config_reloads_total{result="success"} 1.0' in metrics
        assert 'webhook_gateway_route_enforced{route="my-bot"} 0.0' in metrics
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Read-only file system" not in err and "Traceback" not in err, err
    assert sorted(p for p in image.root.rglob("*")) == before
    assert not (tmp_path / "probe").exists()
