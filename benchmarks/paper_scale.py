"""Rehearse the ``paper`` profile end to end at growing size and extrapolate to the paper's 460 h.

For each ``--hours`` size: stand-in LibriSpeech, DEMAND and NISQA archives in their real layouts
(benchmarks/rehearsal_corpora.py) are served by a loopback HTTP server as ``data.corpora.mirrors``
with their md5s as ``data.corpora.checksums``; a fresh copy of this project with
``data.profile: paper`` then runs every stage through ``dvc repro`` (one ``--single-item`` call per
stage, in dvc.yaml order, so each is measured alone): downloads, extraction, manifests, validation,
pairs, pretraining (``--pretrain-steps`` steps), calibration, fine-tuning of both inits,
evaluation with peers and registration. Per stage it prints wall and CPU time, audio hours per CPU
hour, peak RSS and what the stage added on disk, and how each grew from the previous size. The
last line extrapolates to LibriSpeech train-clean-100 + 360 (464.2 h, 132,553 utterances), the
five DEMAND environments and the whole NISQA corpus (about 14,000 clips), starting
``extrapolated to 460 h:``.

    .venv/bin/python benchmarks/paper_scale.py --hours 0.25
    .venv/bin/python benchmarks/paper_scale.py --hours 0.25 1 2 --json capacity.json
    .venv/bin/python benchmarks/paper_scale.py --fit capacity.json   # table and fit again, no runs

``--scale-out`` also times the pairs through ``flows/pairs_dask.py`` on a local Dask cluster and
pretraining through ``torchrun`` with 2 CPU processes, against the single-process stages.
``--interrupt`` kills (SIGKILL) acquire mid-download, pairs mid-render and pretraining
mid-run, runs each again with ``dvc repro`` and reports the work lost and whether the outputs
ended equal to the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.rehearsal_corpora import Mirror, build_mirror  # noqa: E402
from tests.dvc_projects import copy_repo  # noqa: E402 (the pipeline tests' project copy)
from tests.httpserver import LoopbackFileServer  # noqa: E402 (the download tests' server)

BIN = Path(sys.executable).parent
# The paper's corpora (docs/data.md; train-clean-360's bytes estimated from its hours at
# train-clean-100's 63.5 MB/h; DEMAND: five 16 kHz zips of 80-120 MB; NISQA: 15.9 GiB).
FULL = {
    "speech_hours": 464.2,
    "utterances": 132_553,
    # NISQA's subsets as published: 10,000 + 1,020 train, 2,500 + 200 val, 240 + 232 + 240 test.
    "mos_clips": 14_432,
    "test_clips": 712,
    "archive_bytes": 6_387_309_499 + 6_387_309_499 * 363.6 / 100.6 + 5 * 110e6 + 15.9 * 2**30,
}
# Folders (and files) of a project whose disk use is tracked; hardlinked files count once.
DISK = {
    "downloads": ("data/downloads",),
    "raw": ("data/raw",),
    "manifests": ("data/manifests", "data/validation"),
    "pairs": ("data/pairs",),
    "models": ("models",),
    "dvc_cache": (".dvc/cache",),
    "mlflow": ("mlflow.db", "mlartifacts", "mlruns"),
    "peer_cache": ("data/peer_cache",),
}
# What each stage's work grows with: "bytes" of corpus archives, "speech" hours, pretraining
# "steps", MOS "clips" (train and val: fine-tuning), "test_clips"; "fixed" stages do not grow.
DRIVER = {
    "check_params": "fixed",
    "acquire": "bytes",
    "validate": "bytes",
    "pairs": "speech",
    "pretrain": "steps",
    "calibrate": "test_clips",
    "finetune": "clips",
    "finetune_scratch": "clips",
    "evaluate": "test_clips",
    "register": "fixed",
}
# ---------------------------------------------------------------------------- the project


def rehearsal_params(base: dict, mirror: Mirror, url: str, args: argparse.Namespace) -> dict:
    """``base`` (the project's params.yaml) switched to the paper profile on the served mirror."""
    p = json.loads(json.dumps(base))
    p["data"]["profile"] = "paper"
    p["data"]["corpora"].update(
        librispeech_subsets=["train-clean-100", "train-clean-360"],
        noise_sources=["demand"],
        nisqa_subsets=mirror.nisqa_subsets,
        accept_nisqa_licence=True,
        mirrors={name: f"{url}/{name}" for name in ("librispeech", "demand", "nisqa")},
        checksums=mirror.checksums,
    )
    p["validate"]["workers"] = args.workers
    p["pairs"]["workers"] = args.workers
    p["model"]["size"] = args.model_size
    p["pretrain"].update(max_steps=args.pretrain_steps, checkpoint_every=max(1, args.pretrain_steps // 4))
    # Every fine-tuning run goes the whole cap (patience = cap), so its cost per epoch is exact.
    p["finetune"].update(epochs=args.finetune_epochs, patience=args.finetune_epochs, seeds=args.seeds)
    p["evaluate"]["bootstrap_resamples"] = 200
    return p


def project_env(project: Path) -> dict[str, str]:
    """The environment stages run in: this interpreter's venv, nothing of the caller's MLflow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        JSQA_PYTHON=sys.executable,
        DVC_NO_ANALYTICS="1",
        GX_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(project / ".prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(project),
        OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"),
    )
    return env


# ---------------------------------------------------------------------------- measuring


def disk_usage(project: Path) -> dict[str, int]:
    """Bytes on disk per :data:`DISK` group and in all (``total``: a hardlinked file once)."""
    seen: set[tuple[int, int]] = set()
    out = dict.fromkeys(DISK, 0)
    for group, paths in DISK.items():
        for rel in paths:
            path = project / rel
            files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()) if path.exists() else ()
            for f in files:
                st = f.lstat()
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    out[group] += st.st_blocks * 512
    out["total"] = sum(out[g] for g in DISK)
    return out


# Runs a command and writes the CPU seconds and largest peak RSS (KiB) of everything it waited
# for. A small process of its own: a child forked straight from this one would count this
# process's memory (the corpus generator's) as its own peak, since Linux keeps it across exec.
_MEASURE = (
    "import json, resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(json.dumps([ru.ru_utime + ru.ru_stime, ru.ru_maxrss]))\n"
    "sys.exit(rc)\n"
)


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> dict[str, float]:
    """Run ``cmd``; return its wall and CPU seconds and the peak RSS (GiB) of its largest process."""
    usage = log_path.with_name("usage.json")
    start = time.perf_counter()
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        rc = subprocess.call(
            [sys.executable, "-c", _MEASURE, str(usage), *cmd], cwd=cwd, env=env, stdout=log, stderr=log
        )
    wall = time.perf_counter() - start
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}); log {log_path}:\n{tail}")
    cpu, maxrss_kib = json.loads(usage.read_text())
    return {"wall_s": wall, "cpu_s": cpu, "rss_gib": maxrss_kib / 2**20}


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[LoopbackFileServer]:
    """Serve ``folder`` on 127.0.0.1 (a free port, HTTP Range requests) for the time of the block."""
    server = LoopbackFileServer(folder, max_requests=10**6)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def stage_names(project: Path) -> list[str]:
    """The stages of the project's dvc.yaml, in order."""
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def read_metric(project: Path, rel: str, key: str) -> float | None:
    path = project / rel
    return json.loads(path.read_text()).get(key) if path.is_file() else None


# ---------------------------------------------------------------------------- one size


def rehearse(hours: float, work: Path, args: argparse.Namespace) -> dict:
    """Build the mirror, run every stage of a fresh project on it; return the measurements."""
    t0 = time.perf_counter()
    mirror = build_mirror(work / "mirror", hours, seed=args.seed, mos_clips=args.mos_clips)
    build_s = time.perf_counter() - t0
    project = copy_repo(work / "project")
    env = project_env(project)
    log_path = work / "stages.log"
    base = yaml.safe_load((project / "params.yaml").read_text())
    size = {
        "hours": hours,
        "speech_hours": mirror.speech_hours,
        "utterances": mirror.utterances,
        "speakers": mirror.speakers,
        "mos_clips": mirror.mos_clips,
        "test_clips": mirror.test_clips,
        "archive_bytes": sum(mirror.archive_bytes.values()),
        "mirror_build_s": build_s,
        "pretrain_steps": args.pretrain_steps,
        "finetune_epochs": args.finetune_epochs,
        "seeds": args.seeds,
        "model_size": args.model_size,
        "workers": args.workers,
        "cores": os.cpu_count(),
        "stages": {},
    }
    with serve(mirror.root) as server:
        params = rehearsal_params(base, mirror, server.base_url, args)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        before = disk_usage(project)
        for stage in stage_names(project):
            m = run_measured([str(BIN / "dvc"), "repro", "--single-item", stage], project, env, log_path)
            after = disk_usage(project)
            m["disk_added"] = {k: after[k] - before[k] for k in after}
            size["stages"][stage] = m
            before = after
            print(f"  {hours:g} h {stage}: {m['wall_s']:.1f} s wall, {m['rss_gib']:.2f} GiB", flush=True)
        size["disk"] = before
        size["pairs"] = read_metric(project, "metrics/pretrain.json", "n_pairs")
        if args.interrupt:
            size["interrupt"] = interruptions(project, env, log_path, server, size)
    if args.scale_out:
        size["scale_out"] = scale_out(project, env, log_path, args)
    return size


def scale_out(project: Path, env: dict[str, str], log_path: Path, args: argparse.Namespace) -> dict:
    """Pairs through flows/pairs_dask.py and pretraining through torchrun (2 CPU processes)."""
    out: dict = {}
    dask_out = project / "data" / "pairs_dask"
    cmd = [sys.executable, "-m", "flows.pairs_dask", "--params", "params.yaml", "--out", str(dask_out)]
    out["pairs_dask"] = run_measured([*cmd, "--workers", str(args.workers)], project, env, log_path)
    same = [
        (dask_out / f.relative_to(project / "data" / "pairs")).read_bytes() == f.read_bytes()
        for f in sorted((project / "data" / "pairs").rglob("*"))
        if f.is_file()
    ]
    out["pairs_dask"]["identical"] = all(same) and len(same) > 0
    # Two processes of one thread each against the stage's one process of `workers` threads.
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["pretrain"]["threads"] = max(1, args.workers // 2)
    (project / "params_ddp.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    ddp = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "jsqa.cli", "pretrain"]
    ddp += ["--params", "params_ddp.yaml", "--out", "models/encoder_ddp.pt", "--metrics", "metrics/pretrain_ddp.json"]
    out["pretrain_ddp"] = run_measured(ddp, project, env, log_path)
    out["pretrain_ddp"]["steps"] = read_metric(project, "metrics/pretrain_ddp.json", "steps")
    out["pretrain_ddp"]["world_size"] = 2
    out.update(one_worker(project, env, log_path))
    return out


def one_worker(project: Path, env: dict[str, str], log_path: Path) -> dict[str, dict]:
    """validate and pairs with one worker (outside DVC, into side folders), against the stages'."""
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["validate"]["workers"] = p["pairs"]["workers"] = 1
    (project / "params_serial.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    jsqa, side = str(project / "bin" / "jsqa"), project / "data" / "serial"
    validate = [jsqa, "validate", "--params", "params_serial.yaml", "--manifests", "data/manifests"]
    validate += ["--out", str(side / "validation"), "--docs", str(side / "validation" / "gx")]
    pairs = [
        jsqa,
        "pairs",
        "--params",
        "params_serial.yaml",
        "--manifests",
        "data/manifests",
        "--out",
        str(side / "pairs"),
    ]
    return {
        "validate_1_worker": run_measured(validate, project, env, log_path),
        "pairs_1_worker": run_measured(pairs, project, env, log_path),
    }


# ---------------------------------------------------------------------------- interruptions


def lock_outs(project: Path, stage: str) -> list[tuple[str, str | None]]:
    """The (path, md5) of a stage's outputs as dvc.lock records them."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return [(o["path"], o.get("md5")) for o in lock["stages"][stage].get("outs", [])]


def kill_when(cmd: list[str], project: Path, env: dict[str, str], log_path: Path, ready: Callable[[], bool]) -> float:
    """Run ``cmd`` in its own process group and SIGKILL the group (no handler runs: a crash or a
    pre-empted machine) as soon as ``ready()``; return the seconds it ran."""
    start = time.perf_counter()
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(cmd)}   # killed part way\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None and not ready():
            time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} ended before the point it was to be killed at")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.perf_counter() - start


def interruptions(
    project: Path, env: dict[str, str], log_path: Path, server: LoopbackFileServer, size: dict
) -> dict[str, dict]:
    """Kill acquire mid-download, pairs mid-render and pretraining mid-run, run each again with
    ``dvc repro``; return what each resume cost and whether its outputs ended equal."""
    archive = server.folder / "nisqa" / "NISQA_Corpus.zip"
    nisqa = project / "data" / "downloads" / "nisqa"
    part = nisqa / "archives" / f"{archive.name}.part"
    ready: dict[str, Callable[[], bool]] = {
        "acquire": lambda: part.is_file() and part.stat().st_size > archive.stat().st_size / 3,
        "pairs": lambda: any((project / "data" / "pairs.partial").glob("shard-*.arrow")),
        "pretrain": lambda: any((project / "models" / "encoder.pt.ckpt").glob("*")),
    }
    dvc, out = str(BIN / "dvc"), {}
    for stage, is_ready in ready.items():
        before, n_requests = lock_outs(project, stage), len(server.requests)
        if stage == "acquire":  # the largest archive again, slowed to about 8 s, killed at a third
            shutil.rmtree(nisqa)
            server.rate = archive.stat().st_size / 8
        killed = kill_when([dvc, "repro", "--single-item", "--force", stage], project, env, log_path, is_ready)
        server.rate = None
        # --force: dvc.lock holds the uninterrupted run, whose outputs DVC would check out of its
        # cache instead of running the stage (a first run, killed, has no lock entry to restore).
        again = [dvc, "repro", "--single-item", "--force", stage]
        resumed = run_measured(again, project, env, log_path)
        whole = size["stages"][stage]["wall_s"]
        out[stage] = {
            "killed_after_s": killed,
            "resumed_wall_s": resumed["wall_s"],
            "lost_s": killed + resumed["wall_s"] - whole,
            "equal": lock_outs(project, stage) == before,
            "range_requests": [r.range for r in server.requests[n_requests:] if r.range],
        }
        print(f"  interrupted {stage}: {out[stage]}", flush=True)
    return out


# ---------------------------------------------------------------------------- report and fit


def driver_value(size: dict, driver: str) -> float:
    """The amount of work a stage grows with, at this size."""
    return {
        "bytes": size["archive_bytes"],
        "speech": size["speech_hours"],
        "steps": size["pretrain_steps"],
        "clips": size["mos_clips"] - size["test_clips"],
        "test_clips": size["test_clips"],
        "fixed": 1.0,
    }[driver]


def full_driver(driver: str, user: dict) -> float:
    """The same amount for the paper's corpora under the user's params.yaml (``user``)."""
    pairs = FULL["utterances"] * user["pairs"]["pairs_per_utterance"]
    steps = math.ceil(pairs / user["pretrain"]["batch_size"]) * user["pretrain"]["epochs"]
    full = {
        "bytes": FULL["archive_bytes"],
        "speech": FULL["speech_hours"],
        "steps": steps,
        "clips": FULL["mos_clips"] - FULL["test_clips"],
        "test_clips": FULL["test_clips"],
    }
    return float(full.get(driver, 1.0))


def runs_factor(stage: str, size: dict, user: dict) -> float:
    """How many more training runs or epochs the user's settings ask for than the rehearsal ran."""
    seeds = user["finetune"]["seeds"] / size["seeds"]
    if stage in ("finetune", "finetune_scratch"):
        return seeds * user["finetune"]["epochs"] / size["finetune_epochs"]
    return seeds if stage == "evaluate" else 1.0


def affine_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(c, a) of y = c + a x by least squares, c >= 0; through the origin with one point."""
    if len(set(xs)) < 2:
        return 0.0, ys[-1] / xs[-1]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    c = my - a * mx
    if a < 0:  # does not grow (within the noise): its largest value, flat
        return max(ys), 0.0
    if c < 0:  # overhead cannot be negative: proportional growth
        return 0.0, sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return c, a


def exponent(x0: float, x1: float, y0: float, y1: float) -> float | None:
    """b of y ~ x^b between two sizes (None where either does not grow)."""
    if x1 <= x0 or y0 <= 0 or y1 <= 0:
        return None
    return math.log(y1 / y0) / math.log(x1 / x0)


def extrapolate(sizes: list[dict], user: dict) -> dict:
    """Per stage wall, CPU and RSS at the paper's scale, and its disk, from the measured sizes."""
    stages: dict[str, dict] = {}
    for stage in sizes[-1]["stages"]:
        driver = DRIVER.get(stage, "fixed")
        xs = [driver_value(s, driver) for s in sizes]
        x_full, factor = full_driver(driver, user), runs_factor(stage, sizes[-1], user)
        row = {}
        for key in ("wall_s", "cpu_s"):
            c, a = affine_fit(xs, [s["stages"][stage][key] for s in sizes])
            row[key] = c + a * x_full * factor
        rss = [s["stages"][stage]["rss_gib"] for s in sizes]
        # One size cannot tell memory that grows from memory that does not: taken as flat.
        c, a = affine_fit(xs, rss) if len(set(xs)) > 1 else (rss[-1], 0.0)
        row["rss_gib"] = max(c + a * x_full, max(rss))
        stages[stage] = row
    return {"stages": stages, "disk": extrapolate_disk(sizes, user)}


# What fills each disk group; the DVC cache follows what DVC stores (raw, manifests, pairs, models).
DISK_DRIVER = {
    "downloads": "bytes",
    "raw": "speech",
    "manifests": "speech",
    "pairs": "pairs",
    "models": "fixed",
    "mlflow": "fixed",
    "peer_cache": "test_clips",
}


def extrapolate_disk(sizes: list[dict], user: dict) -> dict[str, float]:
    """Bytes per disk group at the paper's scale, each fitted (c + a x) on what fills it."""
    full_pairs = FULL["utterances"] * user["pairs"]["pairs_per_utterance"]
    out: dict[str, float] = {}
    for group, driver in DISK_DRIVER.items():
        xs = [float(s.get("pairs") or 1) if driver == "pairs" else driver_value(s, driver) for s in sizes]
        x_full = full_pairs if driver == "pairs" else full_driver(driver, user)
        c, a = affine_fit(xs, [float(s["disk"][group]) for s in sizes])
        out[group] = c + a * x_full
    last = sizes[-1]["disk"]
    stored = sum(last[g] for g in ("raw", "manifests", "pairs", "models"))
    cache_share = last["dvc_cache"] / stored if stored else 0.0
    out["dvc_cache"] = cache_share * sum(out[g] for g in ("raw", "manifests", "pairs", "models"))
    out["total"] = sum(out.values())
    return out


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def print_size(size: dict, previous: dict | None) -> None:
    """The per-stage table of one size, with growth from ``previous``."""
    print(
        f"\n== {size['hours']:g} h asked: {size['speech_hours']:.3f} h of speech ({size['utterances']:,} utterances,"
        f" {size['speakers']} speakers), {size['mos_clips']:,} MOS clips, archives {_mb(size['archive_bytes'])} MB;"
        f" pretraining {size['pretrain_steps']} steps, fine-tuning {size['finetune_epochs']} epochs x"
        f" {size['seeds']} seed(s), model {size['model_size']}, {size['cores']} cores"
    )
    head = f"{'stage':<17}{'wall s':>9}{'CPU s':>9}{'audio h/CPU h':>15}{'peak RSS GiB':>14}{'disk +MB':>11}"
    print(head + ("   growth from previous: wall x, RSS x, exponent b of wall" if previous else ""))
    for stage, m in size["stages"].items():
        rate = size["speech_hours"] / (m["cpu_s"] / 3600) if m["cpu_s"] > 0 else float("nan")
        line = (
            f"{stage:<17}{m['wall_s']:>9.1f}{m['cpu_s']:>9.1f}{rate:>15.1f}{m['rss_gib']:>14.2f}"
            f"{_mb(m['disk_added']['total']):>11}"
        )
        if previous and stage in previous["stages"]:
            p = previous["stages"][stage]
            driver = DRIVER.get(stage, "fixed")
            b = exponent(driver_value(previous, driver), driver_value(size, driver), p["wall_s"], m["wall_s"])
            line += f"   {m['wall_s'] / p['wall_s']:.2f}x, {m['rss_gib'] / p['rss_gib']:.2f}x"
            line += f", b={b:.2f} in {driver}" if b is not None else f" ({driver})"
        print(line)
    disk = ", ".join(f"{k} {_mb(v)}" for k, v in size["disk"].items())
    print(f"disk at the end (MB; hardlinked files once): {disk}")
    for stage, r in size.get("interrupt", {}).items():
        print(
            f"killed {stage} (SIGKILL) after {r['killed_after_s']:.1f} s; `dvc repro` again: {r['resumed_wall_s']:.1f} s"
            f" (uninterrupted {size['stages'][stage]['wall_s']:.1f} s, work lost {r['lost_s']:.1f} s);"
            f" outputs equal to the uninterrupted run's: {r['equal']}; Range requests: {r['range_requests'] or 'none'}"
        )
    if "scale_out" in size:
        print_scale_out(size)


def print_scale_out(size: dict) -> None:
    """Dask pairs, torchrun pretraining and one-worker validate/pairs against the stages."""
    so, st = size["scale_out"], size["stages"]
    dask = so["pairs_dask"]
    print(
        f"pairs through flows/pairs_dask.py ({size['workers']} Dask workers): {dask['wall_s']:.1f} s against the stage's"
        f" {st['pairs']['wall_s']:.1f} s ({st['pairs']['wall_s'] / dask['wall_s']:.2f}x); same bytes: {dask['identical']}"
    )
    ddp, steps = so["pretrain_ddp"], size["pretrain_steps"]
    one, two = steps / st["pretrain"]["wall_s"], 2 * (ddp.get("steps") or steps) / ddp["wall_s"]
    print(
        f"pretraining through torchrun, 2 processes: {ddp['wall_s']:.1f} s for {ddp.get('steps')} steps of 2 batches"
        f" against {st['pretrain']['wall_s']:.1f} s for {steps} steps of one: {two / one:.2f}x the batches per second"
    )
    for stage in ("validate", "pairs"):
        m = so.get(f"{stage}_1_worker")
        if m:
            print(
                f"{stage} with 1 worker: {m['wall_s']:.1f} s; with {size['workers']}: {st[stage]['wall_s']:.1f} s"
                f" ({m['wall_s'] / st[stage]['wall_s']:.2f}x faster)"
            )


def _h(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h"


def print_extrapolation(sizes: list[dict], user: dict) -> None:
    """The 460 h table and, last, the one-line summary."""
    ex = extrapolate(sizes, user)
    steps = int(full_driver("steps", user))
    print(
        f"\n== extrapolated to {FULL['speech_hours']} h ({FULL['utterances']:,} utterances), 5 DEMAND environments,"
        f" {FULL['mos_clips']:,} NISQA clips ({FULL['test_clips']} test); fits over {len(sizes)} size(s): t = c + a x per stage"
    )
    print(f"{'stage':<17}{'wall':>10}{'CPU':>10}{'peak RSS GiB':>14}  grows with")
    for stage, row in ex["stages"].items():
        print(f"{stage:<17}{_h(row['wall_s']):>10}{_h(row['cpu_s']):>10}{row['rss_gib']:>14.2f}  {DRIVER.get(stage)}")
    print("disk (GB): " + ", ".join(f"{k} {v / 1e9:,.1f}" for k, v in ex["disk"].items()))
    wall = sum(r["wall_s"] for r in ex["stages"].values())
    peak = max(ex["stages"].items(), key=lambda kv: kv[1]["rss_gib"])
    parts = ", ".join(f"{k} {_h(r['wall_s'])}" for k, r in ex["stages"].items() if r["wall_s"] >= 360)
    last = sizes[-1]
    print(
        f"extrapolated to 460 h: {_h(wall)} on these {last['cores']} cores ({parts}; pretraining {steps:,} steps of the"
        f" {last['model_size']} encoder, fine-tuning {user['finetune']['epochs']} epochs x {user['finetune']['seeds']}"
        f" seeds at most); GPU (paper encoder, bf16): not measured; disk {ex['disk']['total'] / 1e9:,.0f} GB;"
        f" peak RAM {peak[1]['rss_gib']:.1f} GiB ({peak[0]})"
    )


def print_markdown(sizes: list[dict], user: dict) -> None:
    """The sizes side by side and the 460 h column, as Markdown tables (docs/capacity.md)."""
    ex = extrapolate(sizes, user)["stages"]
    head = " | ".join(f"{s['speech_hours']:.2f} h" for s in sizes)
    for title, key, fmt, full in (
        ("wall s (CPU s)", "wall_s", "{:.1f} ({:.1f})", lambda r: f"{_h(r['wall_s'])} ({_h(r['cpu_s'])})"),
        ("peak RSS GiB", "rss_gib", "{:.2f}", lambda r: f"{r['rss_gib']:.2f}"),
    ):
        print(f"\n| {title} | grows with | {head} | 460 h, extrapolated |")
        print("|---|---|" + "---|" * (len(sizes) + 1))
        for stage in sizes[-1]["stages"]:
            cells = []
            for s in sizes:
                m = s["stages"][stage]
                cells.append(fmt.format(m["wall_s"], m["cpu_s"]) if key == "wall_s" else fmt.format(m[key]))
            print(f"| {stage} | {DRIVER.get(stage)} | {' | '.join(cells)} | {full(ex[stage])} |")


def report(sizes: list[dict], user: dict, markdown: bool = False) -> None:
    """Every size's table, then the extrapolation."""
    if markdown:
        print_markdown(sizes, user)
    for i, size in enumerate(sizes):
        print_size(size, sizes[i - 1] if i else None)
    print_extrapolation(sizes, user)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, nargs="+", help="speech hours of each size, smallest first")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="validate/pairs workers")
    ap.add_argument("--keep", type=Path, help="keep each size's mirror and project under this folder")
    ap.add_argument("--json", type=Path, help="write the measurements here (read back with --fit)")
    ap.add_argument("--fit", type=Path, nargs="+", help="report from earlier --json files instead of running")
    ap.add_argument("--markdown", action="store_true", help="with --fit: also the sizes side by side in Markdown")
    ap.add_argument("--pretrain-steps", type=int, default=100, help="pretraining optimizer steps (a CPU bound)")
    ap.add_argument("--finetune-epochs", type=int, default=6, help="fine-tuning epochs per run (no early stop)")
    ap.add_argument("--seeds", type=int, default=1, help="fine-tuning runs per init")
    ap.add_argument("--model-size", default="small", choices=("small", "paper"))
    ap.add_argument("--mos-clips", type=int, help="MOS clips (default: grows with --hours)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--scale-out", action="store_true", help="also time Dask pairs and torchrun pretraining")
    ap.add_argument("--interrupt", action="store_true", help="also kill acquire, pairs, pretrain part way and resume")
    args = ap.parse_args(argv)
    if not args.hours and not args.fit:
        ap.error("give --hours (to run) or --fit (to report earlier runs)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    user = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.fit:
        sizes = sorted((s for f in args.fit for s in json.loads(f.read_text())), key=lambda s: s["speech_hours"])
        report(sizes, user, args.markdown)
        return 0
    sizes = []
    for hours in sorted(args.hours):
        base = args.keep or Path(tempfile.mkdtemp(prefix="jsqa-rehearsal-"))
        work = base / f"{hours:g}h"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        print(f"rehearsing {hours:g} h in {work}", flush=True)
        try:
            sizes.append(rehearse(hours, work, args))
        finally:
            if args.keep is None:
                shutil.rmtree(base, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(sizes, indent=1))
    report(sizes, user)
    return 0


if __name__ == "__main__":
    sys.exit(main())
