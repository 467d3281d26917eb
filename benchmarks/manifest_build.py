"""Manifest build cost against its floor: reading each file's header with soundfile.info alone.

Run: .venv/bin/python benchmarks/manifest_build.py [--files 2000] [--format flac] [--workers 4]
Generates a miniature LibriSpeech tree (short files, transcripts) in a temporary folder, then
times on the same files in the same run, best of ``--repeats`` with a warm page cache:
  floor      sf.info on every file, serially and on a thread pool of ``--workers``
  audio_rows the shared header reader (relative paths, quarantine)
  prepare    prepare_librispeech (glob, transcripts, audio_rows, DataFrame)
and prints each time with its ratio to the floor at the same worker count.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from jsqa.data.librispeech import prepare_librispeech
from jsqa.data.manifests import audio_rows


def make_corpus(base: Path, n_files: int, fmt: str, seconds: float) -> list[Path]:
    """``n_files`` utterances under base/LibriSpeech/dev-clean/<spk>/<chapter>/ (20 per chapter)."""
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    files, lines = [], {}
    for i in range(n_files):
        spk, ch, utt = 100 + i // 100, 1000 + i // 20, i % 20
        folder = base / "LibriSpeech" / "dev-clean" / str(spk) / str(ch)
        folder.mkdir(parents=True, exist_ok=True)
        uid = f"{spk}-{ch}-{utt:04d}"
        path = folder / f"{uid}.{fmt}"
        sf.write(path, x, 16000, subtype="PCM_16")
        files.append(path)
        lines.setdefault(folder, []).append(f"{uid} SOME WORDS")
    for folder, text in lines.items():
        (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text("\n".join(text) + "\n")
    return files


def floor(files: list[Path], workers: int) -> None:
    if workers == 1:
        for f in files:
            sf.info(str(f))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda f: sf.info(str(f)), files))


def best_of(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--format", choices=("flac", "wav"), default="flac")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="jsqa-manifest-bench-") as tmp:
        base = Path(tmp)
        files = make_corpus(base, args.files, args.format, args.seconds)
        floor(files, 1)  # warm the page cache so every contender reads from memory
        print(f"{len(files)} {args.format.upper()} files of {args.seconds:g} s, best of {args.repeats}")
        for w in sorted({1, args.workers}):
            # w=w binds this iteration's worker count (best_of calls each lambda right away anyway).
            f = best_of(lambda w=w: floor(files, w), args.repeats)
            rows = best_of(lambda w=w: audio_rows(files, base, workers=w), args.repeats)
            prep = best_of(
                lambda w=w: prepare_librispeech(base / "LibriSpeech", ["dev-clean"], base, workers=w), args.repeats
            )
            print(f"workers={w}: floor (sf.info) {f * 1e3:8.1f} ms")
            print(f"workers={w}: audio_rows      {rows * 1e3:8.1f} ms  ratio {rows / f:5.2f}")
            print(f"workers={w}: prepare         {prep * 1e3:8.1f} ms  ratio {prep / f:5.2f}")


if __name__ == "__main__":
    main()
