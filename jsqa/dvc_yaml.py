"""``dvc.yaml`` from the stage table (:mod:`jsqa.stages`), and its check against the code.

* code deps are the modules a stage's CLI entry imports, found by static analysis
  (:func:`code_deps`), so a new import can never be forgotten in ``dvc.yaml``;
* params are listed by dotted key, and must be exactly the keys the entry's ``run`` reads
  (:func:`params_read`) less :data:`~jsqa.stages.EXECUTION_KEYS`, so a speed setting never
  re-runs a stage and a result setting always does.

``python -m jsqa.dvc_yaml --write`` / ``--check`` run :func:`write_dvc_yaml` / :func:`check_dvc_yaml`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import logging
import sys
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from jsqa.config import Params
from jsqa.errors import ConfigError
from jsqa.io import atomic_path
from jsqa.stages import DVC_YAML, EXECUTION_KEYS, REPO, STAGES, Stage

log = logging.getLogger(__name__)

PACKAGE = "jsqa"
HEADER = (
    "# The jsqa pipeline. GENERATED from jsqa/stages.py (the stage contract): edit the table there,\n"
    "# then run `python -m jsqa.dvc_yaml --write`; tests/test_stages.py fails when this file drifts.\n"
    "# Code deps are what each stage's CLI module imports; params are the exact keys that change\n"
    "# its result (execution settings such as workers, threads and device are left out).\n"
)


# --- code deps ------------------------------------------------------------------------------


def module_path(module: str, repo: Path = REPO) -> Path | None:
    """The file of a ``jsqa`` module (``x.py`` or ``x/__init__.py``), or None when there is none."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = repo.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(module: str, repo: Path = REPO) -> set[str]:
    """``jsqa`` modules that ``module``'s file imports, in any import statement anywhere in it.

    ``from jsqa.x import y`` names ``jsqa.x.y`` when ``y`` is a submodule, else ``jsqa.x``
    itself (its ``__init__``). Parent packages are not implied (see :func:`code_deps`).
    """
    path = module_path(module, repo)
    if path is None:
        raise ConfigError(f"{module}: no such module under {repo / PACKAGE}")
    stat = path.stat()
    return set(_imported_modules(module, path, repo, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1024)
def _imported_modules(module: str, path: Path, repo: Path, mtime_ns: int, size: int) -> frozenset[str]:
    """:func:`imported_modules`, cached per file version (a check walks each module many times)."""
    package = module if _is_package(path) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if alias.name != "*" and module_path(sub, repo) else base)
    return frozenset(m for m in found if module_path(m, repo) is not None)


def _from_base(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` statement imports from."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def code_deps(entry_module: str, repo: Path = REPO) -> list[str]:
    """Repo-relative ``.py`` files of ``entry_module`` and every ``jsqa`` module it imports, transitively.

    Static (``ast``): every import statement counts, at module level or inside functions, so
    the lazy imports inside a CLI ``run`` are seen. A package's ``__init__.py`` counts only when
    the package itself is imported (``import jsqa.models``, ``from jsqa.models import X``), not
    when one of its submodules is, although Python runs it then too. That is why package
    ``__init__`` files must stay free of logic (docstrings and re-exports only): a change there
    would not re-run the stages whose modules sit below it.
    """
    seen: set[str] = set()
    todo = [entry_module]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imported_modules(module, repo) - seen)
    paths = [module_path(m, repo) for m in seen]  # each found when it was imported
    return sorted(p.relative_to(repo).as_posix() for p in paths if p is not None)


# --- params ---------------------------------------------------------------------------------


def _fields(cls: type) -> dict[str, Any]:
    """A config dataclass's fields and their types (class variables such as ``_key`` are not keys)."""
    if not dataclasses.is_dataclass(cls):
        return {}
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def param_leaves(key: str) -> set[str]:
    """Every leaf key under a dotted ``key`` of :class:`Params` (itself when it is a leaf).

    A leaf is a field whose value is not a config dataclass (a dict-valued field is one leaf).
    """
    tp: Any = Params
    for part in key.split("."):
        hints = _fields(tp)
        if part not in hints:
            raise ConfigError(f"unknown params key '{key}'")
        tp = hints[part]
    return _leaves_of(tp, key)


def _leaves_of(tp: Any, prefix: str) -> set[str]:
    hints = _fields(tp)
    if not hints:
        return {prefix}
    out: set[str] = set()
    for name, sub in hints.items():
        out |= _leaves_of(sub, f"{prefix}.{name}" if prefix else name)
    return out


def _chain_key(chain: list[str]) -> str:
    """The params key an attribute chain on the params object ends in (methods past a leaf dropped)."""
    tp: Any = Params
    key: list[str] = []
    for name in chain:
        hints = _fields(tp)
        if not hints:
            break  # past a leaf: p.data.demo.mos_splits.items -> data.demo.mos_splits
        if name not in hints:
            raise ConfigError(f"params has no key '{'.'.join([*key, name])}'")
        key.append(name)
        tp = hints[name]
    return ".".join(key)


def _params_vars(func: ast.AST) -> set[str]:
    """Names bound to the params object in ``func``: ``x = params(args)`` or ``x: Params``."""
    names: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            callee = node.value.func
            if isinstance(callee, ast.Name) and callee.id in ("params", "load_params"):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.arg) and isinstance(node.annotation, (ast.Name, ast.Constant)):
            ann = node.annotation
            if getattr(ann, "id", None) == "Params" or getattr(ann, "value", None) == "Params":
                names.add(node.arg)
    return names


def _reads(func: ast.AST, names: set[str]) -> set[str]:
    """Leaf keys read through ``names`` in ``func``: longest attribute chains on them."""
    inner: set[int] = set()  # Attribute nodes that are the value of a longer chain
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner.add(id(node.value))
    keys: set[str] = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain: list[str] = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                chain.insert(0, cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in names:
                keys.add(_chain_key(chain))
    return keys


def params_read(entry_module: str, repo: Path = REPO) -> set[str]:
    """Leaf params keys the entry module's functions read from the params object.

    ``p.seed`` reads ``seed``; ``p.data.sample_rate`` reads ``data.sample_rate``; a section
    used whole (``p.pairs`` passed on) reads every leaf under it. Execution keys are included:
    callers subtract :data:`EXECUTION_KEYS`.
    """
    path = module_path(entry_module, repo)
    if path is None:
        raise ConfigError(f"{entry_module}: no such module under {repo / PACKAGE}")
    tree = ast.parse(path.read_text(), filename=str(path))
    keys: set[str] = set()
    for func in (n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        names = _params_vars(func)
        if names:
            keys |= _reads(func, names)
            if _bare_uses(func, names):
                keys.add("")  # the whole params object passed on: every key
    return set().union(*(param_leaves(k) if k else _leaves_of(Params, "") for k in keys))


def _bare_uses(func: ast.AST, names: set[str]) -> bool:
    """Whether the params object itself is used other than as the root of an attribute chain."""
    roots = {id(n.value) for n in ast.walk(func) if isinstance(n, ast.Attribute)}
    return any(
        isinstance(n, ast.Name) and n.id in names and isinstance(n.ctx, ast.Load) and id(n) not in roots
        for n in ast.walk(func)
    )


# --- dvc.yaml -------------------------------------------------------------------------------


def stage_deps(stage: Stage, repo: Path = REPO) -> list[str]:
    """The stage's DVC deps: its data inputs, then its code (imports and by-path files), sorted."""
    return [*stage.inputs, *sorted({*code_deps(stage.entry, repo), *stage.extra_code})]


def render_stage(stage: Stage, repo: Path = REPO) -> dict[str, Any]:
    """One stage's entry of ``dvc.yaml``."""
    out: dict[str, Any] = {"cmd": stage.cmd, "deps": stage_deps(stage, repo)}
    if stage.params:
        out["params"] = list(stage.params)
    for kind in ("outs", "metrics", "plots"):
        entries = getattr(stage, kind)
        if entries:
            out[kind] = [dict(e) if isinstance(e, Mapping) else e for e in entries]
    return out


def render_dvc_yaml(stages: Iterable[Stage] = STAGES, repo: Path = REPO) -> dict[str, Any]:
    """The ``dvc.yaml`` document the table describes."""
    return {"stages": {s.name: render_stage(s, repo) for s in stages}}


def render_dvc_yaml_text(stages: Iterable[Stage] = STAGES, repo: Path = REPO) -> str:
    """:func:`render_dvc_yaml` as the text of ``dvc.yaml``: the header, a blank line between stages."""
    body = yaml.safe_dump(render_dvc_yaml(stages, repo), sort_keys=False, width=100_000, indent=2)
    lines: list[str] = []
    for line in body.splitlines():
        is_stage = line.startswith("  ") and not line.startswith("   ")
        if is_stage and len(lines) > 1:
            lines.append("")
        lines.append(line)
    return HEADER + "\n".join(lines) + "\n"


def _listed_params(entries: Any) -> list[str]:
    """Params keys of a ``dvc.yaml`` stage: plain keys, or those under ``{params.yaml: [...]}``."""
    keys: list[str] = []
    for e in entries or []:
        if isinstance(e, str):
            keys.append(e)
        elif isinstance(e, Mapping):
            for file, sub in e.items():
                if file == "params.yaml":
                    keys.extend(sub or [])
    return keys


def _check_params(stage: Stage, listed: list[str], repo: Path) -> list[str]:
    problems: list[str] = []
    read = params_read(stage.entry, repo) - EXECUTION_KEYS
    covered: set[str] = set()
    for key in listed:
        try:
            leaves = param_leaves(key)
        except ConfigError:
            problems.append(f"{stage.name}: lists unknown params key {key}")
            continue
        covered |= leaves
        for ex in sorted(leaves & EXECUTION_KEYS):
            problems.append(f"{stage.name}: lists execution key {ex}" + (f" (under {key})" if ex != key else ""))
        unread = sorted(leaves - EXECUTION_KEYS - read)
        if unread and unread == sorted(leaves - EXECUTION_KEYS):
            problems.append(f"{stage.name}: lists params key {key}, which its code does not read")
        elif unread:
            problems.append(f"{stage.name}: lists params key {key}, whose {', '.join(unread)} its code does not read")
    problems += [f"{stage.name}: reads params key {k}, not listed" for k in sorted(read - covered)]
    return problems


def _check_deps(stage: Stage, deps: list[str], repo: Path) -> list[str]:
    problems: list[str] = []
    code = {*code_deps(stage.entry, repo), *stage.extra_code}
    problems += [
        f"{stage.name}: imports {m}, not among its deps" for m in sorted(code - set(deps)) if m not in stage.extra_code
    ]
    problems += [f"{stage.name}: loads {m}, not among its deps" for m in sorted(set(stage.extra_code) - set(deps))]
    problems += [f"{stage.name}: input {i} not among its deps" for i in stage.inputs if i not in deps]
    problems += [
        f"{stage.name}: dep {d} is neither an input nor code it imports"
        for d in deps
        if d not in code and d not in stage.inputs
    ]
    return problems


def check_dvc_yaml(doc: Mapping[str, Any], stages: Iterable[Stage] = STAGES, repo: Path = REPO) -> list[str]:
    """Human-readable problems of a loaded ``dvc.yaml`` against the table and the code; [] when none."""
    stages = tuple(stages)
    got = (doc or {}).get("stages") or {}
    problems = [f"{name}: stage not in jsqa/stages.py" for name in got if name not in {s.name for s in stages}]
    for stage in stages:
        entry = got.get(stage.name)
        if not isinstance(entry, Mapping):
            problems.append(f"{stage.name}: stage missing from dvc.yaml")
            continue
        want = render_stage(stage, repo)
        for field in ("cmd", "outs", "metrics", "plots"):
            if entry.get(field) != want.get(field):
                problems.append(
                    f"{stage.name}: {field} differs from the table: {entry.get(field)!r} != {want.get(field)!r}"
                )
        problems += _check_deps(stage, list(entry.get("deps") or []), repo)
        problems += _check_params(stage, _listed_params(entry.get("params")), repo)
    return problems


def write_dvc_yaml(path: Path = REPO / DVC_YAML) -> None:
    """Write the rendered ``dvc.yaml`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(render_dvc_yaml_text())
    log.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    """``python -m jsqa.dvc_yaml [--check|--write] [--file dvc.yaml]``: check (default) or regenerate."""
    ap = argparse.ArgumentParser(prog="python -m jsqa.dvc_yaml", description=(__doc__ or "").splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 listing differences (default)")
    mode.add_argument("--write", action="store_true", help="regenerate dvc.yaml from the table")
    ap.add_argument("--file", type=Path, default=REPO / DVC_YAML)
    args = ap.parse_args(argv)
    if args.write:
        write_dvc_yaml(args.file)
        print(f"wrote {args.file}")
        return 0
    text = args.file.read_text() if args.file.is_file() else ""
    problems = check_dvc_yaml(yaml.safe_load(text) or {})
    if text != render_dvc_yaml_text() and not problems:
        problems = ["dvc.yaml is not the rendering of jsqa/stages.py (deps order or formatting)"]
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(
            f"{args.file}: {len(problems)} problem(s); regenerate with `python -m jsqa.dvc_yaml --write`",
            file=sys.stderr,
        )
        return 1
    print(f"{args.file}: matches jsqa/stages.py and the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
