"""The acquire stage: corpora for the chosen profile, turned into the three manifests.

``demo`` generates the synthetic corpus offline; ``paper`` downloads (or takes local copies
of) LibriSpeech, noise (CHiME-3, DEMAND, MUSAN, user folders) and NISQA or a user MOS CSV.
Either way the stage writes ``clean.parquet``, ``noise.parquet``, ``mos.parquet`` and
``quarantine.csv`` into the manifest folder, plus ``SOURCES.json`` (what was used) into the
raw folder. Every manifest row carries the sha256 of its audio file (``sha256``; ``ref_sha256``
for a MOS clip's reference), so new audio changes the manifests DVC tracks even when its
lengths (and so every other column) stay the same. Downloads live in ``corpora.download_dir``,
outside DVC's outputs, so tens of GB are neither copied into DVC's cache nor deleted when the
stage re-runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from jsqa.config import CorporaConfig, DataConfig
from jsqa.data import librispeech, nisqa, noise
from jsqa.data.demo.corpus import generate_demo, prepare_demo
from jsqa.data.download import check_override_names
from jsqa.data.manifests import add_content_hashes, read_manifest, write_manifest
from jsqa.errors import ConfigError
from jsqa.io import write_csv, write_json

log = logging.getLogger(__name__)

NOISE_SOURCES = ("chime3", "demand", "musan", "folders")


def acquire(cfg: DataConfig, seed: int, raw_dir: Path, manifest_dir: Path, root: Path = Path(".")) -> dict[str, Path]:
    """Provide the corpora of ``cfg.profile`` and write their manifests; return their paths."""
    raw_dir, manifest_dir = Path(raw_dir), Path(manifest_dir)
    if cfg.profile == "demo":
        corpus = generate_demo(raw_dir / "demo", cfg.demo, seed, cfg.sample_rate)
        paths = prepare_demo(corpus, manifest_dir, root=root)
        sources = {"profile": "demo", "seed": seed, "demo": dataclasses.asdict(cfg.demo)}
    else:
        paths = acquire_corpora(cfg.corpora, manifest_dir, root)
        sources = {"profile": cfg.profile, "corpora": dataclasses.asdict(cfg.corpora)}
    record_content_hashes(paths, root)
    write_json(raw_dir / "SOURCES.json", sources)
    return paths


def record_content_hashes(paths: Mapping[str, Path], root: Path = Path(".")) -> None:
    """Add the content hash of every audio file to the clean, noise and MOS manifests in ``paths``.

    Done here, once for both profiles, on the manifests as prepared: the header facts come
    from each file's first bytes, the hash needs all of them (one read per file, in threads).
    """
    for kind in ("clean", "noise", "mos"):
        write_manifest(paths[kind], add_content_hashes(read_manifest(paths[kind], kind), root), kind)


def _fetch(cfg: CorporaConfig) -> dict[str, Any]:
    # What every download_* call of the acquire stage takes from the config besides its mirror.
    return {"checksums": cfg.checksums, "keep_archives": cfg.keep_archives}


def _mirror(cfg: CorporaConfig, corpus: str) -> str | None:
    return cfg.mirrors.get(corpus) or None


def archive_names(cfg: CorporaConfig) -> list[str]:
    """The file names of the archives ``cfg`` downloads, in download order (before any download)."""
    names = [librispeech.SUBSETS[s].filename for s in librispeech.check_subsets(cfg.librispeech_subsets)]
    if "demand" in cfg.noise_sources:
        names += [r.filename for r in noise.demand_remotes(cfg.demand_environments)]
    if "musan" in cfg.noise_sources:
        names.append(noise.MUSAN_REMOTE.filename)
    if not cfg.user_mos_csv:
        names.append(nisqa.NISQA_REMOTE.filename)
    return names


def _noise(cfg: CorporaConfig, downloads: Path, root: Path) -> tuple[pd.DataFrame, list[dict]]:
    unknown = sorted(set(cfg.noise_sources) - set(NOISE_SOURCES))
    if unknown or not cfg.noise_sources:
        raise ConfigError(f"data.corpora.noise_sources: {unknown or 'empty'}; choose from {', '.join(NOISE_SOURCES)}")
    frames, quarantine = [], []
    for source in cfg.noise_sources:
        if source == "chime3":
            # A missing path reaches prepare_chime3, whose error says how to obtain the corpus.
            found = [noise.prepare_chime3(Path(cfg.chime3_path or downloads / "CHiME3"), root)]
        elif source == "demand":
            folder = noise.download_demand(
                downloads / "demand", cfg.demand_environments, _mirror(cfg, "demand"), **_fetch(cfg)
            )
            found = [noise.prepare_demand(folder, cfg.demand_environments, root)]
        elif source == "musan":
            folder = noise.download_musan(downloads / "musan", _mirror(cfg, "musan"), **_fetch(cfg))
            found = [noise.prepare_musan(folder, root=root)]
        else:
            if not cfg.noise_folders:
                raise ConfigError("data.corpora.noise_folders: empty, but noise_sources lists 'folders'")
            found = [
                noise.prepare_noise_folder(Path(f), root=root, source=f"folder{i}")
                for i, f in enumerate(cfg.noise_folders)
            ]
        for frame, bad in found:
            frames.append(frame)
            quarantine += bad
    return noise.combine_noise(frames), quarantine


def acquire_corpora(cfg: CorporaConfig, manifest_dir: Path, root: Path = Path(".")) -> dict[str, Path]:
    """Download (idempotently) and prepare the real corpora; write the manifests.

    Refuses before any download when NISQA would be fetched without its licence accepted, or
    when ``checksums`` names an archive this configuration does not download.
    """
    if not cfg.user_mos_csv:
        nisqa.require_licence(cfg.accept_nisqa_licence)
    check_override_names(cfg.checksums, archive_names(cfg))
    downloads = Path(root) / cfg.download_dir
    ls_dir = librispeech.download_librispeech(
        downloads / "librispeech",
        cfg.librispeech_subsets,
        base_urls=_mirror(cfg, "librispeech"),
        **_fetch(cfg),
    )
    clean, q_clean = librispeech.prepare_librispeech(ls_dir, cfg.librispeech_subsets, root)
    noise_df, q_noise = _noise(cfg, downloads, root)
    if cfg.user_mos_csv:
        mos, q_mos = nisqa.prepare_user_mos(Path(cfg.user_mos_csv), root=root)
    else:
        corpus = nisqa.download_nisqa(
            downloads / "nisqa",
            accept_licence=cfg.accept_nisqa_licence,
            base_url=_mirror(cfg, "nisqa"),
            **_fetch(cfg),
        )
        mos, q_mos = nisqa.prepare_nisqa(corpus, cfg.nisqa_subsets, root)
    paths = {k: manifest_dir / f"{k}.parquet" for k in ("clean", "noise", "mos")}
    write_manifest(paths["clean"], clean, "clean")
    write_manifest(paths["noise"], noise_df, "noise")
    write_manifest(paths["mos"], mos, "mos")
    paths["quarantine"] = manifest_dir / "quarantine.csv"
    write_csv(paths["quarantine"], pd.DataFrame(q_clean + q_noise + q_mos, columns=["path", "reason"]))
    log.info(
        "manifests: %d clean, %d noise, %d mos, %d quarantined",
        len(clean),
        len(noise_df),
        len(mos),
        len(q_clean) + len(q_noise) + len(q_mos),
    )
    return paths
