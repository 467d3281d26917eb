"""Imports run one way between the packages of jsqa/ and flows/ (docs/architecture.md, "Layers").

Every import statement counts: module level, inside functions and under ``if TYPE_CHECKING``
(a type-only import still ties the two packages' designs together, so it gets no exemption).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jsqa.dvc_yaml import module_path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("jsqa", "flows")

# Top to bottom. A unit (a package of jsqa/, a top-level module of jsqa/, or flows) may import
# itself and the units of lower layers; units of one layer are independent of each other.
# "jsqa" is jsqa/__init__.py (the version).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("flows",),
    ("cli",),
    ("study", "sweep", "dvc_yaml"),
    ("stages",),
    ("registry", "train"),
    ("evaluation",),
    ("scoring",),
    ("pairs",),
    ("data",),
    ("models",),
    ("signal",),
    ("audio", "tracking"),
    ("config", "io"),
    ("errors", "mos_scale", "jsqa"),
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}

# What a package __init__.py may hold besides its docstring: dvc_yaml.code_deps counts an
# __init__ only when the package itself is imported, so logic there would go unseen.
_INIT_STATEMENTS = (ast.Import, ast.ImportFrom)


@dataclass(frozen=True)
class Edge:
    """One imported name: ``where`` (file:line) in module ``source`` imports ``name`` from ``target``."""

    where: str
    source: str
    target: str
    name: str | None


def unit(module: str) -> str | None:
    """The layering unit of a dotted module name; None outside jsqa and flows."""
    parts = module.split(".")
    if parts[0] == "flows":
        return "flows"
    if parts[0] != "jsqa":
        return None
    return parts[1] if len(parts) > 1 else "jsqa"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(root: Path) -> Iterator[Path]:
    for top in SOURCES:
        yield from sorted((root / top).rglob("*.py"))


def edges(root: Path) -> Iterator[Edge]:
    """Every import of a jsqa/flows module (or of a name from one) in the sources under ``root``."""
    for path in source_files(root):
        me = module_name(path, root)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        where = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in sorted(imports, key=lambda n: n.lineno):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Edge(f"{where}:{node.lineno}", me, alias.name, None)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # `from jsqa import tracking` imports the module jsqa.tracking, not a name.
                    if module_path(sub, root) is not None:
                        yield Edge(f"{where}:{node.lineno}", me, sub, None)
                    else:
                        yield Edge(f"{where}:{node.lineno}", me, base, alias.name)


def layer_violations(root: Path) -> list[str]:
    """Imports against LAYERS, and modules of units LAYERS does not place."""
    problems = [
        f"{p.relative_to(root)}: unit '{unit(module_name(p, root))}' is not in LAYERS"
        for p in source_files(root)
        if unit(module_name(p, root)) not in RANK
    ]
    for e in edges(root):
        src, dst = unit(e.source), unit(e.target)
        if dst is None or src == dst or src not in RANK:
            continue
        if dst not in RANK or RANK[dst] <= RANK[src]:
            problems.append(f"{e.where}: {src} -> {dst} ({e.target}{'.' + e.name if e.name else ''})")
    return problems


def private_imports(root: Path) -> list[str]:
    """Names with a leading underscore imported from another module."""
    return [
        f"{e.where}: {e.target}.{e.name}"
        for e in edges(root)
        if e.name and e.name.startswith("_") and not e.name.startswith("__") and e.target != e.source
    ]


def _is_constant(node: ast.stmt) -> bool:
    if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
        return False
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    try:
        ast.literal_eval(node.value)
    except ValueError:
        return False
    return all(isinstance(t, ast.Name) for t in targets)


def init_logic(root: Path) -> list[str]:
    """Statements in package __init__ files beyond a docstring, imports and literal constants."""
    problems = []
    for path in source_files(root):
        if path.name != "__init__.py":
            continue
        body = ast.parse(path.read_text()).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        problems += [
            f"{path.relative_to(root)}:{node.lineno}: {type(node).__name__}"
            for node in body
            if not isinstance(node, _INIT_STATEMENTS) and not _is_constant(node)
        ]
    return problems


def test_imports_follow_the_layers() -> None:
    problems = layer_violations(REPO)
    if problems:
        pytest.fail("imports against the layers (file:line: from -> to):\n" + "\n".join(problems), pytrace=False)


def test_no_private_names_imported_across_modules() -> None:
    problems = private_imports(REPO)
    if problems:
        pytest.fail("private names imported from another module:\n" + "\n".join(problems), pytrace=False)


def test_package_inits_hold_no_logic() -> None:
    problems = init_logic(REPO)
    if problems:
        pytest.fail("logic in package __init__ files:\n" + "\n".join(problems), pytrace=False)


def test_the_checks_see_every_kind_of_import(tmp_path: Path) -> None:
    """Function-local, TYPE_CHECKING, relative and `from package import module` imports all count."""
    files = {
        "jsqa/__init__.py": '"""doc."""\n__version__ = "1"\n',
        "jsqa/tracking.py": "",
        "jsqa/models/__init__.py": "from jsqa.models.mos import X\n__all__ = ['X']\n",
        "jsqa/models/mos.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from jsqa.scoring.windows import W\n"
            "def f():\n    from jsqa import cli\n"
            "from ..scoring import windows\n"
        ),
        "jsqa/scoring/__init__.py": "import os\nPATH = os.getcwd()\n",
        "jsqa/scoring/windows.py": "from jsqa.models.mos import _private\n",
        "jsqa/cli/__init__.py": "",
        "flows/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert layer_violations(tmp_path) == [
        "jsqa/models/mos.py:3: models -> scoring (jsqa.scoring.windows.W)",
        "jsqa/models/mos.py:5: models -> cli (jsqa.cli)",
        "jsqa/models/mos.py:6: models -> scoring (jsqa.scoring.windows)",
    ]
    assert private_imports(tmp_path) == ["jsqa/scoring/windows.py:1: jsqa.models.mos._private"]
    assert init_logic(tmp_path) == ["jsqa/scoring/__init__.py:2: Assign"]
