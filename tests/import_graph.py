"""The package's import graph, read from the AST: modules, levels, upward edges and cycles.

    python -m tests.import_graph            # the table, then the upward edges and cycles (none, when all is well)

An edge A -> B says a module A imports B, at module level or inside a function (an import moved into a function
to dodge a cycle is still an edge, so it still shows the cycle). A module's level is 1 + the highest level of what
it imports (a module that imports none of the package is level 1). Its layer is where it stands in the layout:
``shared`` (the modules at the package's top, which both sides read), then ``train``, ``analysis`` and ``interop``
(the sides), then ``config`` (the one module that turns a Hydra config into either side's job). An upward edge runs
from a lower layer to a higher one: a shared module that imports a side.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sae_sweep"
SIDES = ("train", "analysis", "interop")
LAYER = {"shared": 0, **dict.fromkeys(SIDES, 1), "config": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, known: set[str]) -> set[str]:
    """The package's modules an import statement names (``from pkg import mod`` names ``pkg.mod`` when it is one)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        subs = {f"{node.module}.{a.name}" for a in node.names} & known
        return subs or ({node.module} & known)
    return set()


def edges() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at any depth of its code; a package's ``__init__`` is not an
    import of its parent."""
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            found |= _imported(node, known)
        graph[name] = found - {name, "sae_sweep"}
    return graph


def layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 2 and parts[1] in SIDES or (len(parts) == 2 and parts[1] in SIDES):
        return parts[1]
    return "config" if name in ("sae_sweep.config", "sae_sweep.sweep_check") else "shared"  # configs into jobs


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, bs in graph.items() for b in bs if LAYER[layer(a)] < LAYER[layer(b)])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """1 + the highest level of what a module imports; a module in a cycle, or above one, has none."""
    in_cycle = {m for c in cycles(graph) for m in c}
    out: dict[str, int | None] = {}

    def level(m: str) -> int | None:
        if m not in out:
            below = [level(n) for n in sorted(graph[m])] if m not in in_cycle else [None]
            out[m] = None if None in below else 1 + max(below, default=0)
        return out[m]

    for m in sorted(graph):
        level(m)
    return {m: v for m, v in out.items() if v is not None}


def main() -> None:
    graph = edges()
    lv = levels(graph)
    for m in sorted(graph, key=lambda m: (-lv.get(m, 0), m)):
        print(f"{lv.get(m, '-')!s:>3}  {layer(m):<8}  {m}  -> {', '.join(sorted(graph[m])) or '(none)'}")
    print(f"\n{len(graph)} modules, {sum(len(v) for v in graph.values())} edges")
    print("upward edges:", upward(graph) or "none")
    print("cycles:", cycles(graph) or "none")


if __name__ == "__main__":
    main()
