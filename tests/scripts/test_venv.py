"""scripts/_venv.sh: pip runs only when pyproject.toml changed since the last install."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Stands in for .venv/bin/python: records each call instead of installing anything.
FAKE_PYTHON = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/../../pip-calls"
exit "${FAKE_PIP_EXIT:-0}"
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "_venv.sh", tmp_path / "scripts" / "_venv.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def _ensure(project: Path, extras: str, fail: bool = False) -> int:
    env = {**os.environ, "FAKE_PIP_EXIT": "1" if fail else "0"}
    script = f'set -euo pipefail; . scripts/_venv.sh; ensure_venv "{extras}"'
    return subprocess.run(["bash", "-c", script], cwd=project, env=env, timeout=30).returncode


def _calls(project: Path) -> list[str]:
    log = project / "pip-calls"
    return log.read_text().splitlines() if log.exists() else []


def test_second_call_runs_no_pip(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _ensure(project, "") == 0
    assert _calls(project) == ["-m pip install -q --disable-pip-version-check -e ."]
    assert _ensure(project, "") == 0
    assert _ensure(project, "") == 0
    assert len(_calls(project)) == 1


def test_changed_pyproject_reinstalls(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _ensure(project, "") == 0
    with (project / "pyproject.toml").open("a") as f:
        f.write("\n# a new dependency would go here\n")
    assert _ensure(project, "") == 0
    assert _ensure(project, "") == 0
    assert len(_calls(project)) == 2


def test_extras_have_their_own_stamp(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _ensure(project, "") == 0
    assert _ensure(project, "[test]") == 0
    assert _ensure(project, "[test]") == 0
    assert _calls(project)[-1].endswith("-e .[test]")
    assert len(_calls(project)) == 2


def test_failed_install_is_retried(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _ensure(project, "", fail=True) != 0
    assert _ensure(project, "") == 0
    assert _ensure(project, "") == 0
    assert len(_calls(project)) == 2


def test_an_extras_install_covers_the_plain_one(tmp_path: Path) -> None:
    # scripts/test installs [test]; scripts/gateway afterwards needs no pip run of its own.
    project = _project(tmp_path)
    assert _ensure(project, "[test]") == 0
    assert _ensure(project, "") == 0
    assert len(_calls(project)) == 1
