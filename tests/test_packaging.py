"""setup.py ships every package of the source tree (a wheel holds only the listed ones)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_packages() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "packages":
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no packages= list")


def test_every_package_is_listed_in_setup_py():
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "metadip").rglob("__init__.py")
    }
    found.add("metadip.kernels")  # kernels/ ships as metadip.kernels
    assert (ROOT / "kernels" / "__init__.py").is_file()
    assert found == _setup_packages()
