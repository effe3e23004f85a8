"""The stores' one face: the registry lists each store once, each package exports its ``Store``, and nothing
outside ``projections/`` dispatches on a store's name (the import contract in pyproject.toml keeps their
packages out of reach; this keeps their names out of ``if``s)."""

from __future__ import annotations

import ast
import importlib

import pytest

from agentlog.projections.base.store import Store
from agentlog.projections.registry import NAMES, STORES, UnknownStore, store
from tests.conftest import ROOT

OUTSIDE = ("consumers", "producers", "deploy", "schemas")


def test_each_store_package_exports_the_store_the_registry_lists() -> None:
    assert len(set(NAMES)) == len(NAMES) == len(STORES)
    for each in STORES:
        package = importlib.import_module(f"agentlog.projections.{each.name}")
        assert package.STORE is each and isinstance(each, Store)
        assert store(each.name) is each
    with pytest.raises(UnknownStore, match="choose one of dashboard, search, analytics"):
        store("mongo")


def _dispatches(tree: ast.AST) -> list[int]:
    """Lines comparing something with a store's name (``name == "dashboard"``, ``"analytics" in own``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Constant) and side.value in NAMES for side in sides):
                lines.append(node.lineno)
    return lines


def test_nothing_outside_projections_dispatches_on_a_store_name() -> None:
    found = {f"{path.relative_to(ROOT)}:{line}"
             for folder in OUTSIDE for path in (ROOT / folder).rglob("*.py")
             for line in _dispatches(ast.parse(path.read_text(), str(path)))}
    assert not found, f"dispatch on a store's name outside projections/: {sorted(found)}"


def test_the_check_finds_a_dispatch() -> None:
    assert _dispatches(ast.parse('if name == "dashboard":\n    pass\nif "analytics" in own:\n    pass\n')) == [1, 3]
