"""The policy core stays pure: no module under engine/policy imports IO, clocks or globals
of randomness (asyncio, simpy, sqlite3, duckdb, time, random), even under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"asyncio", "simpy", "sqlite3", "duckdb", "time", "random"}
POLICY = Path(__file__).resolve().parents[2] / "engine" / "policy"


def forbidden_imports(source: str) -> list[str]:
    """Top-level names of forbidden modules imported anywhere in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.extend(n for n in names if n.split(".")[0] in FORBIDDEN)
    return found


def test_checker_catches_each_form() -> None:
    assert forbidden_imports("import time") == ["time"]
    assert forbidden_imports("from random import Random") == ["random"]
    assert forbidden_imports("if X:\n    import asyncio.events") == ["asyncio.events"]
    assert forbidden_imports("import timeit, math") == []


MODULES = sorted(POLICY.rglob("*.py"))


def test_policy_has_modules() -> None:
    assert len(MODULES) >= 9


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_is_pure(path: Path) -> None:
    assert forbidden_imports(path.read_text()) == [], f"{path} imports a forbidden module"
