"""The stage contract as data: what each DVC stage runs, reads, depends on and writes.

``dvc.yaml`` is generated from :data:`STAGES` (``python -m jsqa.dvc_yaml --write``) and checked
against the code (``python -m jsqa.dvc_yaml --check``, and ``tests/test_stages.py``); the
rendering and the static analysis behind the check are in :mod:`jsqa.dvc_yaml`. This module is
the table and that command only, so what the table says stays readable on one page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = "dvc.yaml"

# Settings that change how fast a stage runs, never what it writes, so listing them would
# re-run (and re-train) a stage for nothing. Pair rendering is seeded per utterance, so the
# worker count does not change the shards; validate measures each file on its own, whatever
# its thread count; threads and checkpoint spacing do not change the arithmetic on CPU. `device` may change floating point (GPU kernels differ from CPU ones):
# treating it as execution is a choice, since outputs already differ across machines anyway
# (which is why dvc.lock is not committed, docs/remote.md).
EXECUTION_KEYS: frozenset[str] = frozenset(
    {
        "pairs.workers",
        "pretrain.threads",
        "pretrain.device",
        "pretrain.checkpoint_every",
        "finetune.threads",
        "finetune.device",
        "validate.workers",
        # Deterministic kernels change no number on a CPU (its kernels are deterministic already)
        # and, on a GPU, only rounding, not what a run is expected to give: like `device`.
        "train.deterministic",
        "evaluate.device",
    }
)


def no_cache(path: str, **options: Any) -> dict[str, dict[str, Any]]:
    """A metrics/plots/outs entry kept in git's working tree, not DVC's cache."""
    return {path: {"cache": False, **options}}


@dataclass(frozen=True)
class Stage:
    """One DVC stage: its command, CLI entry module, data inputs, params keys and outputs.

    ``extra_code`` names files the code loads by path rather than by import (the MLflow
    "models from code" entry files), which import analysis cannot see.
    """

    name: str
    cmd: str
    entry: str
    inputs: tuple[str, ...] = ()
    params: tuple[Any, ...] = ()
    outs: tuple[Any, ...] = ()
    metrics: tuple[Any, ...] = ()
    plots: tuple[Any, ...] = ()
    extra_code: tuple[str, ...] = ()


_MOS = "data/manifests/mos.parquet"
_VERDICT = "data/validation/report.json"  # deterministic; the Data Docs (timestamped) are apart
_MODEL = ("model.size", "model.projection_head")
_FINETUNE = (
    "seed",
    "data.profile",
    "data.sample_rate",
    *_MODEL,
    "finetune.epochs",
    "finetune.batch_size",
    "finetune.learning_rate",
    "finetune.encoder_learning_rate",
    "finetune.weight_decay",
    "finetune.dropout",
    "finetune.loss",
    "finetune.crop_seconds",
    "finetune.patience",
    "finetune.seeds",
    "finetune.label_fraction",
    "finetune.equal_compute_epochs",
    "finetune.input_level_dbov",
    "finetune.gain_augment_db",
    "finetune.calibrate_std",
)

STAGES: tuple[Stage, ...] = (
    # Depends on the whole of params.yaml, so any edit (a mistyped key included) makes it stale and
    # the next `dvc repro` checks the file, even when no other stage would run.
    Stage("check_params", "bin/jsqa check-params", "jsqa.cli.check_params", params=({"params.yaml": None},)),
    Stage(
        "acquire",
        "bin/jsqa acquire --out data/raw --manifests data/manifests",
        "jsqa.cli.acquire",
        params=("seed", "data.profile", "data.sample_rate", "data.demo", "data.corpora"),
        outs=("data/raw", "data/manifests"),
    ),
    Stage(
        "validate",
        "bin/jsqa validate --manifests data/manifests --out data/validation --docs data/validation/gx",
        "jsqa.cli.validate",
        inputs=("data/manifests",),
        params=(
            "data.sample_rate",
            "validate.min_duration_s",
            "validate.max_duration_s",
            "validate.mos_range",
            "validate.min_rms_dbov",
            "validate.speech_level_dbov",
        ),
        outs=(_VERDICT, "data/validation/gx"),
    ),
    Stage(
        "pairs",
        "bin/jsqa pairs --manifests data/manifests --out data/pairs",
        "jsqa.cli.pairs",
        inputs=("data/manifests/clean.parquet", "data/manifests/noise.parquet", _VERDICT),
        params=(
            "seed",
            "data.profile",
            "data.sample_rate",
            "pairs.jnd_db",
            "pairs.snr_db",
            "pairs.clean_anchor_prob",
            "pairs.pairs_per_utterance",
            "pairs.shared_segment",
            "pairs.segment_seconds",
            "pairs.speech_level_dbov",
            "pairs.shard_size",
            "pairs.distortions",
        ),
        outs=("data/pairs",),
    ),
    Stage(
        "pretrain",
        "bin/jsqa pretrain --pairs data/pairs --out models/encoder.pt --metrics metrics/pretrain.json",
        "jsqa.cli.pretrain",
        inputs=("data/pairs",),
        params=(
            "seed",
            *_MODEL,
            "pretrain.epochs",
            "pretrain.batch_size",
            "pretrain.group_size",
            "pretrain.learning_rate",
            "pretrain.weight_decay",
            "pretrain.temperature",
            "pretrain.mask_jnd_negatives",
            "pretrain.precision",
            "pretrain.warmup_steps",
            "pretrain.clip_norm",
            "pretrain.max_steps",
        ),
        outs=("models/encoder.pt",),
        metrics=(no_cache("metrics/pretrain.json"),),
    ),
    Stage(
        "calibrate",
        "bin/jsqa calibrate --encoder models/encoder.pt --manifests data/manifests"
        " --out models/jnd_calibration.json --metrics metrics/jnd.json",
        "jsqa.cli.calibrate",
        # Held-out JND pairs: the test split's clean references (mos manifest) with the noise files.
        inputs=("models/encoder.pt", "data/manifests/clean.parquet", "data/manifests/noise.parquet", _MOS, _VERDICT),
        params=(
            "seed",
            "pairs.jnd_db",
            "pairs.snr_db",
            "pairs.segment_seconds",
            "pairs.speech_level_dbov",
            "calibrate.pairs_per_utterance",
            "calibrate.max_delta_jnd",
        ),
        outs=("models/jnd_calibration.json",),
        metrics=(no_cache("metrics/jnd.json"),),
    ),
    Stage(
        "finetune",
        f"bin/jsqa finetune --manifest {_MOS} --encoder models/encoder.pt"
        " --out models/mos_pretrained.pt --metrics metrics/finetune_pretrained.json"
        " --curves plots/finetune_pretrained_curves.csv",
        "jsqa.cli.finetune",
        inputs=(_MOS, _VERDICT, "models/encoder.pt"),
        params=_FINETUNE,
        # The other finetune.seeds models sit in <out>.seeds; seeds.json lists all.
        outs=("models/mos_pretrained.pt", "models/mos_pretrained.seeds"),
        metrics=(no_cache("metrics/finetune_pretrained.json"),),
        plots=(
            no_cache("plots/finetune_pretrained_curves.csv", template="scatter", x="epoch", y="val_rmse"),
            no_cache("plots/finetune_pretrained_curves.png"),
        ),
    ),
    Stage(
        "finetune_scratch",
        f"bin/jsqa finetune --manifest {_MOS} --out models/mos_scratch.pt --metrics metrics/finetune_scratch.json"
        " --curves plots/finetune_scratch_curves.csv",
        "jsqa.cli.finetune",
        inputs=(_MOS, _VERDICT),
        params=_FINETUNE,
        outs=("models/mos_scratch.pt", "models/mos_scratch.seeds"),
        metrics=(no_cache("metrics/finetune_scratch.json"),),
        plots=(
            no_cache("plots/finetune_scratch_curves.csv", template="scatter", x="epoch", y="val_rmse"),
            no_cache("plots/finetune_scratch_curves.png"),
        ),
    ),
    Stage(
        "evaluate",
        f"bin/jsqa evaluate --manifest {_MOS}"
        " --model pretrained=models/mos_pretrained.pt --model scratch=models/mos_scratch.pt"
        " --metrics metrics/evaluate.json --plots plots --report reports/evaluate.html --jnd metrics/jnd.json",
        "jsqa.cli.evaluate",
        inputs=(
            _MOS,
            "models/mos_pretrained.pt",
            "models/mos_pretrained.seeds",
            "models/mos_scratch.pt",
            "models/mos_scratch.seeds",
            "metrics/jnd.json",
        ),
        params=("seed", "data.sample_rate", "evaluate.test_sets", "evaluate.bootstrap_resamples", "evaluate.peers"),
        # The HTML page (tables + plots) a person reads; peers' per-clip scores are cached under
        # data/peer_cache, which only saves time and is not an output.
        outs=(no_cache("reports/evaluate.html"),),
        # Cached (not git-tracked: metrics/ is ignored), so a DVC experiment keeps it and `dvc exp
        # show` (hence `jsqa study`) can read every experiment's evaluation.
        metrics=("metrics/evaluate.json",),
        plots=(
            no_cache("plots/predictions.csv", template="scatter", x="mos", y="pred_pretrained"),
            no_cache("plots/scatter.png"),
            # One row per (predictor, test set) and per (predictor, condition): `dvc plots diff`
            # shows two experiments' models and peers side by side.
            no_cache("plots/metrics.csv", template="bar_horizontal", x="pcc", y="predictor"),
            no_cache("plots/conditions.csv", template="scatter", x="mos", y="pred"),
            no_cache("plots/conditions.png"),
        ),
    ),
    Stage(
        "register",
        "bin/jsqa register --encoder models/encoder.pt --mos models/mos_pretrained.pt"
        " --evaluation metrics/evaluate.json --manifests data/manifests --calibration models/jnd_calibration.json"
        " --jnd-metrics metrics/jnd.json --out metrics/register.json",
        "jsqa.cli.register",
        # The manifests' hashes tag the registered versions; the encoder carries its JND calibration.
        inputs=(
            "models/encoder.pt",
            "models/mos_pretrained.pt",
            "metrics/evaluate.json",
            "data/manifests",
            "models/jnd_calibration.json",
            "metrics/jnd.json",
        ),
        # data.profile: the model card's licence and label notes.
        params=(
            "data.profile",
            "register.encoder_name",
            "register.mos_name",
            "register.alias",
            "register.metric",
            "register.min_improvement",
            "register.direction",
        ),
        outs=(no_cache("metrics/register.json"),),
        # Logged into each model as "models from code" files, by path.
        extra_code=("jsqa/scoring/pyfunc_code/encoder.py", "jsqa/scoring/pyfunc_code/mos.py"),
    ),
)
