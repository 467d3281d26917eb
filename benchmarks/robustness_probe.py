"""Robustness probe of a MOS model: silence, loudness, clean vs noisy, and input sample rate.

Run: .venv/bin/python benchmarks/robustness_probe.py --model models:/jsqa-mos@champion
                                                     [--corpus data/raw/demo] [--clips 20] [--json OUT]

``--model``: a checkpoint path, a downloaded model folder or an MLflow model URI (as ``jsqa
predict`` takes); any checkpoint works, including ones without ``input_level_dbov`` (no level
normalisation): run it on the old and the new model to compare. ``--corpus``: a NISQA-layout
corpus (a folder holding ``NISQA_corpus_file.csv`` at any depth, or the CSV itself) with
``filepath_deg`` and ``filepath_ref`` columns; its test split is used when it has a ``split``
column. Prints one line per figure:

- silence_4s: what ``jsqa predict`` gives 4 s of digital silence (a score, or its error);
- gain_pm20db: mean (and max) |score change| when each degraded clip is scored 20 dB quieter and
  20 dB louder (float arrays, so nothing clips), through :func:`score_waveforms`;
- clean_minus_noisy: mean score of the clean references minus that of the degraded clips (a
  sanity check: positive), and the share of clips whose reference scores higher;
- resample_16k: mean (and max) |score change| between a clip scored from its original file
  and from a 16 kHz copy made by another resampler (scipy's polyphase), both through
  ``jsqa predict``'s path (:func:`score_files`).
- codec drop: per distortion family at one fixed, clearly audible setting (:data:`CODECS`), the
  mean score of the clean references minus that of the same references distorted (positive: the
  model hears it), through :func:`score_waveforms`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.signal import resample_poly

from jsqa.audio import load_audio, write_audio
from jsqa.models.mos import MOSModel
from jsqa.scoring.predict import load_model, score_files
from jsqa.scoring.windows import score_waveforms
from jsqa.signal.distortions import Bandpass, Clip, Distortion, Mnru, MuLaw, PacketLoss, Reverb

GAIN_DB = 20.0
SILENCE_S = 4.0
LOW_RATE = 16000
# One clearly audible setting per beyond-noise family (the demo's and the pairs' families).
CODECS: dict[str, Distortion] = {
    "mnru_q10": Mnru(10.0),
    "narrowband_300_3400": Bandpass(3400.0),
    "mulaw_4bit": MuLaw(4),
    "clip_-20db": Clip(-20.0),
    "packet_loss_15pct": PacketLoss(0.15),
    "reverb_rt60_0.8s": Reverb(0.8),
}


def corpus_table(corpus: Path, clips: int, seed: int) -> tuple[pd.DataFrame, Path]:
    """Up to ``clips`` rows of the corpus CSV (test split when it has one), drawn with ``seed``,
    and the folder its file paths are relative to."""
    csv = corpus if corpus.is_file() else next(iter(sorted(corpus.rglob("NISQA_corpus_file.csv"))), None)
    if csv is None:
        raise SystemExit(f"{corpus}: no NISQA_corpus_file.csv found")
    table = pd.read_csv(csv)
    if "split" in table.columns and (table["split"] == "test").any():
        table = table[table["split"] == "test"]
    table = table.dropna(subset=["filepath_deg", "filepath_ref"])
    take = min(clips, len(table))
    rows = table.sample(n=take, random_state=seed) if take < len(table) else table
    return rows.reset_index(drop=True), csv.parent


def silence_row(model: MOSModel, tmp: Path) -> dict:
    """``jsqa predict`` on a 4 s file of zeros at the model's rate."""
    path = tmp / "silence.wav"
    write_audio(path, np.zeros(int(SILENCE_S * model.sample_rate), dtype=np.float32), model.sample_rate, "FLOAT")
    [row] = score_files(model, [path])
    return {"mos": row["mos"], "error": row["error"]}


def probe(model: MOSModel, rows: pd.DataFrame, base: Path) -> dict:
    """Every figure of the module docstring, as a dict."""
    sr = model.sample_rate
    deg = [load_audio(base / p, sr)[0] for p in rows["filepath_deg"]]
    ref = [load_audio(base / p, sr)[0] for p in rows["filepath_ref"]]
    gain = np.float32(10 ** (GAIN_DB / 20))
    codec = [np.asarray(d(x, sr, seed=i), dtype=np.float32) for d in CODECS.values() for i, x in enumerate(ref)]
    scores = score_waveforms(model, deg + [x / gain for x in deg] + [x * gain for x in deg] + ref + codec, sr)
    n = len(deg)
    at0, quiet, loud, clean = scores[:n], scores[n : 2 * n], scores[2 * n : 3 * n], scores[3 * n : 4 * n]
    by_codec = scores[4 * n :].reshape(len(CODECS), n)
    gain_delta = np.concatenate([np.abs(quiet - at0), np.abs(loud - at0)])
    with tempfile.TemporaryDirectory(prefix="jsqa-probe-") as name:
        tmp = Path(name)
        silence = silence_row(model, tmp)
        originals, lowered = [], []
        for i, p in enumerate(rows["filepath_deg"]):
            x, file_sr = load_audio(base / p, None)
            g = math.gcd(int(file_sr), LOW_RATE)
            originals.append(base / p)
            lowered.append(tmp / f"low{i}.wav")
            write_audio(lowered[-1], resample_poly(x, LOW_RATE // g, int(file_sr) // g), LOW_RATE, "FLOAT")
        full = score_files(model, originals)
        low = score_files(model, lowered)
    pairs = [(a["mos"], b["mos"]) for a, b in zip(full, low) if a["mos"] is not None and b["mos"] is not None]
    rate_delta = np.abs(np.subtract(*zip(*pairs))) if pairs else np.full(1, np.nan)
    return {
        "clips": n,
        "input_level_dbov": getattr(model, "input_level_dbov", None),
        "silence_4s": silence,
        "gain_pm20db_mean_abs_delta": float(gain_delta.mean()),
        "gain_pm20db_max_abs_delta": float(gain_delta.max()),
        "clean_minus_noisy_mean": float((clean - at0).mean()),
        "clean_above_noisy_share": float((clean > at0).mean()),
        "resample_16k_mean_abs_delta": float(rate_delta.mean()),
        "resample_16k_max_abs_delta": float(rate_delta.max()),
        "resample_16k_scored_pairs": len(pairs),
        "codec_drop": {name: float((clean - s).mean()) for name, s in zip(CODECS, by_codec)},
    }


def print_report(described: str, out: dict) -> None:
    print(f"model: {described} (input_level_dbov: {out['input_level_dbov']})")
    print(f"clips: {out['clips']}")
    s = out["silence_4s"]
    print(f"silence_4s: {'error: ' + s['error'] if s['error'] else format(s['mos'], '.3f')}")
    print(
        f"gain_pm20db: mean |delta| {out['gain_pm20db_mean_abs_delta']:.4f}  max {out['gain_pm20db_max_abs_delta']:.4f}"
    )
    print(
        f"clean_minus_noisy: mean {out['clean_minus_noisy_mean']:+.3f}  clean higher in "
        f"{out['clean_above_noisy_share']:.0%} of clips"
    )
    print(
        f"resample_16k: mean |delta| {out['resample_16k_mean_abs_delta']:.4f}  "
        f"max {out['resample_16k_max_abs_delta']:.4f}  ({out['resample_16k_scored_pairs']} clips scored)"
    )
    for name, drop in out["codec_drop"].items():
        print(f"codec_drop {name}: clean minus distorted {drop:+.3f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint, model folder or models:/NAME@alias")
    ap.add_argument("--corpus", type=Path, default=Path("data/raw/demo"))
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path("."), help="project root (for the MLflow store)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the silence row's warning is in the report already
    torch.set_num_threads(args.threads)
    model, described = load_model(args.model, args.root)
    rows, base = corpus_table(args.corpus, args.clips, args.seed)
    out = probe(model, rows, base)
    print_report(described, out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": described, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
