"""Habits of the code base that no other test would catch."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_imports_another_modules_private_names():
    """A `_name` is its module's own business: importing it from elsewhere couples the two behind
    their interfaces (make it public, with a docstring saying why others need it)."""
    found = []
    for path in sorted([*ROOT.glob("ecad/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("ecad", "diffusers"):
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert not found, found


def test_the_readmes_layout_section_matches_the_tree():
    """Every path the Layout section names exists, and every module of the package is named there
    (directly or through its folder)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = [line.split()[0] for line in block.splitlines() if line.strip() and not line.startswith(" ")]
    assert named and all((ROOT / n).exists() for n in named), [n for n in named if not (ROOT / n).exists()]
    folders = tuple(n for n in named if n.endswith("/"))
    modules = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "ecad").glob("**/*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts and p.name != "__main__.py"
    ]
    missing = [m for m in modules if m not in named and not m.startswith(folders)]
    assert not missing, missing
