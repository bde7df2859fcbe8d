"""The house rules of docs/ARCHITECTURE.md, read from the code's own imports (AST, every import
statement, function-local and ``TYPE_CHECKING`` ones included).

- ``handlers`` → ``bot`` → ``state``, never back;
- ``state`` knows nothing of Slack or Microsoft;
- views and models import no I/O module (not even a type from ``state``);
- production code reaches ``bot.sandbox`` only from the demo;
- no import circles between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "handlers", "state")

# Libraries and modules that talk to the outside world (network, Redis, Slack, Microsoft).
IO_MODULES = (
    "state",
    "redis",
    "httpx",
    "aiohttp",
    "msal",
    "slack_sdk",
    "slack_bolt",
    "starlette",
    "uvicorn",
    "bot.app",
    "bot.jobs",
    "bot.session.service",
    "bot.microsoft.access",
    "bot.microsoft.discovery",
    "bot.microsoft.exchange",
    "bot.microsoft.graph",
    "bot.microsoft.identity",
    "bot.microsoft.tenants",
    "bot.sandbox",
)
SLACK_OR_MICROSOFT = ("slack_sdk", "slack_bolt", "msal", "httpx", "bot", "handlers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def production_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def _module_names() -> set[str]:
    return set(MODULES)


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every module an import statement in ``path`` names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = this.split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:  # ``from bot.web import pages`` names a module
                named = f"{base}.{alias.name}"
                yield node.lineno, named if named in _module_names() else base


MODULES = production_modules()


def edges() -> Iterator[tuple[str, int, str]]:
    for name, path in MODULES.items():
        for line, target in imports_of(path):
            yield name, line, target


def within(module: str, *prefixes: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def is_view_or_model(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf in {"views", "model", "pages", "blocks", "workflow"}


def test_the_rules_see_the_whole_house() -> None:
    """Guard against a vacuous pass: the walk finds the modules and their imports."""
    assert {"bot.app", "bot.workflow", "handlers", "state.sessions"} <= MODULES.keys()
    assert any(target == "state.sessions" for _, _, target in edges())
    assert sum(1 for name in MODULES if is_view_or_model(name)) >= 8


def test_dependencies_point_one_way() -> None:
    """handlers → bot → state: bot never imports handlers, state imports neither."""
    wrong = [
        f"{name}:{line} imports {target}"
        for name, line, target in edges()
        if (within(name, "bot") and within(target, "handlers"))
        or (within(name, "state") and within(target, *SLACK_OR_MICROSOFT))
    ]
    assert wrong == []


def test_views_and_models_do_no_io() -> None:
    wrong = [
        f"{name}:{line} imports {target}"
        for name, line, target in edges()
        if is_view_or_model(name) and within(target, *IO_MODULES)
    ]
    assert wrong == []


def test_only_the_demo_reaches_the_sandbox() -> None:
    wrong = [
        f"{name}:{line} imports {target}"
        for name, line, target in edges()
        if within(target, "bot.sandbox") and not within(name, "bot.sandbox") and name != "bot.demo"
    ]
    assert wrong == []


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, _, target in edges():
        if target in MODULES and target != name:
            graph[name].add(target)
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


@pytest.mark.parametrize(
    ("rule", "source", "target"),
    [
        ("bot→handlers", "bot.app", "handlers"),
        ("state→bot", "state.sessions", "bot.workflow"),
        ("view→state", "bot.session.views", "state.sessions"),
    ],
)
def test_the_rules_would_catch_a_wrong_edge(rule: str, source: str, target: str) -> None:
    """Each rule, fed one wrong edge, reports it (so the tests above cannot pass vacuously)."""
    caught = {
        "bot→handlers": within(source, "bot") and within(target, "handlers"),
        "state→bot": within(source, "state") and within(target, *SLACK_OR_MICROSOFT),
        "view→state": is_view_or_model(source) and within(target, *IO_MODULES),
    }
    assert caught[rule]
