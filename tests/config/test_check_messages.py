"""`check` points at the line and column of every problem, and says what was probably meant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as cfg

ROOT = Path(__file__).resolve().parents[2]
ENV = {"TG": "t" * 32, "GH": "g" * 32}

ROUTE = """\
  - name: tg
    path: /tg
    upstream: http://127.0.0.1:3000/
    verify:
      scheme: telegram
      secrets: [env:TG]
"""


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError) as exc:
        cfg.load(str(path), ENV)
    return [p.removeprefix(f"{path}:") for p in exc.value.problems]


def test_every_problem_has_line_and_column_of_its_node(tmp_path: Path) -> None:
    found = problems_of(
        tmp_path,
        "mode: Enforce\n"
        "limits:\n"
        "  header_timout: 10s\n"
        "  body_timeout: forever\n"
        "routes:\n" + ROUTE + "  - name: x\n    upstream: http://127.0.0.1:3000/\n",
    )
    assert found == [
        "1:7: mode: 'Enforce' is not one of: enforce, report-only (did you mean enforce?)",
        "3:3: limits.header_timout: unknown key (did you mean header_timeout?)",
        "4:17: limits.body_timeout: 'forever' is not a duration "
        "(examples: 500ms, 10s, 5m, 24h; a bare number is seconds)",
        # a missing key points at the mapping it is missing from
        "12:5: routes[1].path: is required",
    ]


def test_route_level_enum_in_another_case_and_near_miss_scheme(tmp_path: Path) -> None:
    text = "routes:\n" + ROUTE.replace("scheme: telegram", "scheme: Telegram") + "    mode: ENFORCE\n"
    assert problems_of(tmp_path, text) == [
        "8:11: routes[0].mode: 'ENFORCE' is not one of: enforce, report-only (did you mean enforce?)",
        "6:15: routes[0].verify.scheme: 'Telegram' is not a scheme (did you mean telegram?)",
    ]


def test_shell_variable_for_secrets_is_one_message_with_the_env_hint(tmp_path: Path) -> None:
    text = "routes:\n" + ROUTE.replace("secrets: [env:TG]", 'secrets: "$TG_SECRET"')
    assert problems_of(tmp_path, text) == [
        "7:16: routes[0].verify.secrets: expected a list of secret references: "
        "write secrets: [env:TG_SECRET] (YAML does not expand $TG_SECRET)"
    ]


def test_shell_variable_inside_the_list_gets_the_env_hint(tmp_path: Path) -> None:
    text = "routes:\n" + ROUTE.replace("secrets: [env:TG]", 'secrets: ["${TG_SECRET}"]')
    assert problems_of(tmp_path, text) == [
        "7:17: routes[0].verify.secrets[0]: secrets come only from env:NAME or file:PATH "
        "(inline values refused); write env:TG_SECRET (YAML does not expand $TG_SECRET)"
    ]


def test_a_single_reference_where_a_list_is_expected(tmp_path: Path) -> None:
    text = "routes:\n" + ROUTE.replace("secrets: [env:TG]", "secrets: env:TG")
    assert problems_of(tmp_path, text) == [
        "7:16: routes[0].verify.secrets: expected a list of secret references: write secrets: [env:TG]"
    ]


def test_secret_singular_is_one_message(tmp_path: Path) -> None:
    text = "routes:\n" + ROUTE.replace("secrets: [env:TG]", "secret: [env:TG]")
    # Not also "at least one secret is required": the misspelt key already says it.
    assert problems_of(tmp_path, text) == [
        "7:7: routes[0].verify.secret: unknown key (did you mean secrets?)"
    ]


def test_misspelt_required_key_is_one_message(tmp_path: Path) -> None:
    text = "routes:\n" + ROUTE.replace("    upstream:", "    upstrem:")
    assert problems_of(tmp_path, text) == ["4:5: routes[0].upstrem: unknown key (did you mean upstream?)"]


def test_syntax_errors_and_duplicate_keys_have_positions(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "routes: [\n")[0].startswith("2:1: invalid YAML")
    dup = problems_of(tmp_path, "mode: enforce\nmode: enforce\nroutes:\n" + ROUTE)
    assert dup[0].startswith("2:1: invalid YAML") and "duplicate key 'mode'" in dup[0]


def test_bare_number_is_seconds() -> None:
    built = cfg.build(
        {
            "limits": {"header_timeout": 7},
            "routes": [{"name": "a", "path": "/a", "upstream": "http://127.0.0.1:1/"}],
        }
    )
    assert built.limits.header_timeout == 7.0


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_cli_prints_located_problems_and_deprecation_warnings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: Enforce\nroutes:\n" + ROUTE)
    done = run_check(bad)
    assert done.returncode == 1
    assert (
        f"{bad}:1:7: mode: 'Enforce' is not one of: enforce, report-only (did you mean enforce?)"
        in done.stderr
    )
    old = tmp_path / "old.yaml"
    old.write_text("routes:\n" + ROUTE + "allow_pure_python_parser: true\n")
    done = run_check(old)
    assert done.returncode == 0, done.stderr
    assert f"warning: {old}:8:1: allow_pure_python_parser: no longer has any effect" in done.stderr


def test_keys_and_defaults_come_from_the_dataclasses() -> None:
    from gateway.reader import defaults_of, keys_of

    assert keys_of(cfg.Limits) == {"max_body_bytes", "header_timeout", "body_timeout", "upstream_timeout"}
    assert "source_path" not in keys_of(cfg.Config) and "header" not in keys_of(cfg.ReplayConfig)
    built = cfg.build({"routes": [{"name": "a", "path": "/a", "upstream": "http://127.0.0.1:1/"}]})
    assert built.max_concurrency == defaults_of(cfg.Config)["max_concurrency"] == 1024
    assert built.limits == cfg.Limits() and built.store == cfg.StoreConfig()
