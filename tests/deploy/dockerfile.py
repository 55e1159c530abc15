"""A small Dockerfile reader for the tests: instructions (continuation lines joined, comments
dropped), grouped into build stages, with the exec-form (JSON) arguments decoded."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case, e.g. "RUN"
    value: str  # everything after the keyword, continuations joined
    line: int  # 1-based line of the keyword

    def exec_form(self) -> list[str]:
        """The arguments of an exec-form instruction (``["a", "b"]``), else shell words."""
        value = self.value.strip()
        if value.startswith("["):
            return list(json.loads(value))
        return shlex.split(value)


@dataclass
class Stage:
    base: str  # the FROM image (unexpanded)
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    global_args: dict[str, str]  # ARG name -> default, before the first FROM
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def args(self) -> dict[str, str]:
        """Every ARG with a default, in any stage (later ones win)."""
        out = dict(self.global_args)
        for stage in self.stages:
            for instruction in stage.all("ARG"):
                out.update(_arg(instruction.value))
        return out


def _arg(value: str) -> dict[str, str]:
    name, sep, default = value.strip().partition("=")
    return {name: default} if sep else {name: ""}


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile text."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(p for p in parts if p)
        keyword, _, value = joined.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip(), start))
        parts = []
    assert not parts, "the Dockerfile ends inside a continued line"
    return out


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", instruction.value, re.IGNORECASE)
            assert match, f"line {instruction.line}: unreadable FROM {instruction.value!r}"
            stages.append(Stage(match.group(1), match.group(2)))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: before any FROM"
            global_args.update(_arg(instruction.value))
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)
