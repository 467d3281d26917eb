"""The demo's labels: the proxy MOS (fwSNRseg through a logistic), the per-dimension proxies
and each clip's evaluation condition. Objective stand-ins, not human ratings."""

from __future__ import annotations

import functools
import math

import numpy as np
import torchaudio.functional as AF

from jsqa.audio import check_signal
from jsqa.data.demo.degrade import BANDPASS_HIGH_HZ, MNRU_Q_DB, REVERB_RT60_S
from jsqa.errors import AudioError
from jsqa.signal.levels import active_speech_level

NOI_MID_DB, NOI_SLOPE_DB = 12.5, 6.0
LOUD_TARGET_DBOV = -26.0
# Degradation -> (dimension it lowers, severity parameter points, scores there), linear between
# the points and flat beyond them. Fixed-parameter kinds score the same everywhere.
DIMENSION_PROXIES: dict[str, tuple[str, tuple[float, float], tuple[float, float]]] = {
    "bandlimit_nb": ("col", (0.0, 1.0), (2.5, 2.5)),
    "bandlimit_wb": ("col", (0.0, 1.0), (4.2, 4.2)),
    "bandpass": ("col", BANDPASS_HIGH_HZ, (1.8, 4.2)),  # upper cutoff, Hz
    "reverb": ("col", REVERB_RT60_S, (4.2, 1.8)),  # RT60, s
    "mnru": ("col", MNRU_Q_DB, (1.5, 4.2)),  # Q, dB
    "mulaw8": ("col", (0.0, 1.0), (4.0, 4.0)),
    "quantise": ("col", (6.0, 8.0), (2.5, 3.5)),  # bits
    "clipping": ("dis", (-20.0, -6.0), (1.8, 3.8)),  # threshold, dB below the peak
    "packet_loss": ("dis", (0.05, 0.25), (3.8, 1.5)),  # share of 20 ms frames lost
}

# Proxy label constants (see proxy_mos). C and S were fitted on this generator's clips so that
# additive noise from -5 to 40 dB SNR spans about 1.2 to 4.6.
FW_FRAME_S = 0.032
FW_BANDS = 32
FW_FMIN, FW_FMAX = 50.0, 8000.0
FW_GAMMA = 0.2
FW_CLIP_DB = (-10.0, 35.0)
MOS_C = 17.5
MOS_S = 5.5

# SNR bands (dB) of the demo's conditions: the MOS clips' SNR range cut in three.
CONDITION_SNR_EDGES_DB = (10.0, 25.0)


# --------------------------------------------------------------------------- per-dimension proxies


def _logistic(x: float, mid: float, slope: float) -> float:
    """1 + 4 / (1 + exp(-(x - mid) / slope)): a score on the 1-5 scale."""
    return 1.0 + 4.0 / (1.0 + math.exp(-(x - mid) / slope))


def dimension_proxies(kind: str, param: float, snr_db: float, deg: np.ndarray, sr: int) -> dict[str, float]:
    """Objective stand-ins for NISQA's per-dimension MOS columns, each in [1, 5]; not ratings.

    - ``noi`` (noisiness): the additive-noise SNR through a logistic,
      ``1 + 4 / (1 + exp(-(snr_db - 12.5) / 6))`` (-5 dB: 1.2, 40 dB: 4.96).
    - ``col`` (coloration) and ``dis`` (discontinuity): the clip's degradation, when it is one of
      that dimension's in :data:`DIMENSION_PROXIES`, scored linearly in its severity parameter;
      5 when the clip has none.
    - ``loud`` (loudness): the active speech level L of ``deg`` against the -26 dBov target,
      ``5 - max(0, |L + 26| - 2) / 3`` clamped to [1, 5]: 5 within 2 dB of the target. The demo
      is level-normalised, so this falls only where loud noise raises the level.
    """
    out = {"noi": _logistic(snr_db, NOI_MID_DB, NOI_SLOPE_DB), "col": 5.0, "dis": 5.0}
    if kind in DIMENSION_PROXIES:
        dim, xs, ys = DIMENSION_PROXIES[kind]
        out[dim] = float(np.interp(param, xs, ys))
    level = active_speech_level(np.asarray(deg, dtype=np.float64), sr)
    out["loud"] = min(5.0, max(1.0, 5.0 - max(0.0, abs(level - LOUD_TARGET_DBOV) - 2.0) / 3.0))
    return out


# --------------------------------------------------------------------------- proxy label


@functools.lru_cache(maxsize=16)
def _melbank(n_fft: int, sr: int) -> np.ndarray:
    fmax = min(FW_FMAX, sr / 2)
    fb = AF.melscale_fbanks(n_fft // 2 + 1, FW_FMIN, fmax, FW_BANDS, sr, norm=None, mel_scale="htk")
    fb = fb.numpy().astype(np.float64)
    # Bins above the top band carry no weight; dropping them makes the product 3x cheaper at 48 kHz.
    return fb[: int(np.flatnonzero(fb.any(axis=1)).max()) + 1]


def _band_energies(x: np.ndarray, sr: int) -> np.ndarray:
    n = int(round(FW_FRAME_S * sr))
    hop = n // 2
    frames = 1 + max(0, len(x) - n) // hop
    x = np.pad(x.astype(np.float64), (0, max(0, n - len(x))))
    windows = np.lib.stride_tricks.sliding_window_view(x, n)[::hop][:frames]
    bank = _melbank(n, sr)
    spec = np.fft.rfft(windows * np.hanning(n), axis=1)[:, : len(bank)]
    # einsum rather than @: inside the worker pool, BLAS threads spinning on this small
    # product cost more CPU than the product itself.
    return np.einsum("fk,kb->fb", spec.real**2 + spec.imag**2, bank)


def fwsnrseg(deg: np.ndarray, ref: np.ndarray, sr: int) -> float:
    """Frequency-weighted segmental SNR (dB) of ``deg`` against the aligned clean ``ref``.

    Per 32 ms Hann frame (50 % overlap) and per band of a 32-band mel filterbank over
    50-8000 Hz: SNR_j = 10 log10(|X_j|^2 / (|X_j| - |Y_j|)^2), clipped to [-10, 35] dB, where
    |X_j|, |Y_j| are the band magnitudes of ref and deg; the frame value is the average of
    SNR_j weighted by |X_j|^0.2; the result is the mean over frames whose ref energy lies
    within 40 dB of the loudest frame (pauses carry no reference to weigh against).
    """
    deg = check_signal(np.asarray(deg, dtype=np.float64).ravel(), "deg")
    ref = check_signal(np.asarray(ref, dtype=np.float64).ravel(), "ref")
    if deg.shape != ref.shape:
        raise AudioError(f"fwsnrseg: deg has {deg.size} samples, ref {ref.size}; they must be aligned")
    er, ed = _band_energies(ref, sr), _band_energies(deg, sr)
    frame_energy = er.sum(axis=1)
    if frame_energy.max() <= 0:
        raise AudioError("fwsnrseg: the reference is silent")
    active = frame_energy >= frame_energy.max() * 1e-4
    xr, xd = np.sqrt(er[active]), np.sqrt(ed[active])
    err = np.maximum((xr - xd) ** 2, 1e-30)
    snr = np.clip(10 * np.log10(np.maximum(xr**2, 1e-30) / err), *FW_CLIP_DB)
    w = xr**FW_GAMMA
    per_frame = (w * snr).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-30)
    return float(per_frame.mean())


def proxy_mos(deg: np.ndarray, ref: np.ndarray, sr: int) -> float:
    """Objective stand-in for a MOS, in [1, 5]; not a human rating.

    ``x = fwsnrseg(deg, ref, sr)`` (see :func:`fwsnrseg`: 32 ms frames, 32 mel bands
    50-8000 Hz, SNR clipped to [-10, 35] dB, weights |ref band|^0.2), then
    ``mos = 1 + 4 / (1 + exp(-(x - 17.5) / 5.5))``. A clean reference scored against itself
    gets 4.84 (x = 35); additive noise at -5 / 10 / 30 dB SNR (active speech level over noise
    power) gets about 1.3 / 2.6 / 4.4 averaged over the noise families, 40 dB about 4.6.
    """
    x = fwsnrseg(deg, ref, sr)
    return float(1 + 4 / (1 + math.exp(-(x - MOS_C) / MOS_S)))


# --------------------------------------------------------------------------- conditions


def demo_condition(kind: str, snr_db: float) -> str:
    """A demo clip's condition: its degradation and SNR band, e.g. ``mulaw8/snr10-25``."""
    lo, hi = CONDITION_SNR_EDGES_DB
    band = f"snr<{lo:g}" if snr_db < lo else (f"snr{lo:g}-{hi:g}" if snr_db < hi else f"snr>={hi:g}")
    return f"{kind}/{band}"
