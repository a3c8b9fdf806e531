"""The house's imports point one way: ir < compiler core < passes < pipeline/api < backends < runtime < evaluation
< apps (docs/architecture.md). Every import in the package, at module level or inside a function, is checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"ir": "snnc.ir", "compiler": "snnc.compiler", "passes": "snnc.passes", "backends": "snnc.backends",
            "runtime": "snnc.runtime", "evaluation": "snnc.evaluation", "apps": "snnc.apps",
            "training": "snnc.training"}
RANK = {"snnc.ir": 0, "snnc.compiler": 1, "snnc.passes": 2, "snnc.compiler.pipeline": 3, "snnc.compiler.api": 3,
        "snnc.backends": 4, "snnc.runtime": 5, "snnc.evaluation": 6, "snnc.training": 6, "snnc.apps": 7}


def rank(module: str) -> int:
    best = max((k for k in RANK if module == k or module.startswith(k + ".")), key=len)
    return RANK[best]


def modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((pkg,) + rel)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]  # `from pkg import module`
    mods = modules()
    return [(m, line) for m, line in found if m in mods]


def test_every_import_points_down():
    mods = modules()
    bad = []
    for name, path in sorted(mods.items()):
        for target, line in imports(name, path):
            if rank(target) > rank(name):
                bad.append(f"{path.relative_to(ROOT)}:{line} {name} (layer {rank(name)}) imports {target} "
                           f"(layer {rank(target)})")
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_passes_never_import_each_other():
    mods = modules()
    bad = [f"{name} imports {target}" for name, path in mods.items() if name.startswith("snnc.passes.")
           for target, _ in imports(name, path) if target.startswith("snnc.passes.") and target != name]
    assert not bad, bad


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_every_module_parses_and_is_reachable(folder):
    assert any(n.startswith(PACKAGES[folder]) for n in modules())
