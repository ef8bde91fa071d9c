"""The package a maintainer can hold in their head: every import points down (no circles, counting
the imports inside functions too), no module above ~500 lines, and ``fit`` on one screen."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cnn_book"
MAX_MODULE_LINES = 500
MAX_FIT_LINES = 90


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``: code that runs as a program, not on import."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and getattr(node.test.left, "id", None) == "__name__")


def _imports(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package's modules that ``mod`` imports anywhere (at the top or inside a function)."""
    out: set[str] = set()
    stack = [ast.parse(path.read_text())]
    while stack:
        node = stack.pop()
        if _is_main_guard(node):
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
            base = base[: len(base) - node.level + 1] if node.level else []
            pkg = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in mods else pkg for a in node.names]
        else:
            continue
        for t in targets:
            while t not in mods and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in mods and t != mod:
                out.add(t)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_import_points_down():
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    assert graph["cnn_book.train"] and "cnn_book.recipes" not in graph["cnn_book.train"]
    assert not any(m.startswith("cnn_book.models") for d in ("cnn_book.data", "cnn_book.text")
                   for k, deps in graph.items() if k.startswith(d) and not k.endswith("__main__") for m in deps)
    assert _cycles(graph) == []


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_above_500_lines():
    long = {p.relative_to(PACKAGE.parent).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def _logical_lines(path: Path, name: str) -> int:
    """Lines of function ``name`` in ``path`` that are neither blank nor comments (the docstring counts)."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    lines = path.read_text().splitlines()[fn.lineno - 1 : fn.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_fit_reads_as_the_loop_on_one_screen():
    assert _logical_lines(PACKAGE / "train.py", "fit") <= MAX_FIT_LINES
