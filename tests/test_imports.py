"""The import layers: ``ftn_core`` (no MLflow, no Optuna, neither of the packages above it) ←
``ablations`` (runs and the MLflow store; never ``reports``) ← ``reports`` (reads the store), and
no import loop among the project's modules. Every import statement counts: at module level, in a
function, under ``TYPE_CHECKING``. Read from the source (AST), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ftn_core", "ablations", "reports")


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name → file, for every .py under ``root/<package>/``."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path) -> set[str]:
    """The absolute names one module's import statements ask for: ``import a.b`` gives ``a.b``,
    ``from a import b`` gives ``a.b`` (``b`` a module or a name in ``a``); relative imports are
    made absolute."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            out.update(
                source if alias.name == "*" else f"{source}.{alias.name}" for alias in node.names
            )
    return out


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the project modules it imports: each imported name taken to its longest prefix
    that is a module (``from a import b``: ``a.b`` when that is a module, else ``a``)."""
    mods = modules(root, packages)
    graph = {}
    for name, path in mods.items():
        edges = set()
        for target in imported(name, path):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def forbidden(root: Path, package: str, banned: set[str]) -> dict[str, set[str]]:
    """Modules of ``package`` → the banned top-level packages they import."""
    found = {}
    for name, path in modules(root, (package,)).items():
        hits = {n.split(".")[0] for n in imported(name, path)} & banned
        if hits:
            found[name] = hits
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import loop as ``[a, b, …, a]`` (depth-first search, nodes and edges in sorted order),
    or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _listing(found: dict[str, set[str]]) -> str:
    return "; ".join(f"{m} imports {', '.join(sorted(n))}" for m, n in sorted(found.items()))


def test_ftn_core_imports_no_mlflow_optuna_ablations_or_reports():
    found = forbidden(REPO, "ftn_core", {"mlflow", "optuna", "ablations", "reports"})
    assert not found, _listing(found)


def test_ablations_never_imports_reports():
    found = forbidden(REPO, "ablations", {"reports"})
    assert not found, _listing(found)


def test_reports_only_read_no_report_module_loads_torch():
    """Reports read what runs measured (efficiency.json, figure_data.npz): no file under
    reports/ imports torch, and building a report does not load it through another module."""
    import subprocess
    import sys

    found = forbidden(REPO, "reports", {"torch", "torchvision"})
    assert not found, _listing(found)
    code = (
        "import sys; import reports.build, reports.index, reports.visual; "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_no_import_loop_among_the_projects_modules():
    graph = import_graph(REPO)
    assert {"ftn_core.model", "ablations.runner", "reports.build"} <= set(graph)  # it read the tree
    assert "ftn_core.data.readers" in graph["ftn_core.data.splits"]
    cycle = find_cycle(graph)
    assert cycle is None, "import loop: " + " → ".join(cycle or [])


def test_find_cycle_on_known_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"d": {"a"}, "a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    assert find_cycle({}) is None


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_checks_catch_planted_violations(tmp_path):
    """A tree with one violation of each kind, each hidden where a top-of-file check misses it:
    MLflow in a function, reports under TYPE_CHECKING, a loop through a relative import."""
    _write(
        tmp_path,
        {
            "ftn_core/__init__.py": "",
            "ftn_core/core.py": "import os\n\ndef f():\n    import mlflow.pytorch\n",
            "ftn_core/clean.py": "from ftn_core import core\n",
            "ablations/__init__.py": "",
            "ablations/run.py": (
                "from typing import TYPE_CHECKING\nfrom ftn_core.core import f\n"
                "if TYPE_CHECKING:\n    from reports.page import Page\n"
            ),
            "reports/__init__.py": "",
            "reports/page.py": "from . import table\nfrom ablations import run\n",
            "reports/table.py": "def g():\n    from .page import Page\n",
        },
    )
    assert forbidden(tmp_path, "ftn_core", {"mlflow", "optuna", "ablations", "reports"}) == {
        "ftn_core.core": {"mlflow"}
    }
    assert forbidden(tmp_path, "ablations", {"reports"}) == {"ablations.run": {"reports"}}
    graph = import_graph(tmp_path)
    assert graph == {
        "ftn_core": set(),
        "ftn_core.core": set(),
        "ftn_core.clean": {"ftn_core.core"},
        "ablations": set(),
        "ablations.run": {"ftn_core.core", "reports.page"},
        "reports": set(),
        "reports.page": {"reports.table", "ablations.run"},
        "reports.table": {"reports.page"},
    }
    assert find_cycle(graph) == ["ablations.run", "reports.page", "ablations.run"]

    _write(
        tmp_path,
        {
            "ablations/run.py": "from ftn_core.core import f\n",
            "reports/table.py": "def g():\n    pass\n",
        },
    )
    assert forbidden(tmp_path, "ablations", {"reports"}) == {}
    assert find_cycle(import_graph(tmp_path)) is None


def path_edits(root: Path, folders: tuple[str, ...]) -> list[str]:
    """``file:line`` of every ``sys.path.insert`` / ``sys.path.append`` under ``folders``."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                func = node.func if isinstance(node, ast.Call) else None
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr in ("insert", "append")
                    and ast.unparse(func.value) == "sys.path"
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_script_edits_sys_path():
    """The packages are installed (``make venv``: ``pip install -e``), so a script run as
    ``python ablations/run.py`` finds them from any folder without a ``sys.path.insert``."""
    found = path_edits(REPO, (*PACKAGES, "benchmarks"))
    assert not found, f"sys.path edited in {', '.join(found)}"


def test_path_edits_are_found(tmp_path):
    _write(
        tmp_path,
        {
            "ablations/x.py": "import sys\n\ndef f():\n    sys.path.insert(0, '.')\n",
            "ablations/y.py": "import sys\npath = list(sys.path)\nsys.path[:] = path\n",
        },
    )
    assert path_edits(tmp_path, ("ablations",)) == ["ablations/x.py:4"]
