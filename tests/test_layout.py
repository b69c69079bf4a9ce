"""layout.py owns every path of the data, experiment, model, package and evaluation trees: no other
module of voxadapt/ spells a file or directory name that layout.py joins onto a directory."""

from __future__ import annotations

import ast

from helpers import ROOT

from voxadapt import layout

PACKAGE = ROOT / "voxadapt"


def owned_names() -> set[str]:
    """The names layout.py joins onto a directory (`root / "name"`, `Under("name")`), and its file-name
    constants."""
    names = {layout.CUTS, *layout.MANIFEST_FILES}
    for node in ast.walk(ast.parse((PACKAGE / "layout.py").read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            names.add(node.right.value)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Under":
            names.update(arg.value for arg in node.args if isinstance(arg, ast.Constant))
    return names


def spelled(tree: ast.AST, owned: set[str]) -> list[tuple[int, str]]:
    """A file name layout.py owns as any string, a directory name it owns joined onto a path."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in owned:
            hits.append((node.lineno, node.right.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value.strip(".") \
                and node.value in owned:
            hits.append((node.lineno, node.value))
    return sorted(set(hits))


def test_no_module_but_layout_spells_the_names_it_owns():
    owned = owned_names()
    assert {"model.safetensors", "summary.json", "checkpoints", "mean.vec", "xvector.scp"} <= owned
    found = [f"{path.relative_to(ROOT)}:{line}: {name!r}" for path in sorted(PACKAGE.rglob("*.py"))
             if path.name != "layout.py" for line, name in spelled(ast.parse(path.read_text()), owned)]
    assert not found, "spell these through voxadapt/layout.py:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for():
    owned = {"mean.vec", "checkpoints"}
    code = 'a = d / "checkpoints"\nb = "mean.vec"\nc = {"checkpoints": 1}\nd = "mean.vec.bak"\n'
    assert spelled(ast.parse(code), owned) == [(1, "checkpoints"), (2, "mean.vec")]
