"""MOS clips in memory: load a manifest's audio once (resampled, mono) and draw training crops."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jsqa.audio import load_audio
from jsqa.data.manifests import resolve
from jsqa.models.mos import is_std
from jsqa.signal.speech import SpeechCheck, check_speech, level_gain, scaled

log = logging.getLogger(__name__)

LOAD_CHUNK = 256  # clips decoded (and level-scaled) together


@dataclass
class ClipSet:
    """Waveforms with their MOS labels and the manifest rows they came from."""

    audio: list[np.ndarray]
    mos: np.ndarray
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.audio)


def load_clips(
    df: pd.DataFrame,
    sample_rate: int,
    root: str | Path = ".",
    workers: int = 4,
    *,
    level_dbov: float | None = None,
) -> ClipSet:
    """Read every clip of a manifest slice (threads: decoding releases the GIL).

    ``level_dbov``: each clip is scaled to that active speech level (training crops then come
    from level-normalised clips); a clip without speech (:mod:`jsqa.signal.speech`) is kept as
    it is, and logged. Clips are read and scaled :data:`LOAD_CHUNK` at a time, so the unscaled
    copies of at most one chunk exist beside the set (memory: the set's float32 audio, once).
    """
    paths = [resolve(p, root) for p in df["path"]]
    audio: list[np.ndarray] = []
    failed: list[tuple[Path, SpeechCheck]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), LOAD_CHUNK):
            chunk_paths = paths[start : start + LOAD_CHUNK]
            chunk = list(pool.map(lambda p: load_audio(p, sample_rate)[0], chunk_paths))
            if level_dbov is not None:
                # Levels do not depend on the other signals measured with them (check_speech).
                checks = check_speech(chunk, sample_rate)
                chunk = [scaled(x, level_gain(c, level_dbov)) if c.has_speech else x for x, c in zip(chunk, checks)]
                failed += [(p, c) for p, c in zip(chunk_paths, checks) if not c.has_speech]
            audio += chunk
    if failed:
        log.warning(
            "%d of %d clips have no active speech and keep their level (first: %s, %s)",
            len(failed),
            len(paths),
            failed[0][0],
            failed[0][1].reason,
        )
    return ClipSet(audio=audio, mos=df["mos"].to_numpy(dtype=np.float32), rows=df.reset_index(drop=True))


def label_se(rows: pd.DataFrame) -> np.ndarray:
    """Each clip's MOS standard error ``mos_std / sqrt(votes)``; 0 without votes (< 1), without
    the columns or where a cell is missing."""
    n = len(rows)
    if "mos_std" not in rows.columns or "votes" not in rows.columns:
        return np.zeros(n, dtype=np.float32)
    std = pd.to_numeric(rows["mos_std"], errors="coerce").to_numpy(dtype=np.float64)
    votes = pd.to_numeric(rows["votes"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(std) & np.isfinite(votes) & (votes >= 1)
    se = np.zeros(n, dtype=np.float64)
    se[ok] = std[ok] / np.sqrt(votes[ok])
    return se.astype(np.float32)


def label_targets(rows: pd.DataFrame, outputs: tuple[str, ...]) -> np.ndarray:
    """[N, T] labels of the model's targets (its outputs but the ``_std`` ones), NaN where missing."""
    targets = [o for o in outputs if not is_std(o)]
    cols = [
        pd.to_numeric(rows[t], errors="coerce") if t in rows.columns else pd.Series(np.nan, index=rows.index)
        for t in targets
    ]
    return np.stack([c.to_numpy(dtype=np.float64) for c in cols], axis=1).astype(np.float32)


def random_crop(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A ``length``-sample crop at a random offset; shorter clips are zero-padded at the end."""
    if len(x) >= length:
        start = int(rng.integers(0, len(x) - length + 1))
        return x[start : start + length]
    return np.pad(x, (0, length - len(x)))
