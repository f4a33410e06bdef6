"""The deployment files and the readers their tests share.

The Dockerfile is read into its stages (instructions, inherited values, environment); the
settings check says whether variables given to the worker (compose, ConfigMap) are settings it
accepts.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent
ENV_PREFIX = "MODELRUNNER_"


@dataclass
class Stage:
    """One ``FROM`` of the Dockerfile and the instructions under it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        """Arguments of the last ``keyword`` instruction of this stage."""
        found = [args for key, args in self.instructions if key == keyword]
        return found[-1] if found else None

    def all(self, keyword: str) -> list[str]:
        """Arguments of every ``keyword`` instruction of this stage."""
        return [args for key, args in self.instructions if key == keyword]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


@cache
def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name (unnamed ones by index)."""
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, f"cannot read FROM {args}"
            current = Stage(base=match[1], name=match[2])
            result[match[2] or str(len(result))] = current
        elif current is not None:
            current.instructions.append((keyword, args))
        else:
            assert keyword == "ARG", f"{keyword} before the first FROM"
    return result


def stage_chain(name: str) -> list[Stage]:
    """The stage ``name`` and the stages it is built on, nearest first."""
    chain = [stages()[name]]
    while chain[-1].base in stages():
        chain.append(stages()[chain[-1].base])
    return chain


def inherited(name: str, keyword: str) -> str | None:
    """The value of ``keyword`` (USER, ENTRYPOINT, ...) stage ``name`` ends with."""
    for stage in stage_chain(name):
        value = stage.last(keyword)
        if value is not None:
            return value
    return None


def stage_env(name: str) -> dict[str, str]:
    """``ENV key=value`` settings in effect in stage ``name``."""
    env: dict[str, str] = {}
    for stage in reversed(stage_chain(name)):
        for args in stage.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) instruction argument."""
    value = yaml.safe_load(args)
    assert isinstance(value, list), f"not in exec form: {args}"
    return [str(part) for part in value]


def healthcheck_command(name: str) -> list[str]:
    """The exec-form command of the HEALTHCHECK stage ``name`` ends with."""
    args = inherited(name, "HEALTHCHECK")
    assert args is not None, f"stage {name} has no HEALTHCHECK"
    _options, _, command = args.partition("CMD ")
    return exec_form(command)


def assert_valid_settings(variables: dict[str, str], where: str) -> None:
    """Every MODELRUNNER_* variable names a Settings field and has a value it accepts."""
    fields = {}
    for name, value in variables.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name.removeprefix(ENV_PREFIX).lower()
        assert key in Settings.model_fields, f"{where}: {name} is not a setting"
        fields[key] = value
    Settings.model_validate(fields)
