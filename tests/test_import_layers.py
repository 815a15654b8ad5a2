"""The package layout is a stack: every module imports only its own package or the layers below it, at the top
of the file, and no modules import each other in a loop (read from the source, nothing is imported)."""

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentjax"

# Lowest first. A module may import its own package or any package of a lower rank; equal ranks are independent.
RANKS = {
    "util": 0,
    "configlib": 1, "perf": 1,
    "sharding": 2,
    "model": 3, "data": 3,
    "tools": 4,
    "tasks": 5,
    "world": 6, "train": 6,
    "agent": 7,
    "quickstart": 8, "aot": 8,
    "experiment": 9,
    "cli": 10,
}


@functools.lru_cache(maxsize=None)
def _modules() -> dict[str, ast.Module]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): ast.parse(p.read_text())
            for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST) -> list[str]:
    """The agentjax modules an import statement names (`from agentjax import sharding` names agentjax.sharding)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("agentjax")]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agentjax"):
        return [f"{node.module}.{a.name}" if node.module == "agentjax" else node.module for a in node.names]
    return []


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_every_package_has_a_rank():
    """A new top-level package must say where it sits in the stack."""
    assert {_layer(m) for m in _modules() if m != "agentjax"} <= set(RANKS)


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m != "agentjax"))
def test_imports_go_only_down_the_stack(module):
    """No upward or sideways import: a lower layer never knows a higher one, equal layers never know each other."""
    tree, here = _modules()[module], _layer(module)
    wrong = [f"line {node.lineno}: {target}" for node in ast.walk(tree) for target in _imported(node)
             if _layer(target) != here and RANKS[_layer(target)] >= RANKS[here]]
    assert not wrong, f"{module} imports upward or sideways: {wrong}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_are_at_the_top_unless_a_comment_says_why(module):
    """An import inside a function hides a dependency; the only accepted reason (keeping a heavy optional package
    off a light path) is written as a comment on the import line."""
    source = (PACKAGE.parent / (module.replace(".", "/") + ".py"))
    if not source.exists():
        source = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    lines = source.read_text().splitlines()
    hidden = [f"line {sub.lineno}: {lines[sub.lineno - 1].strip()}"
              for node in ast.walk(_modules()[module]) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))
              and "#" not in lines[sub.lineno - 1]]
    assert not hidden, f"{module} imports inside functions without a reason: {hidden}"


def test_no_import_loops():
    """The module graph is acyclic (a loop makes import order matter and hides which module owns what)."""
    graph = {m: {t for node in ast.walk(tree) for t in _imported(node) if t in _modules()}
             for m, tree in _modules().items()}
    done, on_path = set(), []

    def visit(m):
        if m in on_path:
            raise AssertionError("import loop: " + " -> ".join(on_path[on_path.index(m):] + [m]))
        if m in done:
            return
        on_path.append(m)
        for t in sorted(graph[m]):
            visit(t)
        on_path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
