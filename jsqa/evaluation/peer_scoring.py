"""Scoring test clips with the peers, through a per-clip score cache on disk.

The cache holds one JSON file per peer and version (``<dir>/<peer>@<version>.json``), mapping
the SHA-256 of the degraded file's bytes (plus the reference's, for peers that need one) to the
peer's outputs. Re-evaluating a new model therefore re-scores nothing; a new peer version starts
a new file. Writes are atomic. The cache is not a DVC output: it only saves time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from jsqa.audio import load_audio
from jsqa.data.manifests import resolve
from jsqa.evaluation.peers import Peer
from jsqa.io import write_json

log = logging.getLogger(__name__)

DEFAULT_CACHE = "data/peer_cache"


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PeerCache:
    """Per-clip peer scores on disk, keyed by content hash, peer name and peer version."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, peer: Peer) -> Path:
        """The cache file of ``peer`` at its current version."""
        safe = re.sub(r"[^A-Za-z0-9._+-]", "_", f"{peer.info.name}@{peer.info.version}")
        return self.directory / f"{safe}.json"

    def load(self, peer: Peer) -> dict[str, dict[str, float | None]]:
        """Cached {key: outputs} of ``peer`` (empty when absent or unreadable)."""
        p = self.path(peer)
        if not p.is_file():
            return {}
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("peer cache %s unreadable (%s); re-scoring", p, exc)
            return {}
        return doc.get("scores", {}) if isinstance(doc, dict) else {}

    def save(self, peer: Peer, scores: dict[str, dict[str, float | None]]) -> None:
        """Write ``peer``'s scores atomically."""
        write_json(self.path(peer), {"peer": peer.info.name, "version": peer.info.version, "scores": scores})


def score_peers(
    peers: Sequence[Peer], rows: pd.DataFrame, root: str | Path = ".", cache: PeerCache | None = None
) -> pd.DataFrame:
    """Every peer's outputs for every row (``path`` and optional ``ref_path``), one column per output.

    A reference-based peer gets NaN on rows without a readable reference. Scores come from
    ``cache`` when present there; new ones are added to it.
    """
    out = pd.DataFrame(index=rows.index)
    deg_paths = [resolve(p, root) for p in rows["path"]]
    refs = rows["ref_path"] if "ref_path" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    ref_paths = [resolve(r, root) if isinstance(r, str) and r else None for r in refs]
    hashes: dict[Path, str] = {}

    def key(p: Path) -> str:
        if p not in hashes:
            hashes[p] = file_hash(p)
        return hashes[p]

    for peer in peers:
        info = peer.info
        stored = cache.load(peer) if cache is not None else {}
        values = {o: np.full(len(rows), np.nan) for o in info.outputs}
        new = 0
        for i, (deg, ref) in enumerate(zip(deg_paths, ref_paths)):
            if info.needs_reference and (ref is None or not ref.is_file()):
                continue
            k = key(deg) + (f":{key(ref)}" if info.needs_reference and ref is not None else "")
            scores = stored.get(k)
            if scores is None:
                audio = load_audio(deg, info.sample_rate)[0]
                clean = load_audio(ref, info.sample_rate)[0] if info.needs_reference and ref is not None else None
                scores = {o: (float(v) if np.isfinite(v) else None) for o, v in peer.score(audio, clean).items()}
                stored[k] = scores
                new += 1
            for o in info.outputs:
                cell = scores.get(o)
                values[o][i] = np.nan if cell is None else float(cell)
        if cache is not None and new:
            cache.save(peer, stored)
        log.info(
            "peer %s: %d clips scored, %d from cache",
            info.name,
            new,
            int(np.isfinite(values[info.outputs[0]]).sum()) - new,
        )
        for o, column in values.items():
            out[o] = column
    return out
