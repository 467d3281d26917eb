"""What a registered model was built from: git commit, dvc.lock hash and data manifest hashes."""

from __future__ import annotations

from pathlib import Path

from jsqa.io import file_sha256
from jsqa.tracking import git_commit


def provenance_tags(root: str | Path = ".", manifests: str | Path = "data/manifests") -> dict[str, str]:
    """Tags naming the inputs of a model version, for the registry.

    ``git_commit`` (with ``+dirty`` for uncommitted changes), ``dvc_lock_sha256`` (``"none"``
    without a dvc.lock) and one ``manifest_<name>_sha256`` per ``<manifests>/*.parquet``
    (``manifests`` is relative to ``root`` unless absolute).
    """
    root = Path(root)
    lock = root / "dvc.lock"
    tags = {
        "git_commit": git_commit(root),
        "dvc_lock_sha256": file_sha256(lock) if lock.is_file() else "none",
    }
    folder = Path(manifests) if Path(manifests).is_absolute() else root / manifests
    for path in sorted(folder.glob("*.parquet")):
        tags[f"manifest_{path.stem}_sha256"] = file_sha256(path)
    return tags
