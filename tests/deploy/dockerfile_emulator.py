"""Runs a Dockerfile's steps without Docker, so a test exercises the very commands the image
build runs (and cannot drift from them).

Supported: FROM ... AS, ARG, ENV, WORKDIR, COPY (from the build context filtered by
.dockerignore, or --from an earlier stage at the same path), shell-form RUN, USER, EXPOSE,
ENTRYPOINT, CMD. Every absolute path of the image lives under `root`; ENV values that are
absolute paths are moved there too, so `"$VENV/bin/pip"` in a RUN step finds the emulated venv.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Instruction:
    cmd: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """(instructions before the first FROM, stages). Comments and line continuations handled."""
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = n
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        logical.append((start, " ".join(p for p in pending if p)))
        pending = []
    assert not pending, "Dockerfile ends inside a line continuation"
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for line, content in logical:
        cmd, _, args = content.partition(" ")
        inst = Instruction(cmd.upper(), args.strip(), line)
        if inst.cmd == "FROM":
            words = inst.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(inst)
        else:
            preamble.append(inst)
    return preamble, stages


def substitute(text: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


class DockerIgnore:
    """.dockerignore semantics: patterns in order, `!` re-includes, the last match wins, a path
    is matched by a pattern that matches it or one of its parent directories; `**` spans dirs."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out = ""
        for part in re.split(r"(\*\*/|\*\*)", pattern):
            if part == "**/":
                out += "(?:.*/)?"
            elif part == "**":
                out += ".*"
            else:
                out += (
                    fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z").replace(".*", "[^/]*")
                )
        return f"^{out}$"

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negate, rx in self.rules:
            if any(rx.match(c) for c in candidates):
                result = not negate
        return result


class Emulator:
    def __init__(self, dockerfile: Path, context: Path, root: Path) -> None:
        self.dockerfile = dockerfile
        self.context = context
        self.root = root
        self.preamble, self.stages = parse(dockerfile.read_text())
        ignore = context / ".dockerignore"
        self.ignore = DockerIgnore(ignore.read_text() if ignore.exists() else "")
        self.envs: dict[str, dict[str, str]] = {}
        self.users: dict[str, str] = {}
        self.workdirs: dict[str, str] = {}

    def host(self, image_path: str) -> Path:
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")

    def stage_name(self, i: int) -> str:
        i %= len(self.stages)
        return self.stages[i].name or str(i)

    def context_files(self, source: str) -> list[Path]:
        base = self.context / source
        assert base.exists(), f"COPY source {source} is not in the build context"
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        kept = [p for p in files if not self.ignore.excluded(p.relative_to(self.context).as_posix())]
        assert kept, f"COPY {source}: everything is excluded by .dockerignore"
        return kept

    def run_stage(self, i: int, base_env: dict[str, str], execute_run: bool = True) -> list[str]:
        """Run stage `i`; returns the RUN commands it did not execute (execute_run=False)."""
        stage = self.stages[i]
        env = dict(base_env)
        args = {a.args.split("=", 1)[0]: a.args.split("=", 1)[-1] for a in self.preamble if a.cmd == "ARG"}
        workdir = "/"
        skipped: list[str] = []
        for inst in stage.instructions:
            if inst.cmd == "ARG":
                name, _, default = inst.args.partition("=")
                args[name] = default
            elif inst.cmd == "ENV":
                before = {**args, **env}
                for token in shlex.split(inst.args):
                    key, sep, value = token.partition("=")
                    assert sep, f"line {inst.line}: use ENV KEY=VALUE"
                    if value.startswith("/"):
                        value = str(self.host(value))
                    env[key] = substitute(value, before)
            elif inst.cmd == "WORKDIR":
                workdir = substitute(inst.args, env)
                self.host(workdir).mkdir(parents=True, exist_ok=True)
            elif inst.cmd == "COPY":
                self._copy(inst, env, workdir)
            elif inst.cmd == "RUN":
                assert not inst.args.startswith("["), f"line {inst.line}: exec-form RUN is not emulated"
                if not execute_run:
                    skipped.append(inst.args)
                    continue
                subprocess.run(
                    ["/bin/sh", "-ec", inst.args],
                    cwd=self.host(workdir),
                    env=env,
                    check=True,
                    timeout=300,
                )
            elif inst.cmd == "USER":
                self.users[self.stage_name(i)] = inst.args
            elif inst.cmd in {"EXPOSE", "ENTRYPOINT", "CMD", "LABEL", "HEALTHCHECK", "STOPSIGNAL"}:
                pass
            else:
                raise AssertionError(f"line {inst.line}: {inst.cmd} is not emulated")
        self.envs[self.stage_name(i)] = env
        self.workdirs[self.stage_name(i)] = workdir
        return skipped

    def _copy(self, inst: Instruction, env: dict[str, str], workdir: str) -> None:
        words = [substitute(w, env) for w in shlex.split(inst.args)]
        flags = {w.split("=", 1)[0]: w.split("=", 1)[-1] for w in words if w.startswith("--")}
        *sources, dest = [w for w in words if not w.startswith("--")]
        if not dest.startswith("/"):
            dest = f"{workdir.rstrip('/')}/{dest}"
        if "--from" in flags:
            # A venv is not relocatable: what is copied between stages must keep its path.
            assert sources == [dest.rstrip("/")], f"line {inst.line}: COPY --from must keep the path"
            assert self.host(dest).exists(), f"line {inst.line}: {dest} was not built"
            return
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            base = self.context / source
            for f in self.context_files(source):
                if base.is_dir():
                    target = self.host(dest) / f.relative_to(base)
                elif into_dir:
                    target = self.host(dest) / f.name
                else:
                    target = self.host(dest)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)

    def exec_form(self, cmd: str, i: int = -1) -> list[str]:
        [inst] = [x for x in self.stages[i].instructions if x.cmd == cmd]
        value = json.loads(inst.args)
        assert isinstance(value, list), f"{cmd} must be in exec form"
        return [str(v) for v in value]
