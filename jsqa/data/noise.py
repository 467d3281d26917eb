"""Background-noise corpora: CHiME-3 (licensed, local copy), DEMAND and MUSAN (free), any folder.

Every ``prepare_*`` returns (manifest, quarantine): the manifest has NOISE_COLUMNS plus
``source`` (chime3 / demand / musan / folder); quarantine lists unreadable files with a reason.

Channels: CHiME-3 backgrounds are six-channel tablet recordings and DEMAND sixteen-channel
array recordings, stored one file per channel. The channels of one recording are the same
scene a few centimetres apart, so they add cost and almost no acoustic variety; by default
only channel 1 is kept (``channels=None`` keeps them all).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from jsqa.data.download import Remote, fetch_and_extract, with_overrides
from jsqa.data.extract import extract
from jsqa.data.manifests import NOISE_COLUMNS, audio_rows
from jsqa.errors import ConfigError, JsqaError, ManifestError

log = logging.getLogger(__name__)

NOISE_SOURCE_COLUMNS = NOISE_COLUMNS + ["source"]
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")

CHIME3_ENVIRONMENTS: tuple[str, ...] = ("BUS", "CAF", "PED", "STR")
CHIME3_BACKGROUNDS = Path("data/audio/16kHz/backgrounds")
_CHIME3_FILE = re.compile(r"^BGD_.+_(BUS|CAF|PED|STR)\.CH([1-6])\.wav$")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar")

# params.yaml keys named in messages (jsqa.config.CorporaConfig).
CHIME3_PARAM = "data.corpora.chime3_path"
SOURCES_PARAM = "data.corpora.noise_sources"
CHIME3_HOWTO = (
    "CHiME-3 background noise is licensed: obtain LDC2017S24 from the LDC (https://catalog.ldc.upenn.edu/LDC2017S24) "
    f"and set {CHIME3_PARAM} to the CHiME3 folder or the LDC archive, or use a free source instead "
    f"({SOURCES_PARAM}: [demand] or [musan])"
)

DEMAND_ENVIRONMENTS: tuple[str, ...] = (
    "DKITCHEN", "DLIVING", "DWASHING",
    "NFIELD", "NPARK", "NRIVER",
    "OHALLWAY", "OMEETING", "OOFFICE",
    "PCAFETER", "PRESTO", "PSTATION",
    "SCAFE", "SPSQUARE", "STRAFFIC",
    "TBUS", "TCAR", "TMETRO",
)  # fmt: skip
DEMAND_URL = "https://zenodo.org/records/1227121/files"
# Closest DEMAND stand-ins for the CHiME-3 environments (by scene type).
DEMAND_LIKE_CHIME3: dict[str, tuple[str, ...]] = {
    "BUS": ("TBUS",),
    "CAF": ("SCAFE", "PCAFETER"),
    "PED": ("SPSQUARE",),
    "STR": ("STRAFFIC",),
}
_DEMAND_SIZES = {"STRAFFIC": 118_572_691, "PCAFETER": 107_431_494}

MUSAN_MIRRORS: tuple[str, ...] = (
    "https://www.openslr.org/resources/17",
    "https://us.openslr.org/resources/17",
    "https://openslr.elda.org/resources/17",
    "https://openslr.trmal.net/resources/17",
)
MUSAN_REMOTE = Remote("musan.tar.gz", tuple(f"{m}/musan.tar.gz" for m in MUSAN_MIRRORS), size=11_086_114_085)
MUSAN_PARTS: tuple[str, ...] = ("free-sound", "sound-bible")


def channel_numbers(channels: Iterable[int | str] | None) -> set[int] | None:
    """Normalise 1, '1', 'CH1', 'ch01' to channel numbers; None means every channel."""
    if channels is None:
        return None
    if isinstance(channels, (str, int)):
        channels = [channels]
    out = set()
    for c in channels:
        m = re.fullmatch(r"(?:ch)?0*(\d+)", str(c).strip(), flags=re.IGNORECASE)
        if not m or int(m.group(1)) == 0:
            raise ConfigError(f"bad noise channel '{c}' (use e.g. 1 or 'CH1')")
        out.add(int(m.group(1)))
    return out


# --- CHiME-3 -------------------------------------------------------------------------------


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _find_backgrounds(folder: Path) -> Path | None:
    for cand in (folder, folder / CHIME3_BACKGROUNDS, folder / "CHiME3" / CHIME3_BACKGROUNDS):
        if cand.is_dir() and any(cand.glob("BGD_*.wav")):
            return cand
    # LDC archives wrap the corpus in one or two extra folders whose names vary by release.
    for cand in sorted(folder.glob(f"**/{CHIME3_BACKGROUNDS.as_posix()}")):
        if any(cand.glob("BGD_*.wav")):
            return cand
    return None


def prepare_chime3(
    source: Path,
    root: Path = Path("."),
    *,
    channels: Iterable[int | str] | None = ("CH1",),
    environments: Sequence[str] | None = None,
    extract_dir: Path | None = None,
    workers: int | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Noise manifest of the CHiME-3 backgrounds (environment = BUS / CAF / PED / STR).

    ``source`` is the CHiME3 folder (or any folder above ``data/audio/16kHz/backgrounds``) or
    the LDC archive (.tar.gz / .tgz / .zip), which is first extracted into ``extract_dir``
    (default: a folder beside the archive named after it). Absent or empty -> JsqaError
    explaining how to obtain the corpus or which free source to use instead.
    """
    source = Path(source)
    envs = set(environments) if environments is not None else set(CHIME3_ENVIRONMENTS)
    unknown = envs - set(CHIME3_ENVIRONMENTS)
    if unknown:
        raise ConfigError(
            f"unknown CHiME-3 environment(s) {', '.join(sorted(unknown))}; known: {', '.join(CHIME3_ENVIRONMENTS)}"
        )
    if _is_archive(source):
        stem = re.sub(r"(\.tar\.gz|\.tgz|\.zip|\.tar)$", "", source.name, flags=re.IGNORECASE)
        target = Path(extract_dir) if extract_dir is not None else source.with_name(stem)
        log.info("extracting CHiME-3 archive %s into %s", source, target)
        source = extract(source, target)
    if not source.exists():
        raise JsqaError(f"{source}: CHiME-3 not found. {CHIME3_HOWTO}")
    backgrounds = _find_backgrounds(source) if source.is_dir() else None
    if backgrounds is None:
        raise JsqaError(f"{source}: no CHiME-3 backgrounds (BGD_*.wav) under it. {CHIME3_HOWTO}")
    wanted = channel_numbers(channels)
    files = []
    for f in sorted(backgrounds.glob("BGD_*.wav")):
        m = _CHIME3_FILE.match(f.name)
        if m and m.group(1) in envs and (wanted is None or int(m.group(2)) in wanted):
            files.append(f)
    if not files:
        chosen = "all" if wanted is None else sorted(wanted)
        raise JsqaError(f"{backgrounds}: no background files for environments {sorted(envs)} and channels {chosen}")

    def extra(p: Path) -> dict:
        match = _CHIME3_FILE.match(p.name)
        assert match is not None  # files were selected by this pattern above
        return {"id": p.stem, "environment": match.group(1), "source": "chime3"}

    return _noise_table(files, Path(root), extra, workers)


# --- DEMAND --------------------------------------------------------------------------------


def _check_demand(environments: Sequence[str] | None) -> list[str]:
    if environments is None:
        return list(DEMAND_ENVIRONMENTS)
    envs = [environments] if isinstance(environments, str) else list(environments)
    unknown = [e for e in envs if e not in DEMAND_ENVIRONMENTS]
    if unknown:
        raise ConfigError(
            f"unknown DEMAND environment(s) {', '.join(unknown)}; known: {', '.join(DEMAND_ENVIRONMENTS)}"
        )
    return envs


def demand_remotes(environments: Sequence[str] | None = None) -> list[Remote]:
    """The 16 kHz zips of the DEMAND environments (default all 18), from Zenodo.

    Zenodo publishes no checksum we pin; the size where known. Unknown names -> ConfigError.
    """
    return [
        Remote(f"{env}_16k.zip", (f"{DEMAND_URL}/{env}_16k.zip",), size=_DEMAND_SIZES.get(env))
        for env in _check_demand(environments)
    ]


def download_demand(
    target_dir: Path,
    environments: Sequence[str] | None = None,
    base_url: str | None = None,
    *,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> Path:
    """Download and unzip DEMAND environments (default all 18) into ``target_dir``; return it.

    Each becomes ``target_dir/<ENV>/ch01.wav … ch16.wav``. Idempotent. ``base_url`` and
    ``checksums`` replace Zenodo and the pinned sizes (:func:`jsqa.data.download.with_overrides`).
    """
    target_dir = Path(target_dir)
    for remote in demand_remotes(environments):
        fetch_and_extract(
            with_overrides(remote, base_url, checksums), target_dir, progress=progress, keep_archive=keep_archives
        )
    return target_dir


def prepare_demand(
    demand_dir: Path,
    environments: Sequence[str] | None = None,
    root: Path = Path("."),
    *,
    channels: Iterable[int | str] | None = (1,),
    workers: int | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Noise manifest of DEMAND (environment = ENV, id = ``<ENV>_chNN``)."""
    demand_dir = Path(demand_dir)
    wanted = channel_numbers(channels)
    files = []
    for env in _check_demand(environments):
        folder = demand_dir / env
        if not folder.is_dir():
            raise ManifestError(f"{folder}: DEMAND environment not found (run download_demand for '{env}' first)")
        for f in sorted(folder.glob("ch*.wav")):
            m = re.fullmatch(r"ch(\d+)", f.stem)
            if m and (wanted is None or int(m.group(1)) in wanted):
                files.append(f)

    def extra(p: Path) -> dict:
        return {"id": f"{p.parent.name}_{p.stem}", "environment": p.parent.name, "source": "demand"}

    return _noise_table(files, Path(root), extra, workers)


# --- MUSAN ---------------------------------------------------------------------------------


def download_musan(
    target_dir: Path,
    base_url: str | None = None,
    *,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> Path:
    """Download and extract MUSAN (11 GB: speech, music and noise); return ``target_dir/'musan'``.

    ``base_url`` and ``checksums`` as in :func:`jsqa.data.download.with_overrides`.
    """
    fetch_and_extract(
        with_overrides(MUSAN_REMOTE, base_url, checksums),
        Path(target_dir),
        progress=progress,
        keep_archive=keep_archives,
    )
    return Path(target_dir) / "musan"


def prepare_musan(
    musan_dir: Path,
    parts: Sequence[str] = MUSAN_PARTS,
    root: Path = Path("."),
    *,
    workers: int | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Noise manifest of MUSAN's noise part (environment = 'musan-free-sound' / 'musan-sound-bible')."""
    musan_dir = Path(musan_dir)
    if not (musan_dir / "noise").is_dir() and (musan_dir / "musan" / "noise").is_dir():
        musan_dir = musan_dir / "musan"
    unknown = [p for p in parts if p not in MUSAN_PARTS]
    if unknown:
        raise ConfigError(f"unknown MUSAN noise part(s) {', '.join(unknown)}; known: {', '.join(MUSAN_PARTS)}")
    files = []
    for part in parts:
        folder = musan_dir / "noise" / part
        if not folder.is_dir():
            raise ManifestError(f"{folder}: MUSAN noise folder not found (run download_musan first)")
        files.extend(sorted(folder.glob("*.wav")))

    def extra(p: Path) -> dict:
        return {"id": p.stem, "environment": f"musan-{p.parent.name}", "source": "musan"}

    return _noise_table(files, Path(root), extra, workers)


# --- any folder ----------------------------------------------------------------------------


def prepare_noise_folder(
    folder: Path,
    environment: str | None = None,
    root: Path = Path("."),
    *,
    source: str = "folder",
    workers: int | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Noise manifest of every audio file under ``folder`` (recursively).

    environment is ``environment`` when given, else each file's parent folder name; id is the
    path inside ``folder`` without suffix, '/' replaced by '__'.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: noise folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ManifestError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in the noise folder")

    def extra(p: Path) -> dict:
        rel = p.relative_to(folder).with_suffix("").as_posix()
        return {"id": rel.replace("/", "__"), "environment": environment or p.parent.name, "source": source}

    return _noise_table(files, Path(root), extra, workers)


def combine_noise(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate noise manifests; ids become ``<source>__<id>`` so they stay unique across sources.

    Raises ManifestError when a frame lacks the ``source`` column or ids still collide.
    """
    parts = []
    for i, frame in enumerate(frames):
        missing = [c for c in NOISE_SOURCE_COLUMNS if c not in frame.columns]
        if missing:
            raise ManifestError(f"noise manifest #{i}: missing column(s) {', '.join(missing)}")
        frame = frame.copy()
        frame["id"] = frame["source"].astype(str) + "__" + frame["id"].astype(str)
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=NOISE_SOURCE_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    dup = out["id"][out["id"].duplicated()]
    if len(dup):
        raise ManifestError(
            f"noise ids collide across manifests ({len(dup)}, e.g. {dup.iloc[0]}); give each folder its own source name"
        )
    return out


def _noise_table(
    files: list[Path], root: Path, extra: Callable[[Path], dict], workers: int | None
) -> tuple[pd.DataFrame, list[dict]]:
    rows, bad = audio_rows(files, root, workers=workers, extra=extra)
    return pd.DataFrame(rows, columns=NOISE_SOURCE_COLUMNS), bad
