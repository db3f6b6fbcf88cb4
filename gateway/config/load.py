"""Reading a config file: strict YAML (no duplicate keys), and every problem reported as
`file:line:column: location: message` from the YAML node it is about."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from gateway.config.build import build
from gateway.config.model import DEFAULT_CONFIG_PATH, Config
from gateway.reader import ConfigError

CONFIG_ENV = "WEBHOOK_GATEWAY_CONFIG"
_LAST_STEP_RE = re.compile(r"(\.[^.\[\]]+|\[\d+\])$")

# location -> (line, column), both 1-based, of the node a problem at that location is about
Marks = dict[str, tuple[int, int]]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _walk(node: yaml.Node, at: str, marks: Marks, keys: Marks, item: bool = False) -> None:
    """Record where each scalar value and list item starts and where each mapping key is."""
    if item or isinstance(node, yaml.ScalarNode):
        marks[at] = _pos(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            name = str(key_node.value)
            child = f"{at}.{name}" if at else name
            keys[child] = _pos(key_node.start_mark)
            _walk(value_node, child, marks, keys)
    elif isinstance(node, yaml.SequenceNode):
        for i, value_node in enumerate(node.value):
            _walk(value_node, f"{at}[{i}]", marks, keys, item=True)


def where(at: str, about_key: bool, marks: Marks, keys: Marks) -> tuple[int, int] | None:
    """The position a problem points at: the key of an unknown key, the value of a scalar, the
    key of a section; for a key that is missing, the nearest enclosing one."""
    if about_key and at in keys:
        return keys[at]
    if at in marks:
        return marks[at]
    path = at
    while path:
        if path in keys:
            return keys[path]
        if path in marks:
            return marks[path]
        path = _LAST_STEP_RE.sub("", path) if _LAST_STEP_RE.search(path) else ""
    return None


def parse_yaml_marked(text: str, name: str = "config") -> tuple[Any, Marks, Marks]:
    """-> (data, value marks, key marks); a syntax error is a ConfigError with its position."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{at}: invalid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    marks: Marks = {}
    keys: Marks = {}
    if node is not None:
        _walk(node, "", marks, keys)
    return data, marks, keys


def parse_yaml(text: str, name: str = "config") -> Any:
    return parse_yaml_marked(text, name)[0]


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None


def load(path: str, environ: Mapping[str, str] | None = None, warnings: list[str] | None = None) -> Config:
    """Read, parse and build `path`; problems and warnings carry `path:line:column`."""
    data = read_bytes(path)
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: config is not UTF-8"]) from None
    raw, marks, keys = parse_yaml_marked(decoded, path)
    found: list[str] = []
    try:
        config = build(raw, environ, source_path=path, warnings=found)
    except ConfigError as exc:
        raise ConfigError(
            [_located(path, at, msg, marks, keys) for at, msg in exc.found], exc.found
        ) from None
    if warnings is not None:
        for warning in found:
            at, _, message = warning.partition(": ")
            # A warning is about a key: point at the key, not its value.
            warnings.append(_located(path, at, message, marks, keys, about_key=True))
    return config


def _located(path: str, at: str, message: str, marks: Marks, keys: Marks, about_key: bool = False) -> str:
    pos = where(at, about_key or message.startswith("unknown key"), marks, keys)
    prefix = f"{path}:{pos[0]}:{pos[1]}" if pos else path
    return f"{prefix}: {at}: {message}" if at else f"{prefix}: {message}"


def default_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return explicit or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
