"""deploy/prometheus/alerts-tls-telegram.yaml: promtool accepts it, its unit tests pass and
catch a wrong threshold, and every metric the rules use is one the gateway exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.metrics import Metrics
from tests.support.env import ROOT_DIR

RULES = ROOT_DIR / "deploy/prometheus/alerts-tls-telegram.yaml"
UNIT_TESTS = RULES.with_name("alerts-tls-telegram_test.yaml")


def promtool(*args: str, cwd: Path = ROOT_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def rules() -> list[dict[str, object]]:
    return [rule for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]]


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    test = promtool("test", "rules", str(UNIT_TESTS))
    assert test.returncode == 0, test.stdout + test.stderr


@pytest.mark.parametrize(
    ("before", "after", "failing_case"),
    [
        ("< 14 * 86400", "< 13 * 86400", "certificate expiry 14 days ahead"),
        ("< 3 * 86400", "< 2 * 86400", "certificate expiry 3 days ahead pages"),
        ("url_matches == 0", "url_matches == 2", "a re-pointed webhook pages after 2 minutes"),
        ("< 600) and", "< 6000) and", "recent delivery errors with updates pending"),
        ("pending_updates > 100", "pending_updates > 99", "many pending updates for 15 minutes"),
    ],
)
def test_the_unit_tests_catch_a_wrong_threshold(
    before: str, after: str, failing_case: str, tmp_path: Path
) -> None:
    text = RULES.read_text()
    assert text.count(before) == 1
    (tmp_path / RULES.name).write_text(text.replace(before, after))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert f"name: {failing_case}," in result.stdout + result.stderr


def test_every_metric_in_the_rules_is_exported() -> None:
    exported: set[str] = set()
    for family in Metrics().registry.collect():
        exported.add(family.name)
        if family.type == "counter":
            exported.add(family.name + "_total")
    used = {name for rule in rules() for name in re.findall(r"\bwebhook_gateway_[a-z_]+", str(rule["expr"]))}
    assert used and used <= exported, used - exported
