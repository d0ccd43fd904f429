"""The layering rules of docs/architecture.md, checked over every import (function-level too).

The import-linter contracts live in pyproject.toml (``[tool.importlinter]``); this test runs
them and adds what import-linter does not check directly: no module-level import cycles
anywhere in our packages. Imports under ``if TYPE_CHECKING:`` do not count: they never run.
"""

from __future__ import annotations

import tomllib

import grimp
import pytest
from importlinter.cli import lint_imports

from tests.support import REPO_ROOT

PACKAGES = tuple(
    tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "root_packages"
    ]
)


def test_the_import_linter_contracts_hold(monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    exit_code = lint_imports(config_filename="pyproject.toml", no_cache=True)
    assert exit_code == 0, capsys.readouterr().out[-4000:]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


@pytest.fixture(scope="module")
def import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    return {
        module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules
    }


def test_no_import_cycles(import_graph):
    cycles = _strongly_connected(import_graph)
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_check_finds_a_cycle():
    """The checker itself: a planted two-module cycle and a three-module ring are found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(_strongly_connected(graph)) == [["a", "b"], ["c", "d", "e"]]
