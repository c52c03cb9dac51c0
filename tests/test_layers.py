"""Structure (docs/architecture.md, "Layers"): no import cycles between the package's modules,
no module over 500 lines, at most 8 modules directly in ``zmq_ik/``. Reads the source with
`ast` only (imports nothing it checks), so it costs milliseconds."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("broker", "worker", "client", "ik")
"""Top-level folders installed as ``zmq_ik.<part>`` (zmq_ik/<part> links to them)."""
MAX_LINES = 500
MAX_TOP_MODULES = 8
LONG_ALLOWED = {
    "broker/_core.py": "the broker core: one socket-free state machine, read as a whole",
}


def package_modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the installed package."""
    found: dict[str, Path] = {}
    roots = [(ROOT / "zmq_ik", "zmq_ik")] + [(ROOT / p, f"zmq_ik.{p}") for p in PARTS]
    for folder, name in roots:
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[0] in PARTS and folder.name == "zmq_ik":
                continue  # the links; read through their own folders
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            found[".".join((name, *parts))] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in its source (function bodies too: an
    import deferred to break a cycle is still a cycle; not under ``if TYPE_CHECKING:``, which
    never runs), with the packages whose ``__init__`` such an import runs first (but
    ``zmq_ik`` and the module's own packages)."""
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in known else base)
    edges: set[str] = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]  # `import zmq_ik.x.y` of a name, not a module
        if not target.startswith("zmq_ik"):
            continue
        edges.add(target)
        parent = target.rpartition(".")[0]
        while parent not in ("", "zmq_ik") and not module.startswith(parent + "."):
            edges.add(parent)
            parent = parent.rpartition(".")[0]
    edges.discard(module)
    return edges


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    modules = package_modules()
    graph = {m: imports_of(m, p, set(modules)) for m, p in modules.items()}
    assert find_cycles(graph) == []


def test_cycle_finder_finds_one():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_long_modules():
    long = {}
    for path in package_modules().values():
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and rel not in LONG_ALLOWED:
            long[rel] = lines
    assert long == {}, f"split these by concern (at most {MAX_LINES} lines)"


def test_few_modules_at_the_top():
    top = sorted(p.name for p in (ROOT / "zmq_ik").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_the_cli_imports_neither_asyncio_nor_jax():
    """A worker's (and every command's) start: `zmq_ik` imports its clients and model on
    first use, and nothing the CLI imports up front imports asyncio (the async client,
    pyzmq's monitor and ZAP helpers) or JAX; the public names still resolve (and an unknown
    one is an AttributeError)."""
    import subprocess
    import sys

    code = (
        "import sys, zmq_ik.cli, zmq_ik\n"
        "early = [m for m in ('asyncio', 'jax', 'zmq_ik.client._async') if m in sys.modules]\n"
        "names = [getattr(zmq_ik, n) for n in zmq_ik.__all__]\n"
        "try:\n    zmq_ik.Nope\nexcept AttributeError:\n    print('ok', early)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok []", out.stdout + out.stderr
