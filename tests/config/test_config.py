"""Config: strict keys, every problem with its location, secrets only from env:/file:."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import config as cfg
from tests.support.env import ENV, ROOT_DIR, TG_SECRET


def good(**overrides: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "routes": [
            {
                "name": "bot",
                "path": "/tg/bot/x",
                "upstream": "http://127.0.0.1:3000/webhook",
                "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
            }
        ]
    }
    c.update(overrides)
    return c


def problems(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.build(raw, environ=ENV if environ is None else environ)
    return info.value.problems


def test_minimal_config_has_documented_defaults() -> None:
    c = cfg.build(good(), environ=ENV)
    assert str(c.listen) == "0.0.0.0:8080"
    assert str(c.admin_listen) == "127.0.0.1:9090"
    assert c.mode == "report-only"
    assert c.limits == cfg.Limits(1_048_576, 10.0, 15.0, 25.0)
    route = c.routes[0]
    assert route.mode == "report-only"
    assert route.verify is not None
    assert route.verify.secrets[0].value == TG_SECRET.encode()
    assert route.allow_sources is None


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(lisen="0.0.0.0:1"), "lisen: unknown key (did you mean listen?)"),
        (lambda c: c["routes"][0].update(extra=1), "routes[0].extra: unknown key"),
        (lambda c: c["routes"][0]["verify"].update(header="X"), "routes[0].verify.header: unknown key"),
        (lambda c: c.update(mode="enforcing"), "mode: 'enforcing' is not one of: enforce, report-only"),
        (lambda c: c.update(listen="8080"), "listen: '8080' is not HOST:PORT"),
        (
            lambda c: c.update(trusted_proxies=["10.0.0.300/8"]),
            "trusted_proxies[0]: '10.0.0.300/8' is not an IP",
        ),
        (lambda c: c.update(trusted_proxies=["10.1.2.3/8"]), "did you mean 10.0.0.0/8?"),
        (
            lambda c: c.update(trusted_proxies=["0.0.0.0/0"]),
            "trusted_proxies[0]: 0.0.0.0/0 trusts X-Forwarded-For",
        ),
        (
            lambda c: c["routes"][0].update(allow_sources=["telegram", "nope"]),
            "routes[0].allow_sources[1]: 'nope'",
        ),
        (lambda c: c["routes"][0].update(allow_sources=[]), "routes[0].allow_sources: an empty list"),
        (lambda c: c["routes"][0].update(path="tg"), "routes[0].path: 'tg' must start with /"),
        (lambda c: c["routes"][0].update(upstream="ftp://x/y"), "routes[0].upstream: 'ftp://x/y'"),
        (
            lambda c: c["routes"][0].update(upstream="unix:relative.sock"),
            "routes[0].upstream: a unix upstream",
        ),
        (lambda c: c["routes"][0].update(name="bad name"), "routes[0].name: 'bad name'"),
        (lambda c: c["routes"][0].pop("upstream"), "routes[0].upstream: is required"),
        (lambda c: c.update(limits={"header_timeout": "10 parsecs"}), "limits.header_timeout: '10 parsecs'"),
        (lambda c: c.update(limits={"max_body_bytes": 0}), "limits.max_body_bytes: 0 is outside"),
        (lambda c: c.update(routes=[]), "routes: at least one route is required"),
        (lambda c: c["routes"][0]["verify"].update(scheme="telegarm"), "routes[0].verify.scheme: 'telegarm'"),
        (lambda c: c["routes"][0]["verify"].update(secrets=[]), "routes[0].verify.secrets: at least one"),
        (
            lambda c: c["routes"][0].update(enforce_percent=0),
            "routes[0].enforce_percent: 0 is outside 1..100",
        ),
        (lambda c: c.update(admin_listen="0.0.0.0:8080"), "admin_listen: must differ from listen"),
        (
            lambda c: c["routes"][0]["verify"].update(secrets=["env:TG_SECRET", "env:NOPE"]),
            "routes[0].verify.secrets[1]: environment variable NOPE is not set",
        ),
    ],
)
def test_each_problem_is_reported_with_its_location(mutate: Any, expected: str) -> None:
    c = good()
    mutate(c)
    found = problems(c)
    assert any(expected in p for p in found), found


def test_every_problem_is_collected_not_just_the_first() -> None:
    c = good(mode="x", listen="nope", trusted_proxies=["bad"])
    c["routes"].append(dict(c["routes"][0]))  # same name and path
    c["routes"][0]["verify"] = {"scheme": "telegram", "secrets": ["env:MISSING"]}
    found = problems(c)
    locations = [p.split(":", 1)[0] for p in found]
    assert locations == [
        "listen",
        "mode",
        "trusted_proxies[0]",
        "routes[0].verify.secrets[0]",
        "routes[1].name",
        "routes[1].path",
    ]


def test_inline_secret_is_refused_and_never_echoed() -> None:
    c = good()
    c["routes"][0]["verify"]["secrets"] = ["hunter2-inline-secret"]
    found = problems(c)
    assert found == [
        "routes[0].verify.secrets[0]: secrets come only from env:NAME or file:PATH (inline values refused)"
    ]
    assert "hunter2" not in "\n".join(found)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("A-z_0-9", True),
        ("x" * 256, True),
        ("x" * 257, False),
        ("has space", False),
        ("ünï", False),
    ],
)
def test_telegram_secret_alphabet(value: str, ok: bool) -> None:
    c = good()
    env = {"TG_SECRET": value}
    if ok:
        assert cfg.build(c, environ=env).routes[0].verify is not None
    else:
        found = problems(c, env)
        assert len(found) == 1 and "1-256 characters" in found[0]
        assert value not in found[0]


def test_file_secret_strips_trailing_newline_and_empty_is_an_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "s"
    secret_file.write_text("  file-secret\n")
    c = good()
    c["routes"][0]["verify"] = {"scheme": "hmac", "header": "X-Sig", "secrets": [f"file:{secret_file}"]}
    built = cfg.build(c, environ={})
    assert built.routes[0].verify.secrets[0].value == b"file-secret"  # type: ignore[union-attr]
    assert "file-secret" not in repr(built)
    secret_file.write_text("\n")
    assert problems(c, {}) == [f"routes[0].verify.secrets[0]: secret from file:{secret_file} is empty"]
    secret_file.unlink()
    assert "cannot read secret file" in problems(c, {})[0]


def test_empty_env_secret_is_an_error() -> None:
    assert problems(good(), {"TG_SECRET": " \n"}) == [
        "routes[0].verify.secrets[0]: secret from env:TG_SECRET is empty"
    ]


def test_yaml_errors_and_duplicate_keys_have_lines() -> None:
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse_yaml("a: 1\na: 2\n", "x.yaml")
    assert "duplicate key 'a'" in info.value.problems[0]
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse_yaml("a: [1,\n", "x.yaml")
    assert info.value.problems[0].startswith("x.yaml:")


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("10s", 10), ("5m", 300), ("24h", 86400), ("1d", 86400), (3, 3.0)]
)
def test_durations(text: Any, seconds: float) -> None:
    assert cfg.parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "rate"), [("100/s", (100, 1.0)), ("20/m", (20, 60.0)), ("5/10s", (5, 10.0))]
)
def test_rates(text: str, rate: tuple[int, float]) -> None:
    assert cfg.parse_rate(text) == rate


def test_unix_upstream_parsing() -> None:
    up = cfg.parse_upstream("unix:/run/bot/bot.sock:/webhook")
    assert (up.unix_socket, up.url) == ("/run/bot/bot.sock", "http://localhost/webhook")
    assert cfg.parse_upstream("unix:/run/bot.sock").url == "http://localhost/"


def test_telegram_preset_comes_from_data() -> None:
    assert [str(n) for n in cfg.PRESETS["telegram"]] == ["149.154.160.0/20", "91.108.4.0/22"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT_DIR,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_check_command_lists_every_problem_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "mode: sometimes\nroutes:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:1/\n"
        "    verify: {scheme: telegram, secrets: [env:TG_SECRET]}\n    allow_sources: [10.0.0.0/33]\n"
    )
    result = _cli("check", "--config", str(bad))
    assert result.returncode == 1
    assert "mode: 'sometimes' is not one of" in result.stderr
    assert "routes[0].verify.secrets[0]: environment variable TG_SECRET is not set" in result.stderr
    assert "routes[0].allow_sources[0]: '10.0.0.0/33'" in result.stderr
    assert "3 problem(s)" in result.stderr


@pytest.mark.parametrize(
    "path",
    ["config/gateway.yaml", "config/examples/telegram-sidecar.yaml", "config/examples/legacy-hmac.yaml"],
)
def test_shipped_configs_pass_check(path: str, tmp_path: Path) -> None:
    text = (ROOT_DIR / path).read_text()
    # The legacy example reads its secret from a file path; point it at a temporary one.
    secret = tmp_path / "legacy-hook"
    secret.write_text("legacy-secret\n")
    text = text.replace("/run/secrets/legacy-hook", str(secret))
    target = tmp_path / "c.yaml"
    target.write_text(text)
    result = _cli("check", "--config", str(target), env={"TG_SECRET": "abc", "TG_SECRET_PREVIOUS": "def"})
    assert result.returncode == 0, result.stderr
    assert ": ok (" in result.stdout


def test_config_path_defaults_to_env_then_file() -> None:
    assert cfg.default_path(None, {}) == "config/gateway.yaml"
    assert cfg.default_path(None, {"WEBHOOK_GATEWAY_CONFIG": "/x.yaml"}) == "/x.yaml"
    assert cfg.default_path("/y.yaml", {"WEBHOOK_GATEWAY_CONFIG": "/x.yaml"}) == "/y.yaml"
