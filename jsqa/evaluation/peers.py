"""Established quality predictors ("peers") scored on the same test clips as the jsqa models.

Each peer is a small wrapper: what it is (name, version, input rate, licence, training data),
whether it needs the clean reference, and ``score(deg, ref)`` on mono float32 audio at its own
rate (the caller resamples). Heavy packages are imported on first use, so listing peers costs
nothing. No peer downloads anything: speechmos and distillmos ship their weights in their wheels.

NISQA's own weights (CC BY-NC-SA) are neither bundled nor downloaded and are not supported.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from jsqa.config import PEER_NAMES
from jsqa.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerInfo:
    """What a peer is; ``outputs`` are the score names it returns (one column each)."""

    name: str
    package: str
    model: str
    sample_rate: int
    licence: str
    trained_on: str
    outputs: tuple[str, ...]
    needs_reference: bool = False
    mos_scale: bool = True  # False: not on the 1-5 MOS scale (raw RMSE/MAE are not meaningful)

    @property
    def version(self) -> str:
        """Package version plus model id: the cache key part that changes when scores may change."""
        try:
            pkg = metadata.version(self.package)
        except metadata.PackageNotFoundError:
            pkg = "not-installed"
        return f"{self.package}-{pkg}+{self.model}"


class Peer(ABC):
    """A peer predictor: ``score`` returns {output: value} for one clip."""

    info: PeerInfo

    @abstractmethod
    def score(self, deg: np.ndarray, ref: np.ndarray | None = None) -> dict[str, float]:
        """Scores of one clip (mono float32 at ``info.sample_rate``; ``ref`` when needed)."""


class DNSMOS(Peer):
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 through speechmos (ONNX models in the wheel)."""

    info = PeerInfo(
        name="dnsmos",
        package="speechmos",
        model="dnsmos-sig_bak_ovr+p808-model_v8",
        sample_rate=16000,
        licence="MIT (speechmos; DNSMOS models by Microsoft, MIT)",
        trained_on="Microsoft DNS Challenge clips rated with P.808 / P.835 crowdsourcing (noisy and "
        "noise-suppressed speech)",
        outputs=("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"),
    )

    def score(self, deg: np.ndarray, ref: np.ndarray | None = None) -> dict[str, float]:
        from speechmos import dnsmos

        r = dnsmos.run(np.clip(deg, -1.0, 1.0).astype(np.float32), self.info.sample_rate)
        return {
            "dnsmos_sig": float(r["sig_mos"]),
            "dnsmos_bak": float(r["bak_mos"]),
            "dnsmos_ovrl": float(r["ovrl_mos"]),
            "dnsmos_p808": float(r["p808_mos"]),
        }


class DistillMOS(Peer):
    """DistillMOS (variant 7, distilled from XLS-R SQA) through the distillmos package."""

    info = PeerInfo(
        name="distillmos",
        package="distillmos",
        model="distill_mos_v7",
        sample_rate=16000,
        licence="MIT",
        trained_on="distilled from an XLS-R based SQA teacher trained on NISQA-corpus data (and "
        "other MOS sets); scores on NISQA test sets are not independent of that training",
        outputs=("distillmos",),
    )

    def __init__(self) -> None:
        self._model = None

    def score(self, deg: np.ndarray, ref: np.ndarray | None = None) -> dict[str, float]:
        import torch

        if self._model is None:
            import distillmos

            self._model = distillmos.ConvTransformerSQAModel().eval()
        with torch.no_grad():
            value = self._model(torch.from_numpy(np.ascontiguousarray(deg, dtype=np.float32))[None])  # type: ignore[misc]
        return {"distillmos": float(value.reshape(-1)[0])}


class PESQ(Peer):
    """PESQ wide-band (ITU-T P.862.2) MOS-LQO through the pesq package; needs the clean reference."""

    info = PeerInfo(
        name="pesq",
        package="pesq",
        model="p862.2-wb",
        sample_rate=16000,
        licence="MIT (python wrapper); the ITU-T P.862 reference code carries ITU's own terms",
        trained_on="not trained: a perceptual model calibrated by ITU-T on subjective tests",
        outputs=("pesq_wb",),
        needs_reference=True,
    )

    def score(self, deg: np.ndarray, ref: np.ndarray | None = None) -> dict[str, float]:
        from pesq import PesqError, pesq

        if ref is None:
            raise ValueError("PESQ needs the clean reference")
        n = min(len(ref), len(deg))
        try:
            value = pesq(self.info.sample_rate, ref[:n].astype(np.float64), deg[:n].astype(np.float64), "wb")
        except PesqError as exc:  # e.g. no utterance detected in the reference
            log.warning("PESQ undefined for a clip (%s); left out", exc)
            value = float("nan")
        return {"pesq_wb": float(value)}


class STOI(Peer):
    """Short-time objective intelligibility (0-1) through pystoi; needs the clean reference."""

    info = PeerInfo(
        name="stoi",
        package="pystoi",
        model="stoi",
        sample_rate=16000,
        licence="MIT",
        trained_on="not trained: an intelligibility measure (Taal et al. 2011); works at 10 kHz internally",
        outputs=("stoi",),
        needs_reference=True,
        mos_scale=False,
    )

    def score(self, deg: np.ndarray, ref: np.ndarray | None = None) -> dict[str, float]:
        from pystoi import stoi

        if ref is None:
            raise ValueError("STOI needs the clean reference")
        n = min(len(ref), len(deg))
        return {"stoi": float(stoi(ref[:n], deg[:n], self.info.sample_rate, extended=False))}


def _peers(*classes: type[Peer]) -> dict[str, type[Peer]]:
    """Name -> class for ``classes``, in the order of :data:`jsqa.config.PEER_NAMES` (the names
    ``evaluate.peers`` accepts); TypeError when the two lists of names differ."""
    by_name = {cls.info.name: cls for cls in classes}
    if set(by_name) != set(PEER_NAMES):
        raise TypeError(f"peer classes {sorted(by_name)} differ from jsqa.config.PeerName {sorted(PEER_NAMES)}")
    return {name: by_name[name] for name in PEER_NAMES}


PEERS: dict[str, type[Peer]] = _peers(DNSMOS, DistillMOS, PESQ, STOI)


def make_peers(names: Sequence[str]) -> list[Peer]:
    """The peers named (in order); ConfigError for an unknown name."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ConfigError(f"evaluate.peers: unknown peer(s) {', '.join(unknown)} (choose from {', '.join(PEERS)})")
    return [PEERS[n]() for n in names]


def output_info(peers: Sequence[Peer]) -> dict[str, PeerInfo]:
    """Each output column -> the peer that produces it."""
    return {out: p.info for p in peers for out in p.info.outputs}
