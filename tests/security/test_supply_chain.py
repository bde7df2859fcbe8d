"""Installs are reproducible and bounded: every dependency has an upper bound, the lock files pin
every package with hashes and agree with pyproject.toml, and test-only libraries stay out of the
runtime set."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TEST_ONLY = {"trustme", "pytest", "pytest-asyncio", "playwright", "ruff", "mypy"}


def pins(lock: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of every package the lock file pins."""
    text = (ROOT / lock).read_text()
    found: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", block)
        if head:
            found[canonicalize_name(head[1])] = (head[2], block.count("--hash=sha256:"))
    return found


def test_every_dependency_has_an_upper_bound() -> None:
    declared = [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["dev"]]
    assert len(declared) > 10
    unbounded = [
        spec
        for spec in declared
        if not any(s.operator in {"<", "<=", "==", "~="} for s in Requirement(spec).specifier)
    ]
    assert unbounded == []


def test_the_locks_pin_everything_with_hashes_and_satisfy_pyproject() -> None:
    for lock, groups in (
        ("requirements.lock", ["dependencies"]),
        ("requirements-dev.lock", ["dependencies", "dev"]),
    ):
        pinned = pins(lock)
        assert pinned, lock
        assert all(count > 0 for _, count in pinned.values()), lock
        for group in groups:
            specs = (
                PROJECT["dependencies"]
                if group == "dependencies"
                else PROJECT["optional-dependencies"]["dev"]
            )
            for spec in specs:
                requirement = Requirement(spec)
                name = canonicalize_name(requirement.name)
                assert name in pinned, f"{name} is not in {lock}"
                assert requirement.specifier.contains(pinned[name][0]), (lock, spec, pinned[name])


def test_test_only_libraries_are_not_runtime_dependencies() -> None:
    runtime = {canonicalize_name(Requirement(s).name) for s in PROJECT["dependencies"]}
    assert runtime.isdisjoint(TEST_ONLY)
    assert set(pins("requirements.lock")).isdisjoint(TEST_ONLY)
