"""Reading a rendered pair set: recipes plus memory-mapped int16 shards."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jsqa.data.manifests import require_columns
from jsqa.errors import ManifestError
from jsqa.io import read_json, read_parquet
from jsqa.pairs.jnd import REALISATION_KEYS, SEGMENT_KEYS, same_percept
from jsqa.pairs.render import INT16_SCALE, PLAN_COLUMNS, shard_stem
from jsqa.signal import distortions


class PairSet:
    """A rendered pair set: recipes plus memory-mapped shards.

    Index ``i`` is the position in ``recipes`` (``pairs.parquet`` order), not ``pair_id``:
    skipped pairs leave gaps in ``pair_id`` but not in positions.
    """

    def __init__(
        self,
        out_dir: Path,
        recipes: pd.DataFrame,
        segment_samples: int,
        sample_rate: int,
        jnd_db: float,
        distortion_steps: Mapping[str, float] | None = None,
    ) -> None:
        require_columns(recipes, PLAN_COLUMNS + ["row"], f"{out_dir}/pairs.parquet")
        self.out_dir = Path(out_dir)
        self.recipes = recipes.reset_index(drop=True)
        self.segment_samples = int(segment_samples)
        self.sample_rate = int(sample_rate)
        self.jnd_db = float(jnd_db)
        self._shard = self.recipes["shard"].to_numpy(np.int64)
        self._row = self.recipes["row"].to_numpy(np.int64)
        self.distortion_steps = dict(distortion_steps or distortions.DEFAULT_STEPS)
        # The columns same_percept compares; strings as integer codes, so the B x B
        # comparisons in positives_mask are cheap.
        self._percept: dict[str, np.ndarray] = {}
        for c in ("snr_a", "dist_param_a"):
            if c in self.recipes:
                self._percept[c] = self.recipes[c].to_numpy(np.float64)
        for c in SEGMENT_KEYS + REALISATION_KEYS:
            if c in self.recipes and c != "distortion":
                col = self.recipes[c]
                self._percept[c] = col.to_numpy(np.int64) if col.dtype.kind in "iu" else pd.factorize(col)[0]
        if "distortion" in self.recipes:
            self._percept["distortion"] = self.recipes["distortion"].to_numpy(dtype=object)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def n(self) -> int:
        """Number of rendered pairs."""
        return len(self.recipes)

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are per process: a DataLoader worker reopens its own.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def _shard_array(self, shard: int) -> np.ndarray:
        arr = self._maps.get(shard)
        if arr is None:
            arr = np.load(shard_stem(self.out_dir, shard).with_suffix(".npy"), mmap_mode="r")
            self._maps[shard] = arr
        return arr

    def __getitem__(self, i: int) -> np.ndarray:
        """Both members of pair ``i`` as float32 ``[2, segment_samples]`` in [-1, 1)."""
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"pair index {i} out of range for {self.n} pairs")
        arr = self._shard_array(int(self._shard[i]))
        return np.asarray(arr[self._row[i]], dtype=np.float32) / np.float32(INT16_SCALE)

    def int16_batch(self, idx: np.ndarray) -> np.ndarray:
        """Pairs ``idx`` as int16 ``[B, 2, segment_samples]``, one fancy-index read per shard.

        Training converts to float on its own device; reading int16 halves the bytes moved.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"int16_batch: index out of range for {self.n} pairs")
        out = np.empty((len(idx), 2, self.segment_samples), dtype=np.int16)
        shards = self._shard[idx]
        for s in np.unique(shards):
            sel = np.flatnonzero(shards == s)
            out[sel] = self._shard_array(int(s))[self._row[idx[sel]]]
        return out

    def positives_mask(self, idx: np.ndarray) -> np.ndarray:
        """``[B, B]`` bool: which pairs of a batch are within one JND of each other.

        The rule is :func:`same_percept` on the pairs' recipes (same utterance segment, a-member
        SNRs within one JND, same distortion kind and realisation with parameters within its
        step). The diagonal is True. The pretraining loss uses this to keep such pairs out of
        the negatives.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise IndexError(f"positives_mask: expected a 1-D index array, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"positives_mask: index out of range for {self.n} pairs")
        rows = {c: v[idx][:, None] for c, v in self._percept.items()}
        cols = {c: v[idx][None, :] for c, v in self._percept.items()}
        return same_percept(rows, cols, self.jnd_db, self.distortion_steps)


def load_pairs(out_dir: Path) -> PairSet:
    """Open a pair set written by :func:`generate_pairs`."""
    out_dir = Path(out_dir)
    index_path, recipes_path = out_dir / "index.json", out_dir / "pairs.parquet"
    if not index_path.exists() or not recipes_path.exists():
        raise ManifestError(f"{out_dir}: no index.json / pairs.parquet (run the pairs stage first)")
    try:
        index = read_json(index_path)
        recipes = read_parquet(recipes_path)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{out_dir}: pair set not readable ({exc})") from exc
    if len(recipes) != index.get("n_pairs"):
        raise ManifestError(f"{recipes_path}: {len(recipes)} rows but index.json says {index.get('n_pairs')}")
    return PairSet(
        out_dir,
        recipes,
        index["segment_samples"],
        index["sample_rate"],
        index["jnd_db"],
        index.get("distortion_steps"),
    )
