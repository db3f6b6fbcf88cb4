"""The toolkit every config section is read with: typed access to raw YAML, value parsers, and
problems collected with their locations. It imports nothing of the gateway, so schemes, TLS and
Telegram sections use it without depending on the config package that assembles them."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_RE = re.compile(r"^(\d+)\s*/\s*(\d*)(s|m|h)$")
_SHELL_VAR_RE = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")

T = TypeVar("T")


class ConfigError(Exception):
    """Raised with every problem found; `problems` holds one `location: message` per entry."""

    def __init__(self, problems: list[str], found: list[tuple[str, str]] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.found = found if found is not None else []  # (location, message), when known


class Problems:
    """Collects `(location, message)` pairs instead of stopping at the first one."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def add(self, at: str, message: str) -> None:
        self.found.append((at, message))

    def __bool__(self) -> bool:
        return bool(self.found)

    def __len__(self) -> int:
        return len(self.found)

    @property
    def items(self) -> list[str]:
        return [f"{at}: {message}" if at else message for at, message in self.found]

    def at(self, path: str) -> list[str]:
        """The messages reported at exactly `path`."""
        return [message for where, message in self.found if where == path]


@dataclass(frozen=True, repr=False)
class Secret:
    """One configured secret. `repr` and `str` never show the value."""

    index: int
    source: str  # e.g. "env:TG_SECRET": safe to show
    value: bytes

    def __repr__(self) -> str:
        return f"Secret(index={self.index}, source={self.source!r})"

    __str__ = __repr__


# ---------------------------------------------------------------- keys and defaults


def config_key(*, default: Any = dataclasses.MISSING, key: bool = True, **kw: Any) -> Any:
    """A dataclass field; `key=False` marks one that is not a config key (set by the loader)."""
    return dataclasses.field(default=default, metadata={"key": key}, **kw)


def keys_of(cls: type) -> set[str]:
    """The config keys of a section: its dataclass's fields, one source for keys and defaults."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("key", True)}


def defaults_of(cls: type[T]) -> Mapping[str, Any]:
    """Each field's default (the factory's value for a default_factory field)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


# ---------------------------------------------------------------- value parsers


def parse_duration(value: Any) -> float:
    """`10s`, `500ms`, `5m`, `24h`, `1d`, or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value).strip())
        if not m:
            raise ValueError(
                f"{value!r} is not a duration (examples: 500ms, 10s, 5m, 24h; a bare number is seconds)"
            )
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not math.isfinite(seconds):
        # YAML reads `.nan` and `.inf` as floats: a NaN deadline never compares, an infinite
        # one is no deadline at all.
        raise ValueError(f"a duration must be a finite number of seconds, not {value!r}")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_rate(value: Any) -> tuple[int, float]:
    """`100/s`, `20/m`, `5/10s` -> (count, window seconds)."""
    m = _RATE_RE.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a rate (examples: 100/s, 20/m, 5/10s)")
    count = int(m.group(1))
    window = float(m.group(2) or 1) * _DURATION_UNITS[m.group(3)]
    if count <= 0 or window <= 0:
        raise ValueError("a rate must be positive")
    return count, window


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option `word` most likely meant: the same in another case, or a near miss."""
    options = sorted(options)
    for option in options:
        if option.lower() == word.lower():
            return option
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.75)
    return match[0] if match else None


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            hint = closest(str(value), options) if isinstance(value, str) else None
            more = f" (did you mean {hint}?)" if hint else ""
            raise ValueError(f"{value!r} is not one of: {', '.join(options)}{more}")
        return str(value)

    return parse


def int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number from {lo} to {hi}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside {lo}..{hi}")
        return value

    return parse


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


# ---------------------------------------------------------------- secrets


def secret_hint(ref: Any) -> str:
    """How to write a secret reference, guessed from what was written instead (never echoed)."""
    if isinstance(ref, str):
        m = _SHELL_VAR_RE.match(ref.strip())
        if m:
            # YAML does not expand shell variables: "$TG_SECRET" is taken literally.
            return f"; write env:{m.group(1)} (YAML does not expand ${m.group(1)})"
    return ""


def resolve_secret(ref: Any, at: str, problems: Problems, environ: Mapping[str, str]) -> bytes:
    """Resolve `env:NAME` or `file:PATH`; surrounding whitespace is stripped."""
    if not isinstance(ref, str) or not ref.startswith(("env:", "file:")):
        # Never echo the value: it may be the secret pasted inline.
        problems.add(
            at, "secrets come only from env:NAME or file:PATH (inline values refused)" + secret_hint(ref)
        )
        return b""
    kind, _, name = ref.partition(":")
    if not name:
        problems.add(at, f"{kind}: needs a name")
        return b""
    if kind == "env":
        if name not in environ:
            problems.add(at, f"environment variable {name} is not set")
            return b""
        value = environ[name].encode("utf-8", "surrogateescape").strip()
    else:
        try:
            with open(name, "rb") as fh:
                value = fh.read().strip()
        except OSError as exc:
            problems.add(at, f"cannot read secret file {name}: {exc.strerror or exc}")
            return b""
    if not value:
        problems.add(at, f"secret from {ref} is empty")
    return value


# ---------------------------------------------------------------- structure


class Reader:
    """Typed access to one mapping of the raw YAML, reporting with locations."""

    def __init__(
        self,
        raw: Any,
        at: str,
        problems: Problems,
        keys: set[str],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.at = at
        self.problems = problems
        self.environ: Mapping[str, str] = environ if environ is not None else {}
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.add(at, f"expected a mapping, got {type(raw).__name__}")
            raw = {}
        self.raw: dict[str, Any] = raw
        self.misspelt: dict[str, str] = {}  # known key -> the unknown key that meant it
        for key in raw:
            if key not in keys:
                hint = closest(str(key), keys)
                if hint is not None and hint not in raw:
                    self.misspelt[hint] = str(key)
                problems.add(self.loc(str(key)), "unknown key" + (f" (did you mean {hint}?)" if hint else ""))

    def loc(self, key: str) -> str:
        return f"{self.at}.{key}" if self.at else key

    def has(self, key: str) -> bool:
        return key in self.raw

    def require(self, key: str, message: str = "is required") -> None:
        """Report a missing key, unless it is missing because it was misspelt (already said)."""
        if key not in self.misspelt:
            self.problems.add(self.loc(key), message)

    def get(
        self, key: str, parse: Callable[[Any], Any], default: Any = None, *, required: bool = False
    ) -> Any:
        if key not in self.raw:
            if required:
                self.require(key)
            return default
        try:
            return parse(self.raw[key])
        except (ValueError, TypeError) as exc:
            self.problems.add(self.loc(key), str(exc))
            return default

    def secret(self, key: str, *, required: bool = False) -> bytes | None:
        """An `env:` / `file:` reference under `key`, resolved (None when absent or broken)."""
        if key not in self.raw:
            if required:
                self.require(key, "is required (env:NAME or file:PATH)")
            return None
        before = len(self.problems)
        value = resolve_secret(self.raw[key], self.loc(key), self.problems, self.environ)
        return value if len(self.problems) == before else None

    def list(self, key: str) -> list[Any] | None:
        if key not in self.raw or self.raw[key] is None:
            return None
        value = self.raw[key]
        if not isinstance(value, list):
            self.problems.add(self.loc(key), "expected a list")
            return None
        return value
