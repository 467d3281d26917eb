"""``jsqa export``: a MOS checkpoint as a TorchScript or ONNX file (waveform batch -> MOS)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("export", help="export a MOS checkpoint as a TorchScript or ONNX file (waveform batch -> MOS)")
    sp.add_argument("--model", required=True, help="MOS checkpoint (.pt)")
    sp.add_argument(
        "--format",
        choices=("torchscript", "onnx"),
        default="torchscript",
        help="torchscript, or onnx (needs the optional extra: pip install 'jsqa[onnx]')",
    )
    sp.add_argument("--out", required=True, help="output file, e.g. model.ts or model.onnx")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jsqa.scoring.export import export_model

    out = export_model(Path(args.model), Path(args.out), args.format)
    print(f"export: {args.model} -> {out} ({args.format})")
    return 0
