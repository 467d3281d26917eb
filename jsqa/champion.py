"""Who is champion: move the champion alias of the MOS model and its encoder together, roll it
back, and list registered versions with their aliases, provenance and metrics.

A version of ``jsqa-mos`` and the ``jsqa-encoder`` version it was fine-tuned from are one unit:
each carries the other's version number in a tag (``encoder_version`` / ``mos_version``), and
every alias move here applies to both, so ``@champion`` never pairs an encoder with a MOS model
built from another. Each promotion writes the version it replaced into the new champion's
``previous_champion`` tag; rollback follows that tag.
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
NONE = "none"
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
    mv = _version(client, name, version)
    partner, tag = _partner(cfg, name)
    units = [(name, str(mv.version))]
    other = mv.tags.get(tag)
    if other:
        _version(client, partner, other)  # fail before any alias moves
        units.append((partner, str(other)))
    else:
        log.warning("%s v%s has no '%s' tag: moving only its own alias", name, mv.version, tag)
    return units


def promote(client: MlflowClient, cfg: RegisterConfig, name: str, version: str) -> dict[str, dict[str, str | None]]:
    """Point ``@cfg.alias`` of ``name`` at ``version`` and of its partner at the partner version.

    Records the replaced version in the new champion's ``previous_champion`` tag (unless it is
    already champion). Returns {model name: {"from": old version or None, "to": new version}}.
    """
    moves: dict[str, dict[str, str | None]] = {}
    for model, ver in _units(client, cfg, name, version):
        before = champion_version(client, model, cfg.alias)
        if before != ver:
            client.set_model_version_tag(model, ver, PREVIOUS_TAG, before or NONE)
            client.set_registered_model_alias(model, cfg.alias, ver)
        moves[model] = {"from": before, "to": ver}
        log.info("%s@%s: v%s -> v%s", model, cfg.alias, before or "-", ver)
    return moves


def rollback(client: MlflowClient, cfg: RegisterConfig, name: str) -> dict[str, dict[str, str | None]]:
    """Point ``@cfg.alias`` of ``name`` (and its partner) back at the previous champion.

    JsqaError when there is no champion or the champion records no previous one.
    """
    current = champion_version(client, name, cfg.alias)
    if current is None:
        raise JsqaError(f"{name} has no @{cfg.alias} to roll back")
    previous = _version(client, name, current).tags.get(PREVIOUS_TAG, NONE)
    if previous == NONE:
        raise JsqaError(f"{name}@{cfg.alias} is v{current}, which has no previous champion to roll back to")
    moves: dict[str, dict[str, str | None]] = {}
    # Alias moves only: the previous champion keeps its own history, so rollbacks can repeat.
    for model, ver in _units(client, cfg, name, previous):
        before = champion_version(client, model, cfg.alias)
        client.set_registered_model_alias(model, cfg.alias, ver)
        moves[model] = {"from": before, "to": ver}
        log.info("%s@%s rolled back: v%s -> v%s", model, cfg.alias, before or "-", ver)
    return moves


def list_versions(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """One row per version of ``name``, newest first: version, aliases, created (UTC), key tags
    and every metric tag (``val_*``, ``test_*``)."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise JsqaError(f"no registered model '{name}' in {client.tracking_uri}") from None
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.timezone.utc)
        row: dict[str, Any] = {"version": str(mv.version), "aliases": ",".join(sorted(mv.aliases or [])),
                               "created": created.strftime("%Y-%m-%d %H:%M:%S")}
        row.update({t: mv.tags.get(t, "") for t in LIST_TAGS})
        row.update({k: v for k, v in sorted(mv.tags.items()) if k.startswith(("val_", "test_"))})
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def format_versions(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``list_versions`` rows (hashes and commits shortened to 12 chars)."""
    if not rows:
        return "(no versions)"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(column: str, value: Any) -> str:
        text = "" if value is None else str(value)
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
