"""The package's layer order holds: every import points down it, and no two modules import each other.

The order (docs/architecture.md has the picture and the reasons):

    cli → studio → jobs → pipeline → deploy → monitor → evaluate → train → data → rag → model → lm → root

A module may import its own layer and any layer below; never one above, and never in a circle
(file level, whatever the layer). Imports inside functions count the same as those at the top
of a file: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ORDER = [
    "cli",
    "studio",
    "jobs",
    "pipeline",
    "deploy",
    "monitor",
    "evaluate",
    "train",
    "data",
    "rag",
    "model",
    "lm",
    "root",
]
# the contract every layer may use; a new top-level module must be placed here deliberately
ROOT = {"tuneforge", "errors", "config", "io", "dist", "gates", "recipe", "run", "registry", "assets"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "tuneforge"
    if top in ROOT:
        return "root"
    assert top in ORDER, f"{module}: top-level module {top!r} has no layer — add it to ORDER or ROOT"
    return top


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported tuneforge module, line) for every import in the file, nested ones included."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "tuneforge"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tuneforge":
                continue
            for a in node.names:  # `from pkg import submodule` depends on the submodule
                sub = f"{target}.{a.name}"
                is_module = (SRC / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    SRC / sub.replace(".", "/")
                ).is_dir()
                out.append((sub if is_module else target, node.lineno))
    return out


def graph() -> dict[str, list[tuple[str, int]]]:
    return {module_name(p): imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_import_points_down_the_layer_order():
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = [
        f"{src} (line {line}, layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, deps in graph().items()
        for dst, line in deps
        if rank[layer(dst)] < rank[layer(src)]
    ]
    assert not upward, "imports that point up the layer order:\n  " + "\n  ".join(upward)


def test_no_module_imports_itself_in_a_circle():
    g = {src: {dst for dst, _ in deps if dst != src} for src, deps in graph().items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:  # depth-first: a back edge closes a circle
        state[node] = "open"
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n  " + "\n  ".join(cycles)


def test_the_check_sees_nested_and_relative_imports(tmp_path, monkeypatch):
    """The parser itself: a function-level relative import of a submodule is an edge."""
    pkg = tmp_path / "tuneforge" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "tuneforge" / "__init__.py").write_text("")
    (tmp_path / "tuneforge" / "train").mkdir()
    (tmp_path / "tuneforge" / "train" / "fit.py").write_text("")
    (pkg / "x.py").write_text("def f():\n    from ..train import fit\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    assert imports(pkg / "x.py") == [("tuneforge.train.fit", 2)]
