"""Argument helpers shared by the stage commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from jsqa.config import Params, load_params

if TYPE_CHECKING:
    import pandas as pd

Command = Callable[[argparse.Namespace], int]


def stage_parser(sub: argparse._SubParsersAction, name: str, run: Command, help: str) -> argparse.ArgumentParser:
    """A subcommand with the ``--params`` and ``--root`` every stage takes."""
    sp = sub.add_parser(name, help=help)
    sp.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sp.add_argument("--root", default=".", help="project root that manifest paths are relative to")
    sp.set_defaults(func=run)
    return sp


def params(args: argparse.Namespace) -> Params:
    """params.yaml as typed config: the one place a stage reads it."""
    return load_params(args.params)


def csv_args(sp: argparse.ArgumentParser) -> None:
    """``--csv`` / ``--audio-root``: a MOS dataset in the NISQA CSV layout instead of the manifest."""
    sp.add_argument(
        "--csv",
        default=None,
        help="MOS dataset in the NISQA CSV layout (filepath_deg, mos, db; the clean reference, "
        "for PESQ and STOI, in filepath_ref or ref_path); replaces --manifest",
    )
    sp.add_argument("--audio-root", default=None, help="folder filepath_deg is relative to (default: the CSV's)")


def mos_manifest(args: argparse.Namespace) -> pd.DataFrame:
    """The MOS manifest from --csv (NISQA layout, audio under --audio-root) or --manifest (parquet)."""
    from jsqa.data.manifests import mos_manifest_from_csv, read_manifest
    from jsqa.errors import ManifestError

    if getattr(args, "csv", None):
        manifest, _ = mos_manifest_from_csv(args.csv, args.audio_root, root=args.root)  # skips are logged
        if manifest.empty:
            raise ManifestError(f"{args.csv}: no readable clips")
        return manifest
    return read_manifest(args.manifest, "mos")
