"""Resumable pretraining: a killed run continues exactly; SIGTERM saves and exits; bad resumes are refused."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dvc_projects import blank_project  # noqa: F401

from jsqa.config import ModelConfig, PretrainConfig
from jsqa.errors import JsqaError
from jsqa.io import read_json
from jsqa.models.mos import encoder_from_checkpoint, load_checkpoint
from jsqa.pairs.store import load_pairs
from jsqa.train.checkpointing import LAST, TrainingInterrupted, load_train_state
from jsqa.train.common import autocast_dtype
from jsqa.train.pair_batches import PairBatchLoader
from jsqa.train.pretrain import contrastive_loss, pretrain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelConfig(size="small", projection_head=True)
SEED = 7
# 48 pairs in batches of 8: 6 steps an epoch.
CFG = PretrainConfig(epochs=20, batch_size=8, group_size=4, threads=2, learning_rate=2e-3, checkpoint_every=1)


class _Stop(Exception):
    pass


def _run_until(pairs: Path, out: Path, last_step: int, cfg: PretrainConfig, resume: str = "auto") -> dict[int, float]:
    """Pretrain in this process, checkpointing every step, and stop after ``last_step``; return per-step losses."""
    losses: dict[int, float] = {}

    def on_step(step: int, m: dict[str, float]) -> None:
        losses[step] = m["loss"]
        if step >= last_step:
            raise _Stop

    with pytest.raises(_Stop):
        pretrain(pairs, MODEL, cfg, SEED, out, on_step=on_step, resume=resume)
    return losses


def _params_file(tmp_path: Path, cfg: PretrainConfig) -> Path:
    path = tmp_path / "params.yaml"
    fields = {
        k: getattr(cfg, k)
        for k in ("epochs", "batch_size", "group_size", "threads", "learning_rate", "checkpoint_every")
    }
    path.write_text(yaml.safe_dump({"seed": SEED, "model": {"size": "small"}, "pretrain": fields}))
    return path


def _cli(tmp_path: Path, pairs: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [
        sys.executable,
        "-m",
        "jsqa.cli",
        "pretrain",
        "--params",
        str(tmp_path / "params.yaml"),
        "--root",
        str(tmp_path),
        "--pairs",
        str(pairs),
        "--out",
        str(out),
        "--metrics",
        str(tmp_path / "pretrain.json"),
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)


def _wait_for_training(proc: subprocess.Popen) -> list[str]:
    """Read stderr until the loop has started (its parameter-count line), and return what was read."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "trainable parameters" in line:
            return lines
    raise AssertionError("pretrain exited before training: " + "".join(lines))


def test_a_run_killed_after_a_checkpoint_resumes_with_the_same_next_step(small_pairs, tmp_path, empty_mlflow_store):
    empty_mlflow_store(tmp_path / "mlflow.db")
    _params_file(tmp_path, CFG)
    out_b = tmp_path / "b" / "encoder.pt"
    proc = _cli(tmp_path, small_pairs, out_b)
    ckpt = out_b.with_name("encoder.pt.ckpt") / LAST
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs, only what checkpoint_every saved survives
    proc.communicate()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    k = int(torch.load(ckpt, weights_only=True)["step"])
    assert k >= 1

    out_a = tmp_path / "a" / "encoder.pt"
    a = _run_until(small_pairs, out_a, k + 1, CFG)
    b = _run_until(small_pairs, out_b, k + 1, CFG, resume="resume")
    assert sorted(b) == [k + 1]  # the resumed run starts right after the checkpoint
    assert b[k + 1] == pytest.approx(a[k + 1], abs=1e-6)
    wa = torch.load(out_a.with_name("encoder.pt.ckpt") / LAST, weights_only=True)
    wb = torch.load(ckpt, weights_only=True)
    assert wa["step"] == wb["step"] == k + 1
    for name, tensor in wa["model"].items():
        torch.testing.assert_close(wb["model"][name], tensor, rtol=0, atol=1e-6)


def test_sigterm_saves_a_checkpoint_with_a_clear_message_and_resume_finishes(small_pairs, tmp_path, empty_mlflow_store):
    empty_mlflow_store(tmp_path / "mlflow.db")
    cfg = dataclasses.replace(CFG, epochs=1, checkpoint_every=0)
    _params_file(tmp_path, cfg)
    out = tmp_path / "encoder.pt"
    proc = _cli(tmp_path, small_pairs, out)
    _wait_for_training(proc)  # the handler is in place before this line is logged
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step" in err and "run the same command again to continue" in err
    assert not out.exists()
    raw = torch.load(out.with_name("encoder.pt.ckpt") / LAST, weights_only=True)  # no pickled objects
    state = load_train_state(out.with_name("encoder.pt.ckpt"), raw["params_hash"], json.loads(raw["params"]))
    stopped_at = int(state["step"])
    assert 1 <= stopped_at < 6

    proc = _cli(tmp_path, small_pairs, out, "--resume")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert f"resuming from {out.with_name('encoder.pt.ckpt') / LAST}: step {stopped_at} of 6" in err
    summary = read_json(tmp_path / "pretrain.json")
    assert summary["steps"] == 6 and summary["n_parameters"] == 93_120
    assert encoder_from_checkpoint(load_checkpoint(out)).embedding_dim == 64
    assert not out.with_name("encoder.pt.ckpt").exists()  # a finished run leaves no stale state


def test_resume_is_refused_without_a_checkpoint_or_with_other_params(small_pairs, tmp_path, caplog):
    out = tmp_path / "encoder.pt"
    with pytest.raises(JsqaError, match="no checkpoint to resume from"):
        pretrain(small_pairs, MODEL, CFG, SEED, out, resume="resume")
    _run_until(small_pairs, out, 2, CFG)
    changed = dataclasses.replace(CFG, learning_rate=1e-4, threads=1)
    with pytest.raises(JsqaError, match=r"different parameters \(changed: pretrain.learning_rate\)"):
        pretrain(small_pairs, MODEL, changed, SEED, out, resume="resume")
    # by default a checkpoint made with other parameters is replaced, and the log says why
    with caplog.at_level("INFO", logger="jsqa.train.checkpointing"):
        assert sorted(_run_until(small_pairs, out, 1, changed)) == [1]
    assert "starting afresh" in caplog.text and "changed: pretrain.learning_rate" in caplog.text
    caplog.clear()
    # --fresh ignores even a matching one
    with caplog.at_level("INFO", logger="jsqa.train.checkpointing"):
        assert sorted(_run_until(small_pairs, out, 1, changed, resume="fresh")) == [1]
    assert "starting afresh (--fresh): removed the checkpoints of an earlier run" in caplog.text


def _sigterm_after_start(proc: subprocess.Popen, ckpt: Path) -> str:
    """SIGTERM a pretraining CLI once its loop runs; return its stderr after it exits with a checkpoint."""
    _wait_for_training(proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert ckpt.exists()
    return err


def test_rerunning_the_same_command_continues_an_interrupted_run(small_pairs, tmp_path, empty_mlflow_store):
    """What `dvc repro`, `make pipeline` and a Prefect retry do: the same command line, no --resume."""
    empty_mlflow_store(tmp_path / "mlflow.db")
    _params_file(tmp_path, dataclasses.replace(CFG, epochs=1, checkpoint_every=0))
    out = tmp_path / "broken" / "encoder.pt"
    ckpt = out.with_name("encoder.pt.ckpt") / LAST
    _sigterm_after_start(_cli(tmp_path, small_pairs, out), ckpt)
    stopped_at = int(torch.load(ckpt, weights_only=True)["step"])

    proc = _cli(tmp_path, small_pairs, out)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert f"resuming from {ckpt}: step {stopped_at} of 6" in err
    assert read_json(tmp_path / "pretrain.json")["steps"] == 6

    unbroken = tmp_path / "unbroken" / "encoder.pt"
    proc = _cli(tmp_path, small_pairs, unbroken)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert out.read_bytes() == unbroken.read_bytes()


def test_dvc_repro_after_an_interruption_resumes_the_pretrain_stage(
    small_pairs, tmp_path, blank_project, empty_mlflow_store
):
    """Through real DVC: it deletes the stage's outs before rerunning, but the checkpoints are not outs."""
    root = tmp_path / "project"
    shutil.copytree(blank_project, root)
    empty_mlflow_store(root / "mlflow.db")
    _params_file(root, dataclasses.replace(CFG, epochs=1, checkpoint_every=0))
    cmd = shlex.join(
        [
            sys.executable,
            "-m",
            "jsqa.cli",
            "pretrain",
            "--params",
            "params.yaml",
            "--root",
            ".",
            "--pairs",
            str(small_pairs),
            "--out",
            "models/encoder.pt",
            "--metrics",
            "pretrain.json",
        ]
    )
    (root / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"pretrain": {"cmd": cmd, "outs": ["models/encoder.pt"]}}})
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    repro = [sys.executable, "-m", "dvc", "repro"]
    ckpt = root / "models" / "encoder.pt.ckpt" / LAST
    # A scheduler stopping a job signals its whole process group: dvc and the stage's command.
    proc = subprocess.Popen(repro, cwd=root, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_training(proc)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    assert ckpt.exists()
    stopped_at = int(torch.load(ckpt, weights_only=True)["step"])

    done = subprocess.run(repro, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming from models/encoder.pt.ckpt/{LAST}: step {stopped_at} of 6" in done.stderr
    assert load_checkpoint(root / "models" / "encoder.pt")["kind"] == "encoder"
    assert not ckpt.parent.exists()


def test_training_interrupted_carries_the_signal_and_step():
    exc = TrainingInterrupted("stopped", signal.SIGTERM, 5)
    assert isinstance(exc, JsqaError) and exc.signum == signal.SIGTERM and exc.step == 5


def test_bf16_autocast_is_chosen_only_where_it_pays_and_stays_close_to_fp32(small_pairs):
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    from jsqa.models.mos import PretrainModel, encoder_spec

    torch.manual_seed(0)
    model = PretrainModel(encoder_spec("small")).eval()
    pairs = load_pairs(small_pairs)
    batch = next(iter(PairBatchLoader(pairs, [np.arange(8)], cpu, with_mask=True, prefetch=0)))
    with torch.no_grad():
        fp32, _, _ = contrastive_loss(model, batch, 0.1, None)
        bf16, za, _ = contrastive_loss(model, batch, 0.1, torch.bfloat16)
    assert za.dtype == torch.float32  # the loss is always computed in fp32
    assert float(bf16) != float(fp32) and float(bf16) == pytest.approx(float(fp32), rel=0.05)


def test_stop_on_signals_sets_a_flag_and_restores_the_previous_handlers():
    from jsqa.train.signals import stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # Python runs handlers between bytecodes of the main thread
        assert stop.requested and stop.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_max_steps_bounds_a_run_and_its_schedule_ends_there(small_pairs, tmp_path):
    # A bounded rehearsal (pretrain.max_steps): 20 epochs of 6 steps asked, 4 run, the learning
    # rate decayed to 0 at the 4th, and the encoder is written as for a full run.
    lrs: dict[int, float] = {}
    cfg = dataclasses.replace(CFG, max_steps=4, checkpoint_every=0)
    out = tmp_path / "enc.pt"
    metrics = pretrain(small_pairs, MODEL, cfg, SEED, out, on_step=lambda s, m: lrs.__setitem__(s, m["lr"]))
    assert metrics["steps"] == 4 and sorted(lrs) == [1, 2, 3, 4]
    assert lrs[4] == pytest.approx(0.0, abs=1e-12) and lrs[1] > 0
    assert np.isfinite(metrics["loss"]) and out.is_file()
