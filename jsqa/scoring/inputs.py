"""Which audio files a scoring command reads: files as given, folders searched.

Apart from :mod:`jsqa.scoring.predict` so that `jsqa predict` can refuse a missing file before
it imports torch (seconds at start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from jsqa.errors import JsqaError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif", ".au"})


def audio_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded recursively to their audio files, sorted; no duplicates."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                log.warning("%s: no audio files found", p)
        elif p.exists():
            found = [p]
        else:
            raise JsqaError(f"{p}: no such file or folder")
        for f in found:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out
