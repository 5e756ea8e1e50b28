"""The package's import graph: module-level imports between sgrec_jax modules form no cycle
(type-only imports under `if TYPE_CHECKING:` count: they are edges a reader follows too)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sgrec_jax"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Absolute names of what `tree` imports outside function bodies: `import X` gives X,
    `from X import Y` gives X and X.Y (import_graph keeps the names that are modules)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            found.update(f"{base}.{alias.name}" for alias in node.names)
            found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: the sgrec_jax modules it imports at module level}."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        found = module_level_imports(ast.parse(path.read_text(), str(path)), name,
                                     path.name == "__init__.py")
        graph[name] = {n for n in found if n in paths and n != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_and_type_only_imports_are_edges():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from .generator import SidGenerator\n"
                     "def f():\n    import sgrec_jax.stages.rl\n")
    found = module_level_imports(tree, "sgrec_jax.models.registry", is_package=False)
    assert "sgrec_jax.models.generator" in found
    assert "sgrec_jax.stages.rl" not in found  # inside a function: not at import time


def test_the_package_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 100 and sum(map(len, graph.values())) > 200  # the scan sees the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
