"""The code's own imports (read with `ast`, function-level imports included) form no circle, and the rooms
import one way: methods and evaluators know nothing of the search, the search spaces nothing of samplers
or studies, persistence nothing of the study domain."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOTS = {"tuner": "tuner", "search_spaces": "tuner.search_spaces", "evaluators": "tuner.evaluators"}
# room -> rooms it must not import (prefixes of module names)
FORBIDDEN = {
    "tuner.methods": ("tuner.search_spaces", "tuner.samplers", "tuner.study", "tuner.storage", "tuner.commands",
                      "tuner.evaluators", "tuner.scoring"),
    "tuner.evaluators": ("tuner.search_spaces", "tuner.samplers", "tuner.study", "tuner.storage", "tuner.commands",
                         "tuner.methods"),
    "tuner.search_spaces": ("tuner.samplers", "tuner.study", "tuner.storage", "tuner.commands", "tuner.evaluators"),
    "tuner.samplers": ("tuner.study", "tuner.commands"),
    "tuner.storage": ("tuner.study", "tuner.commands", "tuner.search_spaces", "tuner.methods"),
    "tuner.study": ("tuner.commands",),
    "tuner.report": ("tuner.commands",),  # the report reads studies; commands call it, never the reverse
}


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in ROOTS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package,) + tuple(p for p in rel if p != "__init__"))
            out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        for old in ("search_spaces", "evaluators"):
            if name == old or name.startswith(old + "."):
                name = "tuner." + name
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for m, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                r = resolve(t)
                if r and r != m and not m.startswith(r + "."):  # a package's own __init__ is not an edge
                    graph[m].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert len(graph) > 50 and graph["tuner.study.runner"]  # the walk found the code and its imports
    assert cycles(graph) == []


def test_a_circle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_rooms_import_one_way():
    wrong = [f"{m} imports {t}" for m, targets in import_graph().items() for t in targets
             for room, banned in FORBIDDEN.items() if (m == room or m.startswith(room + "."))
             and any(t == b or t.startswith(b + ".") for b in banned)]
    assert wrong == []
