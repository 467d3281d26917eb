"""Throughput of JND pair generation against its I/O floor, and its peak memory per corpus size.

Run: .venv/bin/python benchmarks/pairs_throughput.py [--sizes 800,3200] [--workers 2]
     [--noises 6] [--shard-size 256] [--repeats 3] [--keep DIR]
For each size, a synthetic corpus (speech-like utterances of 2-4 s, half WAV and half FLAC, plus
20 s noises) is written to a temporary folder, then two measured phases run, each in a fresh
Python process so the corpus build is not counted (imports inside the phase are):

* floor: the same plan's shards with the same number of processes and start method; per shard,
  decode every clean and noise file the shard reads (soundfile.read to float32, as the stage
  does) and np.save an int16 array of the shard's output shape, filled (so its pages are real,
  not the kernel's zero page): the same bytes in the same .npy format the stage writes;
* pairs: jsqa.pairs.generate.generate_pairs with ``pairs.workers`` = --workers.

CPU is getrusage(RUSAGE_SELF) + getrusage(RUSAGE_CHILDREN) of the measuring process: worker
and forkserver CPU included (the pools are shut down and the forkserver reaped before the second
reading). Peak memory is the largest sum over the whole process tree of the measuring process
(PSS from /proc/PID/smaps_rollup, so pages forked workers share count once), sampled every
20 ms by this (unmeasured) parent.

Shared machines drift by 10% or more within a minute, so the two phases alternate --repeats
times (floor, pairs, floor, pairs, ...; each into a new folder, deleted after the run) and each ratio
pairs a floor run with the pairs run right after it. Prints one table: median CPU of each
phase, the median ratio and the range of the ratios, and the largest peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

# Only light imports at the top: floor workers re-import this file, and their start-up should
# cost what reading files costs, not what pandas or jsqa cost.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from jsqa.config import PairsConfig

SR = 16000


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonic voice with gliding pitch, syllable envelope and pauses between words."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum(np.sin(h * phase) / h for h in range(1, 10))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3, 6) * t))
    words = (t % rng.uniform(0.5, 0.8)) < 0.4
    return (rng.uniform(0.05, 0.3) * voice * syllables * words).astype(np.float32)


def make_corpus(root: Path, n_utterances: int, n_noises: int, seed: int = 0) -> None:
    """Write clean/*.{wav,flac}, noise/*.wav and manifests/{clean,noise}.parquet under ``root``."""
    import pandas as pd
    from scipy.signal import lfilter

    from jsqa.data.manifests import relpath, write_manifest

    rng = np.random.default_rng(seed)
    clean, noise = [], []
    for i in range(n_utterances):
        x = speech_like(rng.uniform(2.0, 4.0), rng)
        path = root / "clean" / f"u{i:05d}.{'flac' if i % 2 else 'wav'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, SR, subtype="PCM_16")
        clean.append(
            {
                "id": path.stem,
                "path": relpath(path, root),
                "duration": x.size / SR,
                "sample_rate": SR,
                "channels": 1,
                "speaker": f"s{i % 40:02d}",
            }
        )
    for j in range(n_noises):
        # Coloured noise: white noise through a one-pole low-pass of a random corner.
        a = rng.uniform(0.0, 0.95)
        n = lfilter([1 - a], [1, -a], rng.standard_normal(20 * SR))
        n = (0.2 * n / np.max(np.abs(n))).astype(np.float32)
        path = root / "noise" / f"n{j:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, n, SR, subtype="PCM_16")
        noise.append(
            {
                "id": path.stem,
                "path": relpath(path, root),
                "duration": n.size / SR,
                "sample_rate": SR,
                "channels": 1,
                "environment": "synthetic",
            }
        )
    write_manifest(root / "manifests" / "clean.parquet", pd.DataFrame(clean), "clean")
    write_manifest(root / "manifests" / "noise.parquet", pd.DataFrame(noise), "noise")


# ---------------------------------------------------------------- measured phases (child process)


def _usage() -> tuple[float, int]:
    """(CPU seconds of this process and its reaped children, peak RSS in KiB of either)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return cpu, max(me.ru_maxrss, kids.ru_maxrss)


def _reap_forkserver() -> None:
    # Pool workers are children of the forkserver, which reaps them; its CPU (theirs
    # included) reaches our RUSAGE_CHILDREN only once we reap it in turn. _stop is private
    # but exists since 3.8; without it worker CPU would silently go missing.
    server = multiprocessing.forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:
        server._stop()


def _floor_shard(args: tuple[list[str], list[str], tuple[int, int, int], str]) -> int:
    clean_paths, noise_paths, shape, out = args
    for p in clean_paths + noise_paths:
        sf.read(p, dtype="float32")
    pcm = np.empty(shape, np.int16)
    pcm.fill(1)
    with open(out, "wb") as fh:
        np.save(fh, pcm)
    return shape[0]


def phase_floor(root: Path, out: Path, cfg: PairsConfig, seed: int) -> dict:
    from jsqa.data.manifests import read_manifest, resolve
    from jsqa.pairs.plan import plan_pairs
    from jsqa.pairs.render import segment_samples

    plan = plan_pairs(
        read_manifest(root / "manifests" / "clean.parquet", "clean"),
        read_manifest(root / "manifests" / "noise.parquet", "noise"),
        cfg,
        seed,
        SR,
    )
    seg = segment_samples(cfg, SR)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (
            [str(resolve(p, root)) for p in rows["clean_path"].unique()],
            [str(resolve(p, root)) for p in rows["noise_path"].unique()],
            (len(rows), 2, seg),
            str(out / f"floor-{shard:05d}.npy"),
        )
        for shard, rows in plan.groupby("shard", sort=True)
    ]
    cpu0, t0 = _usage()[0], time.perf_counter()
    if cfg.workers > 1 and len(jobs) > 1:  # as generate_pairs decides
        ctx = multiprocessing.get_context("forkserver")  # its start method too
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx) as pool:
            n = sum(pool.map(_floor_shard, jobs))
    else:
        n = sum(map(_floor_shard, jobs))
    _reap_forkserver()
    wall = time.perf_counter() - t0
    cpu, rss = _usage()
    return {"n_pairs": n, "cpu_s": cpu - cpu0, "wall_s": wall, "peak_rss_kib": rss}


def phase_pairs(root: Path, out: Path, cfg: PairsConfig, seed: int) -> dict:
    from jsqa.pairs.generate import generate_pairs

    cpu0, t0 = _usage()[0], time.perf_counter()
    pairset = generate_pairs(
        root / "manifests" / "clean.parquet", root / "manifests" / "noise.parquet", cfg, seed, out, SR, root=root
    )
    _reap_forkserver()
    wall = time.perf_counter() - t0
    cpu, rss = _usage()
    return {"n_pairs": pairset.n, "cpu_s": cpu - cpu0, "wall_s": wall, "peak_rss_kib": rss}


def _tree_pss_kib(root_pid: int) -> int:
    """PSS (RSS where PSS is unavailable) summed over ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        for name, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
            try:
                with open(name) as fh:
                    line = next((ln for ln in fh if ln.startswith(key)), None)
            except OSError:
                continue
            if line is not None:
                total += int(line.split()[1])
                break
    return total


def _run_phase(phase: str, root: Path, out: Path, cfg: PairsConfig, seed: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--root",
        str(root),
        "--out",
        str(out),
        "--cfg",
        json.dumps(dataclasses.asdict(cfg)),
        "--seed",
        str(seed),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_pss_kib(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{phase} phase failed:\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["tree_peak_pss_kib"] = peak[0]
    return result


def _pairs_config(raw: dict) -> PairsConfig:
    from jsqa.config import params_from_dict

    return params_from_dict({"pairs": raw}).pairs


def main() -> None:
    import pandas as pd

    from jsqa.config import PairsConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="800,3200", help="utterances per corpus, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noises", type=int, default=6)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--repeats", type=int, default=3, help="floor/pairs alternations per size")
    parser.add_argument("--keep", help="build corpora here and keep them (default: a temp dir)")
    parser.add_argument("--phase", choices=["floor", "pairs"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cfg", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        cfg = _pairs_config(json.loads(args.cfg))
        fn = phase_floor if args.phase == "floor" else phase_pairs
        print(json.dumps(fn(Path(args.root), Path(args.out), cfg, args.seed)))
        return

    cfg = dataclasses.replace(PairsConfig().for_profile("paper"), workers=args.workers, shard_size=args.shard_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="jsqa-pairs-bench-") as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        for size in [int(s) for s in args.sizes.split(",")]:
            root = base / f"corpus-{size}"
            make_corpus(root, size, args.noises)
            floors, pairs = [], []
            for _ in range(max(1, args.repeats)):
                for phase, runs in (("floor", floors), ("pairs", pairs)):
                    # Each phase writes new files, and its output is deleted right after, so
                    # every phase starts from the same state: the stage always writes new
                    # files (else it would resume), and a floor that overwrote its previous
                    # output wrote a shard in 6 ms of CPU against 15-20 ms for a new file.
                    shutil.rmtree(root / phase, ignore_errors=True)
                    runs.append(_run_phase(phase, root, root / phase, cfg, args.seed))
                    shutil.rmtree(root / phase)
            ratios = [p["cpu_s"] / f["cpu_s"] for f, p in zip(floors, pairs)]
            pairs_cpu = statistics.median(p["cpu_s"] for p in pairs)
            audio_s = pairs[0]["n_pairs"] * 2 * cfg.segment_seconds
            rows.append(
                {
                    "utterances": size,
                    "pairs": pairs[0]["n_pairs"],
                    "audio_out_s": audio_s,
                    "pairs_cpu_s": pairs_cpu,
                    "pairs_wall_s": statistics.median(p["wall_s"] for p in pairs),
                    "audio_s_per_cpu_s": audio_s / pairs_cpu,
                    "floor_cpu_s": statistics.median(f["cpu_s"] for f in floors),
                    "ratio_to_floor": statistics.median(ratios),
                    "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
                    "pairs_tree_peak_mib": max(p["tree_peak_pss_kib"] for p in pairs) / 1024,
                    "floor_tree_peak_mib": max(f["tree_peak_pss_kib"] for f in floors) / 1024,
                    "pairs_max_proc_rss_mib": max(p["peak_rss_kib"] for p in pairs) / 1024,
                }
            )
    table = pd.DataFrame(rows)
    print(
        f"workers={args.workers} shard_size={args.shard_size} segment={cfg.segment_seconds}s "
        f"pairs/utterance={cfg.pairs_per_utterance} repeats={args.repeats} (medians; ratio_range: all runs)"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
