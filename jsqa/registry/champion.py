"""Who is champion: move the champion alias of the MOS model and its encoder together, roll it
back, and list registered versions with their aliases, provenance and metrics.

A version of ``jsqa-mos`` and the ``jsqa-encoder`` version it was fine-tuned from are one unit:
each carries the other's version number in a tag (``encoder_version`` / ``mos_version``), and
every alias move here applies to both, so ``@champion`` never pairs an encoder with a MOS model
built from another.

Every promotion pushes the new champion onto the registered model's ``champion_history`` tag
(comma-separated versions, oldest first) and writes the version it replaced into the new
champion's ``previous_champion`` tag (for people reading the registry). Rollback pops the
history, so repeated rollbacks walk back through earlier champions until the first one.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from jsqa.errors import JsqaError

if TYPE_CHECKING:
    from jsqa.config import RegisterConfig

log = logging.getLogger(__name__)

PREVIOUS_TAG = "previous_champion"
HISTORY_TAG = "champion_history"
NONE = "none"
# MLflow caps tag values at a few thousand characters; older entries are dropped.
HISTORY_MAX = 200
# Columns of `jsqa models list` taken from version tags, in display order.
LIST_TAGS = ("init", "git_commit", "dvc_lock_sha256", "previous_champion")


def _partner(cfg: RegisterConfig, name: str) -> tuple[str, str]:
    """(the other model's name, the tag on a version of ``name`` that holds its partner's version)."""
    if name == cfg.mos_name:
        return cfg.encoder_name, "encoder_version"
    if name == cfg.encoder_name:
        return cfg.mos_name, "mos_version"
    raise JsqaError(f"unknown model '{name}' (registered by this project: {cfg.mos_name}, {cfg.encoder_name})")


def _version(client: MlflowClient, name: str, version: str) -> Any:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise JsqaError(f"{name} has no version {version}") from None


def champion_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``name@alias`` points at, or None."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _units(client: MlflowClient, cfg: RegisterConfig, name: str, version: str) -> list[tuple[str, str]]:
    """[(name, version), (partner, partner version)]; the partner only when the tag names one."""
    partner, tag = _partner(cfg, name)
    mv = _version(client, name, version)
    units = [(name, str(mv.version))]
    other = mv.tags.get(tag)
    if other:
        _version(client, partner, other)  # fail before any alias moves
        units.append((partner, str(other)))
    else:
        log.warning("%s v%s has no '%s' tag: moving only its own alias", name, mv.version, tag)
    return units


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """Versions that were champion of ``name``, oldest first (from the ``champion_history`` tag)."""
    try:
        raw = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    except MlflowException:
        raise JsqaError(f"no registered model '{name}' in {client.tracking_uri}") from None
    return [v for v in raw.split(",") if v]


def _set_history(client: MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history[-HISTORY_MAX:]))


def promote(client: MlflowClient, cfg: RegisterConfig, name: str, version: str) -> dict[str, dict[str, str | None]]:
    """Point ``@cfg.alias`` of ``name`` at ``version`` and of its partner at the partner version.

    Pushes each new champion onto its model's history and records the replaced version in its
    ``previous_champion`` tag; promoting the current champion changes nothing.
    Returns {model name: {"from": old version or None, "to": new version}}.
    """
    moves: dict[str, dict[str, str | None]] = {}
    for model, ver in _units(client, cfg, name, version):
        before = champion_version(client, model, cfg.alias)
        if before != ver:
            history = champion_history(client, model)
            # A champion set outside this module (e.g. in the UI) still becomes a rollback target.
            if before is not None and (not history or history[-1] != before):
                history.append(before)
            _set_history(client, model, [*history, ver])
            client.set_model_version_tag(model, ver, PREVIOUS_TAG, before or NONE)
            client.set_registered_model_alias(model, cfg.alias, ver)
        moves[model] = {"from": before, "to": ver}
        log.info("%s@%s: v%s -> v%s", model, cfg.alias, before or "-", ver)
    return moves


def _pop(history: list[str], current: str | None) -> list[str]:
    """The history without its last entry when that entry is the current champion."""
    return history[:-1] if history and history[-1] == current else history


def rollback(client: MlflowClient, cfg: RegisterConfig, name: str) -> dict[str, dict[str, str | None]]:
    """Point ``@cfg.alias`` of ``name`` (and its partner) back at the previous champion.

    JsqaError when ``name`` has no champion, or no earlier champion is recorded.
    """
    current = champion_version(client, name, cfg.alias)
    if current is None:
        raise JsqaError(f"{name} has no @{cfg.alias} to roll back")
    history = _pop(champion_history(client, name), current)
    if not history:
        raise JsqaError(
            f"{name}@{cfg.alias} is v{current} and no earlier champion is recorded: nothing to roll back to"
        )
    moves: dict[str, dict[str, str | None]] = {}
    for model, ver in _units(client, cfg, name, history[-1]):
        before = champion_version(client, model, cfg.alias)
        rest = _pop(champion_history(client, model), before)
        # The partner's history may lack this version (promoted alone earlier): keep it consistent.
        _set_history(client, model, rest if rest and rest[-1] == ver else [*rest, ver])
        client.set_registered_model_alias(model, cfg.alias, ver)
        moves[model] = {"from": before, "to": ver}
        log.info("%s@%s rolled back: v%s -> v%s", model, cfg.alias, before or "-", ver)
    return moves


def list_versions(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """One row per version of ``name``, newest first: version, aliases, created (UTC), key tags
    and every metric tag (``val_*``, ``test_*``)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise JsqaError(f"no registered model '{name}' in {client.tracking_uri}") from None
    # Version search results leave aliases out; the registered model maps alias -> version.
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC)
        row: dict[str, Any] = {
            "version": str(mv.version),
            "aliases": ",".join(sorted(aliases.get(str(mv.version), []))),
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        row.update({t: mv.tags.get(t, "") for t in LIST_TAGS})
        row.update({k: v for k, v in sorted(mv.tags.items()) if k.startswith(("val_", "test_"))})
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def format_versions(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``list_versions`` rows: hashes and commits shortened to 12 chars,
    empty cells shown as "-" so that every row splits into the same columns."""
    if not rows:
        return "(no versions)"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(column: str, value: Any) -> str:
        text = "" if value is None else str(value)
        if not text:
            return "-"
        if column in ("git_commit", "dvc_lock_sha256") and len(text) > 12:
            return text[:12] + ("+dirty" if text.endswith("+dirty") else "")
        try:
            return f"{float(text):.4f}" if column.startswith(("val_", "test_")) else text
        except ValueError:
            return text

    cells = [[cell(c, r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)
