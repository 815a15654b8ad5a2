"""What `pip install .` (the README's first command, no test extra) puts on a machine is enough to import every
module: each source directory is a regular package (setuptools' package discovery skips folders without an
`__init__.py`, so a wheel would lack them), and every third-party module agentjax imports is a core dependency."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "agentjax"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_source_directory_is_a_regular_package():
    """A folder of modules without `__init__.py` imports from a checkout but is left out of a built wheel."""
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert not sorted(str(f.relative_to(PACKAGE)) for f in folders if not (f / "__init__.py").exists())


def test_every_third_party_import_is_a_core_dependency():
    """A module imported only under a test extra (safetensors once was) breaks the main job on a fresh install."""
    core = {_normal(re.split(r"[<>=!~\[; ]", r)[0]) for r in importlib.metadata.requires("agentjax")
            if "extra ==" not in r}
    owners = importlib.metadata.packages_distributions()
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            imported |= {(n.split(".")[0], path.relative_to(PACKAGE.parent).as_posix()) for n in names}
    undeclared = sorted(f"{path}: {top}" for top, path in imported
                        if top not in sys.stdlib_module_names and top != "agentjax"
                        and not {_normal(d) for d in owners.get(top, [top])} & core)
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"
