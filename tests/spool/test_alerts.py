"""The spool alert rules load in Prometheus and fire (and stay quiet) as their tests say."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.env import ROOT_DIR

RULES = ROOT_DIR / "deploy" / "prometheus"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package: prometheus); scripts/test installs it")
    return path


def test_spool_rules_are_valid(promtool: str) -> None:
    done = subprocess.run([promtool, "check", "rules", "alerts-spool.yaml"], cwd=RULES, capture_output=True)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"3 rules found" in done.stdout


def test_spool_rules_fire_as_specified(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "test", "rules", "alerts-spool_test.yaml"], cwd=RULES, capture_output=True
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


async def test_every_metric_the_rules_use_is_exported(tmp_path: object) -> None:
    import re

    from tests.support.inprocess import base_config, route, running_gateway

    names = set(re.findall(r"webhook_gateway_\w+", (RULES / "alerts-spool.yaml").read_text()))
    assert len(names) >= 3
    conf = base_config(
        [route(upstream="http://127.0.0.1:9/", delivery="spool")],
        spool={"path": f"{tmp_path}/spool.db"},
    )
    async with running_gateway(conf) as gw:
        text = await gw.metrics_text()
    exported = set(re.findall(r"^# TYPE (\w+)", text, re.MULTILINE))
    exported |= {n + "_total" for n in exported}
    assert names <= exported, names - exported
