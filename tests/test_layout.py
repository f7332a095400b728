"""The layout a newcomer reads: every package says what it owns (and, at the top, what it may
import) and lists its public surface; the README's map and glossary match the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ["core", "storage", "queues", "models", "imaging", "microstructure", "webhooks",
       "submission", "api", "worker", "training", "cli", "benchmarks"]
README = (ROOT / "README.md").read_text()
#: The terms the issue asked the glossary to define, in the sense the code uses them.
GLOSSARY = ["tile", "halo", "stride", "core", "tile row", "row", "strip", "band",
            "row checkpoint", "label map", "pyramid level", "phase fraction"]


def packages() -> list[Path]:
    found = []
    for top in TOP:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            if "migrations" not in init.parts:
                found.append(init)
    return found


@pytest.mark.parametrize("init", packages(), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_every_package_says_what_it_owns_and_lists_its_surface(init):
    tree = ast.parse(init.read_text())
    doc = ast.get_docstring(tree) or ""
    assert len(doc.split()) >= 12, f"{init}: a one-paragraph docstring saying what it owns"
    names = [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
             if isinstance(t, ast.Name)]
    assert "__all__" in names, f"{init}: no __all__"
    if init.parent.parent == ROOT and init.parent.name not in ("cli", "benchmarks"):
        assert "May import" in doc, f"{init}: the docstring must say what it may import"


def test_readme_maps_every_top_level_package_to_a_folder_that_exists():
    mapped = set(re.findall(r"^\| `(\w+)/[\w/]*` \|", README, flags=re.MULTILINE))
    assert set(TOP) <= mapped, sorted(set(TOP) - mapped)
    paths = set(re.findall(r"`((?:" + "|".join(TOP) + r")/[\w./-]*)`", README))
    paths = {p for p in paths if not re.search(r"/[A-Z_]+(/|$)", p)}  # store keys: NAME/...
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, missing


def test_readme_glossary_defines_the_terms_the_code_uses():
    section = README.split("## Glossary", 1)[1].split("\n## ", 1)[0]
    defined = {m.lower() for m in re.findall(r"^\| ([^|]+?) \|", section, flags=re.MULTILINE)}
    assert set(GLOSSARY) <= defined, sorted(set(GLOSSARY) - defined)
