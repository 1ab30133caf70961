"""The four layers, enforced: building blocks (``pgtm/``) <- model/guide (``models/`` =
``pgtm.models``) <- inference (``inference/`` = ``pgtm.inference``) <- application (the CLI,
the experiment runner, pictures). A module never imports from a higher layer, not even inside a
function, and never imports a private name (``_x``) from another package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the application layer's modules (everything else in ``pgtm/`` is a building block)
APPLICATION = ("pgtm.cli", "pgtm.commands", "pgtm.__main__", "pgtm.experiment", "pgtm.plotting",
               "pgtm.preview", "pgtm.allocator")
LAYER_NAMES = ("building blocks", "model/guide", "inference", "application")


def layer(module: str) -> int:
    """0 building blocks, 1 model/guide, 2 inference, 3 application."""
    if any(module == m or module.startswith(m + ".") for m in APPLICATION):
        return 3
    if module.startswith("pgtm.inference"):
        return 2
    if module.startswith("pgtm.models"):
        return 1
    return 0


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("models", "inference"):  # installed as pgtm.models / pgtm.inference
        parts.insert(0, "pgtm")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every ``(module, names, line)`` that ``path`` imports, inside functions too."""
    module = module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return found


def violations(path: Path) -> list[str]:
    module, problems = module_of(path), []
    for target, names, line in imports(path):
        if not target.startswith("pgtm"):
            continue
        where = f"{path.relative_to(ROOT)}:{line}: {module}"
        if layer(target) > layer(module):
            problems.append(f"{where} ({LAYER_NAMES[layer(module)]}) imports {target} "
                            f"({LAYER_NAMES[layer(target)]})")
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        if private and target.rpartition(".")[0] != module.rpartition(".")[0]:
            problems.append(f"{where} imports the private {private} of {target}")
    return problems


SOURCES = sorted(p for d in ("pgtm", "models", "inference") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_or_private_import(path):
    assert violations(path) == []


@pytest.mark.parametrize("planted, message", [
    ("def f():\n    from pgtm.inference.train import train\n", "imports pgtm.inference.train"),
    ("from pgtm.plotting import save_sequences\n", "(application)"),
    ("from ..models import GTM\n", "imports pgtm.models"),
])
def test_a_planted_upward_import_fails(monkeypatch, planted, message):
    block = ROOT / "pgtm" / "memories" / "planted_for_the_test.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: planted
                        if self == block else Path.open(self).read())
    problems = violations(block)
    assert problems and message in problems[0]


def test_a_private_name_from_another_package_fails(monkeypatch):
    block = ROOT / "inference" / "planted_for_the_test.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "from pgtm.data import _x\n"
                        if self == block else Path.open(self).read())
    assert "imports the private ['_x'] of pgtm.data" in violations(block)[0]
