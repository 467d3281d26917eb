"""Distortions beyond noise (jsqa.signal.distortions) and their use in JND pairs (jsqa.pairs)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pair_inputs import CFG, SR, T, clean_frame, noise_frame, speech_like
from scipy import signal

from jsqa.config import (
    BandpassConfig,
    ClipConfig,
    DistortionsConfig,
    LowpassConfig,
    MnruConfig,
    MulawConfig,
    PacketLossConfig,
    PairsConfig,
    ReverbConfig,
    load_params,
    params_from_dict,
)
from jsqa.errors import AudioError, ConfigError
from jsqa.pairs.generate import generate_pairs
from jsqa.pairs.jnd import within_jnd
from jsqa.pairs.plan import plan_pairs
from jsqa.pairs.render import DISTORTION_COLUMNS, PLAN_COLUMNS, render_pair
from jsqa.pairs.store import load_pairs
from jsqa.signal import distortions as D
from jsqa.signal.levels import active_speech_level

ALL_ON = DistortionsConfig(
    reverb=ReverbConfig(prob=0.15),
    lowpass=LowpassConfig(prob=0.15),
    mulaw=MulawConfig(prob=0.15),
    clip=ClipConfig(prob=0.15),
    packet_loss=PacketLossConfig(prob=0.15),
    mnru=MnruConfig(prob=0.1),
    bandpass=BandpassConfig(prob=0.1),
)
REPO = Path(__file__).resolve().parents[2]


def speech(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return speech_like(seconds, np.random.default_rng(seed))


# ---------------------------------------------------------------- each distortion


def test_reverb_tail_energy_rises_with_rt60() -> None:
    burst = np.zeros(SR)
    burst[:1600] = np.random.default_rng(0).standard_normal(1600)

    def tail_share(rt60: float) -> float:
        y = D.reverb(burst, rt60, SR, seed=3)
        return float(np.sum(y[1600:] ** 2) / np.sum(y**2))

    shares = [tail_share(rt) for rt in (0.2, 0.4, 0.8)]
    assert shares[0] < shares[1] < shares[2]
    assert shares[0] > 0.01
    rir = D.synthetic_rir(0.5, SR, seed=1)
    assert np.sum(rir**2) == pytest.approx(1.0)
    assert D.estimate_rt60(rir, SR) == pytest.approx(0.5, rel=0.15)
    # A measured response is reshaped to the requested decay.
    assert D.estimate_rt60(D.reshape_rir(rir, SR, 0.3), SR) == pytest.approx(0.3, rel=0.15)


def test_lowpass_removes_energy_above_cutoff() -> None:
    x = np.random.default_rng(1).standard_normal(SR)
    y = D.lowpass(x, 3000.0, SR)
    f, px = signal.welch(x, SR, nperseg=1024)
    _, py = signal.welch(y, SR, nperseg=1024)
    above, below = f > 3600, f < 2400
    assert np.sum(py[above]) / np.sum(px[above]) < 1e-3
    assert np.sum(py[below]) / np.sum(px[below]) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ConfigError, match="lowpass"):
        D.lowpass(x, 9000.0, SR)


def test_mulaw_error_shrinks_with_bits() -> None:
    x = 0.3 * speech()
    rms = np.sqrt(np.mean(x**2))
    errors = [np.sqrt(np.mean((D.mulaw(x, b) - x) ** 2)) / rms for b in (4, 6, 8, 10)]
    assert all(e1 > 2.0 * e2 for e1, e2 in itertools.pairwise(errors))
    assert errors[0] > 0.2 and errors[-1] < 0.01  # audible at 4 bits, near transparent at 10
    assert np.array_equal(D.mulaw(D.mulaw(x, 6), 6), D.mulaw(x, 6))  # idempotent: a codec grid


def test_clip_caps_waveform_and_keeps_active_level() -> None:
    x = speech(seed=2)
    for threshold_db in (-12.0, -3.0):
        y = D.clip(x, threshold_db, SR)
        # Capped: up to one gain, y is x cut at threshold_db below x's peak.
        limit = np.max(np.abs(x)) * 10 ** (threshold_db / 20)
        capped = np.clip(x, -limit, limit)
        assert np.allclose(y / np.max(np.abs(y)), capped / limit, atol=1e-12)
        assert np.mean(np.abs(x) > limit) > 0.001  # the cap did cut something
        assert active_speech_level(y, SR) == pytest.approx(active_speech_level(x, SR), abs=1e-6)
    assert np.array_equal(D.clip(np.zeros(100), -6.0, SR), np.zeros(100))


def test_packet_loss_zeroes_expected_share_of_frames() -> None:
    x = np.ones(SR * 20)  # 1000 frames of 20 ms
    frame = int(SR * D.PACKET_MS / 1000)
    y = D.packet_loss(x, 0.1, SR, seed=5).reshape(-1, frame)
    lost = (y == 0).all(axis=1)
    assert ((y == 0).all(axis=1) | (y == 1).all(axis=1)).all()  # whole frames only
    assert lost.mean() == pytest.approx(0.1, abs=0.03)
    # One seed: a higher rate loses a superset of the frames (members differ only by the step).
    more = D.packet_loss(x, 0.11, SR, seed=5).reshape(-1, frame)
    assert ((more == 0).all(axis=1) >= lost).all()


def test_mnru_noise_sits_q_db_below_the_signal() -> None:
    x = speech(10.0, seed=3)
    for q_db in (5.0, 20.0, 40.0):
        noise = D.Mnru(q_db)(x, SR, seed=4) - x
        snr = 10 * np.log10(np.sum(x**2) / np.sum(noise**2))
        assert snr == pytest.approx(q_db, abs=0.2)
    # Speech-correlated: silence stays silent, however low Q.
    assert not D.Mnru(0.0)(np.zeros(SR), SR, seed=4).any()
    # Deterministic from the seed; one seed and two Qs give the same noise, scaled.
    a, b = D.Mnru(10.0)(x, SR, 4), D.Mnru(12.0)(x, SR, 4)
    assert np.array_equal(a, D.Mnru(10.0)(x, SR, 4)) and not np.array_equal(a, D.Mnru(10.0)(x, SR, 5))
    assert np.allclose((a - x) * 10 ** (10.0 / 20), (b - x) * 10 ** (12.0 / 20))


def test_bandpass_keeps_the_band_and_attenuates_outside_it() -> None:
    x = np.random.default_rng(2).standard_normal(2 * SR)
    y = D.Bandpass(3400.0)(x, SR)
    f, px = signal.welch(x, SR, nperseg=2048)
    _, py = signal.welch(y, SR, nperseg=2048)

    def gain_db(sel: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(py[sel]) / np.sum(px[sel])))

    assert gain_db((f > 500) & (f < 3000)) == pytest.approx(0.0, abs=0.5)
    assert gain_db(f < 120) < -30 and gain_db(f > 5000) < -30
    assert np.array_equal(y, D.Bandpass(3400.0)(x, SR))  # no randomness
    with pytest.raises(ConfigError, match=r"bandpass: upper cutoff 9000.0 Hz must be in \(300, 8000.0\)"):
        D.Bandpass(9000.0)(x, SR)
    with pytest.raises(ConfigError, match="bandpass"):
        D.Bandpass(250.0)


def test_within_step_rule_and_defaults() -> None:
    assert D.within_step("reverb", 0.5, 0.54) and not D.within_step("reverb", 0.5, 0.56)
    assert D.within_step("lowpass", 4000.0, 4190.0) and not D.within_step("lowpass", 4000.0, 4250.0)
    assert D.within_step("mulaw", 6, 6) and not D.within_step("mulaw", 6, 7)
    assert D.within_step("clip", -6.0, -5.1) and not D.within_step("clip", -6.0, -5.0)
    assert D.within_step("packet_loss", 0.10, 0.109) and not D.within_step("packet_loss", 0.1, 0.111)
    assert D.within_step("mnru", 10.0, 11.9) and not D.within_step("mnru", 10.0, 12.1)
    assert D.within_step("bandpass", 3400.0, 3560.0) and not D.within_step("bandpass", 3400.0, 3580.0)
    assert D.within_step("none", 0.0, 0.0)
    got = D.within_step("clip", np.array([-3.0, -3.0]), np.array([-2.5, -1.0]))
    assert got.tolist() == [True, False]
    with pytest.raises(ConfigError, match="unknown kind"):
        D.within_step("flanger", 1.0, 1.0)


def test_distortion_config_parses_and_is_validated() -> None:
    p = params_from_dict({"pairs": {"distortions": {"clip": {"prob": 0.5}}}})
    assert p.pairs.distortions.clip == ClipConfig(prob=0.5)
    assert p.pairs.distortions.reverb == ReverbConfig()
    with pytest.raises(ConfigError, match=r"pairs\.distortions\.clip\.prb"):
        params_from_dict({"pairs": {"distortions": {"clip": {"prb": 0.5}}}})
    # Validated once, when the config is built (not when it is used).
    with pytest.raises(ConfigError, match=r"pairs\.distortions: probabilities sum to"):
        dataclasses.replace(ALL_ON, reverb=ReverbConfig(prob=0.5))
    with pytest.raises(ConfigError, match=r"pairs\.distortions\.clip\.threshold_db"):
        params_from_dict({"pairs": {"distortions": {"clip": {"threshold_db": [-3.0, -4.0]}}}})
    # Each kind's bounds are its transform's rule, checked when the pairs stage parses the
    # settings, as is the sample-rate check.
    above_peak = params_from_dict({"pairs": {"distortions": {"clip": {"threshold_db": [-3.0, 2.0]}}}}).pairs
    with pytest.raises(ConfigError, match=r"pairs\.distortions\.clip: range"):
        plan_pairs(clean_frame(2), noise_frame(1), dataclasses.replace(CFG, distortions=above_peak.distortions), 1, SR)
    bad = dataclasses.replace(ALL_ON, lowpass=LowpassConfig(prob=0.1, cutoff_hz=(2000.0, 8000.0)))
    with pytest.raises(ConfigError, match=r"pairs\.distortions\.lowpass"):
        plan_pairs(clean_frame(2), noise_frame(1), dataclasses.replace(CFG, distortions=bad), 1, SR)


# ---------------------------------------------------------------- planning


def test_planned_distortion_params_are_within_their_step() -> None:
    cfg = dataclasses.replace(CFG, distortions=ALL_ON)
    plan = plan_pairs(clean_frame(300), noise_frame(4), cfg, 9, SR)
    assert list(plan.columns) == PLAN_COLUMNS + DISTORTION_COLUMNS
    steps = {s.kind: s for s in D.parse_specs(ALL_ON, SR)}
    shares = plan["distortion"].value_counts(normalize=True)
    for kind, spec in steps.items():
        rows = plan[plan["distortion"] == kind]
        assert shares[kind] == pytest.approx(spec.prob, abs=0.06), kind
        a, b = rows["dist_param_a"].to_numpy(), rows["dist_param_b"].to_numpy()
        assert D.within_step(kind, a, b, spec.step).all(), kind
        assert ((a >= spec.low) & (a <= spec.high) & (b >= spec.low) & (b <= spec.high)).all(), kind
        if spec.step > 0:
            assert (a != b).mean() > 0.9, kind  # the step is used, not collapsed to zero
    assert (plan["distortion"] == "mulaw").sum() and (
        plan.loc[plan["distortion"] == "mulaw", "dist_param_a"] % 1 == 0
    ).all()
    none = plan[plan["distortion"] == "none"]
    assert (none[["dist_param_a", "dist_param_b", "dist_seed"]] == 0).all().all()
    # The positive rule still holds on SNR, and an utterance's pairs share kind and seed.
    pos = plan[np.isfinite(plan["snr_a"])]
    assert within_jnd(pos["snr_a"].to_numpy(), pos["snr_b"].to_numpy(), CFG.jnd_db).all()
    assert (plan.groupby("utterance_id")[["distortion", "dist_seed"]].nunique() == 1).all().all()


def test_pair_families_are_on_in_the_demo_profile_and_off_in_the_paper_profile() -> None:
    # params.yaml as shipped: every family beyond noise in demo pairs, none in paper pairs.
    pairs = load_params(REPO / "params.yaml").pairs
    assert pairs.distortions.profiles == ("demo",)
    demo = plan_pairs(clean_frame(300), noise_frame(4), pairs.for_profile("demo"), 9, SR)
    assert set(D.KINDS) < set(demo["distortion"])
    assert 0.3 < (demo["distortion"] != D.NONE).mean() < 0.6
    for kind in ("mnru", "bandpass"):  # the new families keep member b within one step of a
        rows = demo[demo["distortion"] == kind]
        assert D.within_step(kind, rows["dist_param_a"], rows["dist_param_b"], pairs.distortions.steps[kind]).all()
        assert (rows["dist_param_a"] != rows["dist_param_b"]).mean() > 0.9
    paper = plan_pairs(clean_frame(300), noise_frame(4), pairs.for_profile("paper"), 9, SR)
    assert list(paper.columns) == PLAN_COLUMNS  # additive noise only, as the paper
    pd.testing.assert_frame_equal(paper, demo[PLAN_COLUMNS])  # and nothing else moves


def test_distortions_off_leave_the_plan_exactly_as_before() -> None:
    # Hashes of these noise-only plans (plan format of jsqa.pairs.plan.plan_uniforms): the
    # distortion feature, on or off, must not move a single draw of a noise-only run, and a
    # change to the plan must be deliberate (it invalidates every rendered shard).
    clean = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(12)],
            "path": [f"c/u{i}.wav" for i in range(12)],
            "duration": [1.0 + 0.1 * i for i in range(12)],
            "sample_rate": SR,
            "channels": 1,
            "speaker": [f"s{i % 3}" for i in range(12)],
        }
    )
    noise = pd.DataFrame(
        {
            "id": ["n0", "n1", "n2"],
            "path": ["n/0.wav", "n/1.wav", "n/2.wav"],
            "duration": [2.0, 3.0, 0.5],
            "sample_rate": SR,
            "channels": 1,
            "environment": "lab",
        }
    )
    golden = {
        True: "0d581c4215b7e2bad3a4cc43e1a7bdb49bbc5a43d2e800fc1439398d28940ce1",
        False: "c32ed24b1e6f35f0b123edd07309415f5f3db2afbb35f24fef0dc7cf5dff7d31",
    }
    for shared, digest in golden.items():
        cfg = PairsConfig(clean_anchor_prob=0.25, segment_seconds=0.5, shard_size=5, shared_segment=shared).for_profile(
            "paper"
        )
        plan = plan_pairs(clean, noise, cfg, 42, SR)
        assert list(plan.columns) == PLAN_COLUMNS
        assert hashlib.sha256(plan.to_csv(index=False).encode()).hexdigest() == digest
        # Enabling distortions adds columns and changes no other one.
        on = plan_pairs(clean, noise, dataclasses.replace(cfg, distortions=ALL_ON), 42, SR)
        pd.testing.assert_frame_equal(on[PLAN_COLUMNS], plan)


# ---------------------------------------------------------------- rendering


def test_render_pair_applies_distortion_to_both_members() -> None:
    rng = np.random.default_rng(4)
    x, noise = speech(1.5, 4), rng.standard_normal(SR)
    base = {"crop_offset": 1000, "noise_offset": 500, "snr_a": 20.0, "snr_b": 21.0}
    a0, b0, g0 = render_pair(base, x, noise, CFG, SR)
    off = {**base, "distortion": "none", "dist_param_a": 0.0, "dist_param_b": 0.0, "dist_seed": 0}
    a1, b1, g1 = render_pair(off, x, noise, CFG, SR)
    assert np.array_equal(a0, a1) and np.array_equal(b0, b1) and g0 == g1
    rec = {**base, "distortion": "packet_loss", "dist_param_a": 0.2, "dist_param_b": 0.205, "dist_seed": 77}
    a, b, gains = render_pair(rec, x, noise, CFG, SR)
    assert gains == g0 and a.dtype == b.dtype == np.float32 and a.shape == (T,)
    assert np.array_equal(a, D.apply("packet_loss", a0, 0.2, SR, 77))
    assert np.array_equal(b, D.apply("packet_loss", b0, 0.205, SR, 77))
    # Same seed: b's lost frames include a's, the members differ only by the step.
    assert np.all((a == 0) <= (b == 0) | (a0 == 0))


@pytest.fixture(scope="module")
def distorted_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jsqa.audio import write_audio
    from jsqa.data.manifests import write_manifest

    root = tmp_path_factory.mktemp("dcorpus")
    rng = np.random.default_rng(3)
    clean_rows, noise_rows = [], []
    for i in range(8):
        write_audio(root / f"clean/u{i}.wav", speech_like(1.0, rng), SR)
        clean_rows.append(
            {
                "id": f"u{i}",
                "path": f"clean/u{i}.wav",
                "duration": 1.0,
                "sample_rate": SR,
                "channels": 1,
                "speaker": f"s{i % 2}",
            }
        )
    for i in range(2):
        write_audio(root / f"noise/n{i}.wav", 0.1 * rng.standard_normal(SR), SR)
        noise_rows.append(
            {
                "id": f"n{i}",
                "path": f"noise/n{i}.wav",
                "duration": 1.0,
                "sample_rate": SR,
                "channels": 1,
                "environment": "lab",
            }
        )
    write_manifest(root / "clean.parquet", pd.DataFrame(clean_rows), "clean")
    write_manifest(root / "noise.parquet", pd.DataFrame(noise_rows), "noise")
    return root


def test_distorted_pair_sets_are_bit_identical_across_workers(distorted_corpus: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(CFG, distortions=ALL_ON, clean_anchor_prob=0.0)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        c = dataclasses.replace(cfg, workers=workers)
        generate_pairs(
            distorted_corpus / "clean.parquet", distorted_corpus / "noise.parquet", c, 21, out, SR, distorted_corpus
        )
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    ps = load_pairs(outs[0])
    assert set(DISTORTION_COLUMNS) <= set(ps.recipes.columns)
    assert ps.recipes["distortion"].nunique() > 1
    # Each stored pair is the render of its recipe (within int16 quantisation).
    from jsqa.audio import load_audio

    for i in range(ps.n):
        rec = ps.recipes.iloc[i]
        sp, _ = load_audio(distorted_corpus / rec["clean_path"], SR)
        nz, _ = load_audio(distorted_corpus / rec["noise_path"], SR)
        a, b, _ = render_pair(rec, sp, nz, cfg, SR)
        assert np.max(np.abs(ps[i] - np.stack([a, b]))) <= 1.0 / 32768 + 1e-7
    # In-batch positives never pair a clean with a distorted recipe, nor two kinds.
    kinds = ps.recipes["distortion"].to_numpy()
    m = ps.positives_mask(np.arange(ps.n))
    assert not (m & (kinds[:, None] != kinds[None, :])).any()
    assert ps.distortion_steps == {
        "reverb": 0.1,
        "lowpass": 0.05,
        "mulaw": 0.0,
        "clip": 1.0,
        "packet_loss": 0.01,
        "mnru": 2.0,
        "bandpass": 0.05,
    }
    # Turning distortions off again re-renders: distorted shards are not kept as noise-only.
    plain = generate_pairs(
        distorted_corpus / "clean.parquet", distorted_corpus / "noise.parquet", CFG, 21, outs[0], SR, distorted_corpus
    )
    assert list(plain.recipes.columns[: len(PLAN_COLUMNS)]) == PLAN_COLUMNS
    assert "distortion" not in plain.recipes.columns


# ---------------------------------------------------------------- measured room responses


def write_rirs(folder: Path, rt60s: list[float]) -> list[Path]:
    """Decaying-noise room responses at 8 kHz (so loading them resamples) as WAV files."""
    from jsqa.audio import write_audio

    paths = []
    for i, rt60 in enumerate(rt60s):
        h = D.synthetic_rir(rt60, 8000, seed=100 + i)
        paths.append(folder / f"room{i}.wav")
        write_audio(paths[-1], 0.9 * h / np.max(np.abs(h)), 8000, subtype="FLOAT")
    return paths


def test_user_rir_folder_is_used_and_recorded(distorted_corpus: Path, tmp_path: Path) -> None:
    from jsqa.audio import load_audio

    write_rirs(distorted_corpus / "rirs", [0.3, 0.6])
    reverb = ReverbConfig(prob=1.0, rir_folder="rirs")
    cfg = dataclasses.replace(CFG, clean_anchor_prob=0.0, distortions=DistortionsConfig(reverb=reverb), workers=2)
    args = (distorted_corpus / "clean.parquet", distorted_corpus / "noise.parquet")
    ps = generate_pairs(*args, cfg, 5, tmp_path / "out", SR, distorted_corpus)
    r = ps.recipes
    assert (r["distortion"] == "reverb").all()
    # Each pair names the response it used, chosen by its seed; both rooms are used.
    assert set(r["rir_path"]) == {"rirs/room0.wav", "rirs/room1.wav"}
    assert (r["rir_path"] == np.array(["rirs/room0.wav", "rirs/room1.wav"])[r["dist_seed"] % 2]).all()
    for i in range(ps.n):
        rec = r.iloc[i]
        sp, _ = load_audio(distorted_corpus / rec["clean_path"], SR)
        nz, _ = load_audio(distorted_corpus / rec["noise_path"], SR)
        rir = D.load_rir(distorted_corpus / rec["rir_path"], SR)
        a, b, _ = render_pair(rec, sp, nz, cfg, SR, rir=rir)
        assert np.max(np.abs(ps[i] - np.stack([a, b]))) <= 1.0 / 32768 + 1e-7
    # The measured rooms, not synthetic ones, made the audio.
    rec = r.iloc[0]
    sp, _ = load_audio(distorted_corpus / rec["clean_path"], SR)
    nz, _ = load_audio(distorted_corpus / rec["noise_path"], SR)
    synthetic, _, _ = render_pair(rec.drop("rir_path"), sp, nz, cfg, SR)
    assert np.max(np.abs(ps[0][0] - synthetic)) > 1e-3
    # Without the response at hand a recipe that names one cannot be rebuilt.
    with pytest.raises(AudioError, match="room0|room1"):
        render_pair(rec, sp, nz, cfg, SR)


def test_bad_rir_folder_fails_with_its_name(distorted_corpus: Path, tmp_path: Path) -> None:
    args = (distorted_corpus / "clean.parquet", distorted_corpus / "noise.parquet")

    def run(folder: str) -> None:
        reverb = ReverbConfig(prob=0.5, rir_folder=folder)
        cfg = dataclasses.replace(CFG, distortions=DistortionsConfig(reverb=reverb), workers=1)
        generate_pairs(*args, cfg, 5, tmp_path / "out", SR, distorted_corpus)

    with pytest.raises(ConfigError, match="rir_folder.*no-such"):
        run("no-such")
    (distorted_corpus / "empty-rirs").mkdir()
    with pytest.raises(ConfigError, match="no .wav or .flac"):
        run("empty-rirs")
    bad = distorted_corpus / "bad-rirs"
    write_rirs(bad, [0.4])
    (bad / "broken.wav").write_bytes(b"RIFF0000WAVEnot audio")
    with pytest.raises(AudioError, match="broken.wav"):
        run("bad-rirs")
    flat = distorted_corpus / "flat-rirs"
    flat.mkdir()
    from jsqa.audio import write_audio

    write_audio(flat / "flat.wav", np.full(10, 0.5), SR)  # too short to decay 25 dB: not a room response
    with pytest.raises(AudioError, match="flat.wav.*not a usable room response"):
        run("flat-rirs")


# ---------------------------------------------------------------- transform classes and registry


def test_registry_lists_every_kind_once_in_planning_order() -> None:
    assert list(D.REGISTRY) == ["reverb", "lowpass", "mulaw", "clip", "packet_loss", "mnru", "bandpass"]
    assert tuple(D.REGISTRY) == D.KINDS
    # One section of pairs.distortions per kind, in the same order (after the profiles list).
    assert [f.name for f in dataclasses.fields(DistortionsConfig)] == ["profiles", *D.REGISTRY]
    assert {k: c.kind for k, c in D.REGISTRY.items()} == {k: k for k in D.REGISTRY}
    assert D.DEFAULT_STEPS == {
        "reverb": 0.1,
        "lowpass": 0.05,
        "mulaw": 0.0,
        "clip": 1.0,
        "packet_loss": 0.01,
        "mnru": 2.0,
        "bandpass": 0.05,
    }
    assert {k for k, c in D.REGISTRY.items() if c.relative} == {"reverb", "lowpass", "bandpass"}
    assert {k for k, c in D.REGISTRY.items() if c.integer} == {"mulaw"}


@pytest.mark.parametrize(
    ("cls", "bad", "good"),
    [
        (D.Reverb, 0.0, 0.3),
        (D.Reverb, float("inf"), 1.0),
        (D.Lowpass, -100.0, 3000.0),
        (D.MuLaw, 1, 8),
        (D.MuLaw, 17, 16),
        (D.MuLaw, 6.5, 6),
        (D.Clip, 0.0, -3.0),
        (D.PacketLoss, 1.5, 0.1),
        (D.PacketLoss, -0.1, 0.0),
        (D.Mnru, float("nan"), 10.0),
        (D.Mnru, 100.0, -5.0),
        (D.Bandpass, 300.0, 3400.0),
    ],
)
def test_each_transform_validates_its_parameter(cls: type, bad: float, good: float) -> None:
    with pytest.raises(ConfigError, match=cls.kind):
        cls(bad)
    y = cls(good)(0.1 * speech(0.3, 6), SR, 3)
    assert y.shape == (int(0.3 * SR),) and np.isfinite(y).all()


def test_lowpass_checks_nyquist_once_the_rate_is_known() -> None:
    lp = D.Lowpass(6000.0)  # fine without a rate
    with pytest.raises(ConfigError, match=r"lowpass: cutoff 6000.0 Hz must be in \(0, 4000.0\)"):
        lp(np.zeros(800), 8000)
    with pytest.raises(ConfigError, match=r"pairs\.distortions\.lowpass"):
        D.parse_specs(DistortionsConfig(lowpass=LowpassConfig(prob=0.1, cutoff_hz=(2000.0, 6000.0))), 8000)
    D.parse_specs(ALL_ON, SR)


def test_apply_dispatches_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    x = speech(0.5, 8)
    assert np.array_equal(D.apply("mulaw", x, 6.0, SR, 1), D.MuLaw(6)(x).astype(np.float32))
    assert np.array_equal(D.apply("clip", x, -6.0, SR, 1), D.Clip(-6.0)(x, SR).astype(np.float32))

    class Silence(D.Distortion):
        kind, default_step = "silence", 0.0

        def __init__(self, param: float) -> None:
            self.check(param)

        @classmethod
        def check(cls, param: float) -> None:
            pass  # every parameter is a valid silence

        def __call__(self, x: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
            return np.zeros_like(x)

    monkeypatch.setitem(D.REGISTRY, "silence", Silence)
    assert not D.apply("silence", x, 0.0, SR, 1).any()
    with pytest.raises(ConfigError, match="unknown kind 'flanger'"):
        D.apply("flanger", x, 0.0, SR, 1)


# ---------------------------------------------------------------- filters bound to a sample rate


def _filtered_as_before(x: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """The filters' output as it was computed before the coefficients were kept: designed per call."""
    x = np.asarray(x, dtype=np.float64)
    return signal.sosfilt(sos, x) if x.size <= 3 * (2 * len(sos) + 1) else signal.sosfiltfilt(sos, x)


@pytest.mark.parametrize("sr", [8000, 16000])
@pytest.mark.parametrize("n", [20, 800, 16000])  # 20: too short for sosfiltfilt, the causal path
def test_filters_designed_once_give_the_per_call_output(sr: int, n: int) -> None:
    x = speech(n / sr + 0.01, 7)[:n]
    for cutoff in (1000.0, 2500.0, 3900.0):
        old = _filtered_as_before(x, signal.butter(8, cutoff, btype="low", fs=sr, output="sos"))
        assert np.array_equal(D.Lowpass(cutoff, sr)(x), old)
        assert np.array_equal(D.Lowpass(cutoff)(x, sr), old)
        assert np.array_equal(D.lowpass(x, cutoff, sr), old)
        assert np.array_equal(D.apply("lowpass", x, cutoff, sr, 0), old.astype(np.float32))
    for high in (1000.0, 3400.0, 3900.0):
        old = _filtered_as_before(x, signal.butter(4, [300.0, high], btype="bandpass", fs=sr, output="sos"))
        assert np.array_equal(D.Bandpass(high, sr)(x), old)
        assert np.array_equal(D.Bandpass(high)(x, sr), old)
        assert np.array_equal(D.apply("bandpass", x, high, sr, 0), old.astype(np.float32))


def test_a_filter_built_for_a_rate_keeps_it() -> None:
    lp = D.Lowpass(3000.0, 8000)
    x = speech(0.2, 1)
    assert np.array_equal(lp(x), lp(x, 8000))
    with pytest.raises(ConfigError, match="lowpass: built for 8000 Hz, called at 16000 Hz"):
        lp(x, 16000)
    with pytest.raises(ConfigError, match=r"bandpass: upper cutoff 5000.0 Hz must be in \(300, 4000.0\)"):
        D.Bandpass(5000.0, 8000)  # the Nyquist check runs when the rate is bound
    with pytest.raises(ConfigError, match="no sample rate"):
        D.Bandpass(3400.0)(x)


# ---------------------------------------------------------------- one home per kind


def test_each_kind_is_one_section_bound_to_one_transform() -> None:
    from jsqa.config import DISTORTION_KINDS, DISTORTION_SECTIONS

    assert D.KINDS == DISTORTION_KINDS
    for kind, cls in D.REGISTRY.items():
        section = DISTORTION_SECTIONS[kind]
        assert cls.section is section and section.kind == kind
        assert section._key == f"pairs.distortions.{kind}"
        assert cls.default_step == section.default_step() == section().jnd_step
    # The shipped mix comes from each section's share.
    shipped = PairsConfig().distortions
    assert {s.kind: s.prob for s in shipped.sections()} == {k: c.shipped_prob for k, c in DISTORTION_SECTIONS.items()}
    # The module's table of kinds lists exactly the registered ones.
    table = [line.split()[0] for line in (D.__doc__ or "").splitlines() if line[:1].isalpha() and "  " in line]
    assert table[1:] == list(D.REGISTRY)  # after the header row ("kind  parameter ...")
