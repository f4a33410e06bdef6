"""The allowed import directions between the project's packages (docs/architecture.md), checked
on every ``import`` in the source, those inside functions included."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OURS = ("worker", "tiling", "postprocessing", "models", "infra", "client", "benchmarks", "tests")

# Package (most specific prefix first) -> the packages of ours it may import, besides itself.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("tiling", ()),
    ("postprocessing", ("tiling",)),
    ("worker.contract", ("tiling", "worker.errors")),
    ("worker.errors", ()),
    ("worker.adapters", ("tiling", "worker")),  # the core's ports, errors and values
    ("worker.service", ("tiling", "postprocessing", "worker")),  # the composition root
    ("worker", ("tiling", "postprocessing", "worker")),  # but not worker.adapters: below
    ("models.bioimageio", ("tiling", "models.http")),
    ("models", ("tiling", "models")),
    ("infra", ("worker", "models.http", "models.synthetic", "tiling")),
    ("client", ("worker.contract", "tiling", "infra")),
    ("benchmarks", ("worker", "tiling", "postprocessing", "models", "infra", "client")),
]
# What a package must not import even though a broader rule above allows it.
FORBIDDEN: list[tuple[str, str]] = [
    ("worker", "worker.adapters"),  # the core works through worker.ports
]
EXEMPT_FROM_FORBIDDEN = ("worker.adapters", "worker.service")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_for(module: str) -> tuple[str, tuple[str, ...]]:
    for prefix, allowed in RULES:
        if within(module, prefix):
            return prefix, allowed
    raise AssertionError(f"{module} has no import rule")


def violations(module: str, imported: set[str]) -> list[str]:
    prefix, allowed = rule_for(module)
    bad = [
        name
        for name in imported
        if not within(name, prefix) and not any(within(name, ok) for ok in allowed)
    ]
    if not any(within(module, exempt) for exempt in EXEMPT_FROM_FORBIDDEN):
        bad += [
            name
            for owner, target in FORBIDDEN
            if within(module, owner)
            for name in imported
            if within(name, target)
        ]
    return sorted(set(bad))


SOURCES = sorted(
    path for package in OURS if package != "tests" for path in (ROOT / package).rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_allowed_directions(path: Path) -> None:
    module = module_name(path)
    assert violations(module, imports_of(path)) == [], f"{module} imports across a boundary"


def test_the_rules_catch_what_they_forbid() -> None:
    assert violations("worker.runner", {"worker.adapters.sqs"}) == ["worker.adapters.sqs"]
    assert violations("client.cli", {"worker.settings"}) == ["worker.settings"]
    assert violations("models.bioimageio.adapter", {"models.synthetic"}) == ["models.synthetic"]
    assert violations("benchmarks.tiles", {"tests.fakes"}) == ["tests.fakes"]
    assert violations("tiling.image", {"worker.errors"}) == ["worker.errors"]
    assert violations("worker.service", {"worker.adapters.sqs"}) == []


def test_no_cycle_between_top_level_packages() -> None:
    edges: dict[str, set[str]] = {}
    for path in SOURCES:
        source = module_name(path).split(".")[0]
        for name in imports_of(path):
            target = name.split(".")[0]
            if target != source:
                edges.setdefault(source, set()).add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, set()) - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    cycles = sorted(p for p in edges if reaches(p, p, set()))
    assert cycles == [], f"import cycles through {cycles}: {edges}"


MAX_MODULE_LINES = 350


def test_no_module_over_the_size_limit_outside_benchmarks() -> None:
    over = {
        str(path.relative_to(ROOT)): lines
        for package in OURS
        if package != "benchmarks"
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert over == {}, f"modules over {MAX_MODULE_LINES} lines: {over}"
