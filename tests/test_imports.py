"""The project's import graph (dextr_core, ui, pages, app.py), read from the source with ``ast``.

Every import counts, at module level or inside a function (a deferred import is still a
dependency), except those under ``if TYPE_CHECKING:``. ``from package import name`` is an edge
to ``package.name`` when that is one of the project's modules, else to ``package``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Import cycles that exist on purpose until a named piece of work removes them. Any other cycle,
#: or a change of one of these, fails the test (remove an entry once its cycle is gone).
KNOWN_CYCLES: set[frozenset[str]] = set()
#: What pages may not import: they get sessions and views, never files or the raw store.
PAGES_MAY_NOT_IMPORT = ("dextr_core.store", "dextr_core.masks", "dextr_core.fileio")


def _module_files() -> dict[str, Path]:
    files = {"app": REPO / "app.py"}
    for package in ("dextr_core", "ui", "pages"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, modules) -> set[str]:
    """The project's modules that ``module`` imports (relative imports resolved)."""
    found: set[str] = set()

    def target(name: str) -> None:
        while name and name not in modules:  # "from pkg import NAME": the package itself
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                target(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports."""
    files = _module_files()
    return {module: _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)),
                             module, path.name == "__init__.py", files)
            for module, path in files.items()}


def _strong_components(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_project_has_no_import_cycles_but_the_known_ones():
    cycles = set(_strong_components(import_graph()))
    new = [sorted(c) for c in cycles - KNOWN_CYCLES]
    gone = [sorted(c) for c in KNOWN_CYCLES - cycles]
    assert not new, f"modules that import each other (break the cycle): {new}"
    assert not gone, f"a known cycle is gone or changed: update KNOWN_CYCLES: {gone}"


def test_pages_import_nothing_from_the_store_masks_or_fileio():
    graph = import_graph()
    bad = {page: sorted(t for t in targets
                        if any(t == f or t.startswith(f + ".") for f in PAGES_MAY_NOT_IMPORT))
           for page, targets in graph.items() if page.startswith("pages.")}
    assert graph.keys() >= {"pages.annotate", "pages.progress"}
    assert not any(bad.values()), f"pages that touch files or the raw store: {bad}"


def test_the_graph_sees_deferred_and_relative_imports_and_skips_type_checking():
    graph = import_graph()
    assert "dextr_core.store" in graph["dextr_core.session"]  # "from .store import" in a method
    assert "dextr_core.store.records" in graph["dextr_core.store.maintenance"]  # from .records
    assert "ui.resources" in graph["app"]  # "from ui import resources as state"
    # maintenance names the rules' Store for its type hints only (under TYPE_CHECKING)
    tree = ast.parse((REPO / "dextr_core/store/maintenance.py").read_text())
    hinted = [n for n in ast.walk(tree) if isinstance(n, ast.If) and _is_type_checking(n.test)]
    assert hinted and "rules" in ast.unparse(hinted[0])
    assert "dextr_core.store.rules" not in graph["dextr_core.store.maintenance"]
    # a cycle made on purpose is found
    graph["dextr_core.errors"] = graph["dextr_core.errors"] | {"dextr_core.config"}
    assert any({"dextr_core.errors", "dextr_core.config"} <= c for c in _strong_components(graph))


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        for target in graph.get(module, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


#: The modules that store documents; the claim rules must run over any of them.
STORE_BACKENDS = ("dextr_core.store.file_backend", "dextr_core.store.journal",
                  "dextr_core.store.postgres")


def test_the_store_rules_import_no_backend():
    graph = import_graph()
    for module in ("dextr_core.store.rules", "dextr_core.store.maintenance",
                   "dextr_core.store.imports", "dextr_core.store.backend"):
        reached = _reachable(graph, module)
        assert "dextr_core.store.records" in reached or module == "dextr_core.store.records"
        assert not reached & set(STORE_BACKENDS), (module, sorted(reached & set(STORE_BACKENDS)))
    # nor a storage library, directly or through any project module they import
    files = _module_files()
    for module in ("dextr_core.store.rules", *sorted(_reachable(graph, "dextr_core.store.rules"))):
        tree = ast.parse(files[module].read_text(encoding="utf-8"))
        names = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and not node.level}
        assert not names & {"tinydb", "psycopg", "psycopg_pool", "filelock"}, module


def test_importing_dextr_core_gives_its_names_without_keras_or_streamlit():
    code = ("import sys, dextr_core\n"
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch', 'streamlit')"
            " if m in sys.modules))\n"
            "print(sorted(n for n in dextr_core.__all__ if n not in vars(dextr_core)))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    heavy, lazy = done.stdout.splitlines()
    assert heavy == "[]"  # Keras comes with the network module, on first use
    assert lazy == "['build_dextr']"  # every other name is imported explicitly
