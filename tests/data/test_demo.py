"""The offline demo corpus: layout, determinism, labels, splits and manifests."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jsqa.config import DemoConfig
from jsqa.data.demo import corpus as demo_corpus
from jsqa.data.demo import degrade
from jsqa.data.demo.corpus import DemoCorpus, generate_demo, prepare_demo
from jsqa.data.demo.label import dimension_proxies, proxy_mos
from jsqa.data.demo.noise import make_noise
from jsqa.data.demo.speech import clean_talkers, synth_utterance
from jsqa.data.manifests import SCHEMAS, read_manifest, resolve
from jsqa.errors import AudioError, ConfigError
from jsqa.signal.distortions import Bandpass, Clip, Mnru, MuLaw, PacketLoss, Reverb
from jsqa.signal.levels import active_speech_level, gain_to_db, mix_at_snr

# The NISQA corpus file layout users already know (data-sources.md).
NISQA_COLUMNS = [
    "db", "con", "file", "con_description", "filename_deg", "filename_ref", "source", "lang",
    "votes", "mos", "mos_std", "filepath_deg", "filepath_ref",
]  # fmt: skip
FAMILIES = ("white", "pink", "brown", "babble", "hum", "transients")

SMALL = DemoConfig(
    n_talkers=4,
    utterances_per_talker=3,
    utterance_seconds=(1.0, 1.5),
    noise_seconds=3.0,
    noise_per_family=1,
    mos_clips=60,
)
# Tiny enough to generate several times per test.
TINY = DemoConfig(
    n_talkers=3,
    utterances_per_talker=2,
    utterance_seconds=(0.5, 0.8),
    noise_seconds=1.0,
    noise_families=("white", "babble", "transients"),
    noise_per_family=1,
    mos_clips=8,
    mos_sample_rate=16000,
    mos_splits={"train": 0.5, "val": 0.25, "test": 0.25},
)
TINY_KW = {"mos_seconds": (1.0, 1.2)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> DemoCorpus:
    return generate_demo(tmp_path_factory.mktemp("demo") / "corpus", SMALL, seed=7)


@pytest.fixture(scope="module")
def table(corpus: DemoCorpus) -> pd.DataFrame:
    return pd.read_csv(corpus.mos_csv)


def _snapshot(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_clean_files_have_the_promised_layout_rate_and_level(corpus: DemoCorpus) -> None:
    files = sorted(corpus.clean_dir.glob("*/*.wav"))
    assert len(files) == SMALL.n_talkers * SMALL.utterances_per_talker
    assert {f.parent.name for f in files} == {f"spk{i:02d}" for i in range(4)}
    for f in files:
        assert f.stem.startswith(f.parent.name + "-")
        info = sf.info(str(f))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.0 - 1e-3 <= info.duration <= 1.5 + 1e-3
        x, sr = sf.read(str(f))
        assert active_speech_level(x, sr) == pytest.approx(-26.0, abs=0.5)
        assert np.max(np.abs(x)) < 1.0


def test_every_noise_family_is_written_with_its_character(corpus: DemoCorpus) -> None:
    files = {f.stem: f for f in corpus.noise_dir.glob("*.wav")}
    assert set(files) == {f"{fam}-00" for fam in FAMILIES}
    sig = {}
    for stem, f in files.items():
        info = sf.info(str(f))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert info.duration == pytest.approx(3.0, abs=1e-3)
        sig[stem.split("-")[0]], _ = sf.read(str(f))

    def low_share(x: np.ndarray, hz: float) -> float:
        p = np.abs(np.fft.rfft(x)) ** 2
        return float(p[np.fft.rfftfreq(len(x), 1 / 16000) < hz].sum() / p.sum())

    # Coloured noises tilt towards the bass in the right order.
    shares = [low_share(sig[name], 1000) for name in ("white", "pink", "brown")]
    assert shares == sorted(shares) and shares[0] < shares[2] / 3
    # Hum is almost all at multiples of the mains frequency.
    p = np.abs(np.fft.rfft(sig["hum"])) ** 2
    f = np.fft.rfftfreq(len(sig["hum"]), 1 / 16000)
    at_harmonics = max(p[np.abs(f - mains * np.round(f / mains)) < 1.5].sum() / p.sum() for mains in (50.0, 60.0))
    assert at_harmonics > 0.9
    # Transients are impulsive, the other families are not.
    for name, x in sig.items():
        crest = np.max(np.abs(x)) / np.sqrt(np.mean(x**2))
        assert crest > 8 if name == "transients" else crest < 8

    def level_spread_db(x: np.ndarray) -> float:
        frames = x[: len(x) // 800 * 800].reshape(-1, 800)
        return float(np.std(10 * np.log10(np.mean(frames**2, axis=1))))

    # Babble is talkers' speech: its 50 ms level fluctuates far more than steady noise.
    assert level_spread_db(sig["babble"]) > 3 * level_spread_db(sig["white"])


def test_mos_clips_are_48k_mono_3_to_6_s_with_aligned_references(corpus: DemoCorpus, table: pd.DataFrame) -> None:
    mos_root = corpus.mos_csv.parent
    assert len(table) == SMALL.mos_clips
    for rec in table.itertuples():
        deg = sf.info(str(mos_root / rec.filepath_deg))
        ref = sf.info(str(mos_root / rec.filepath_ref))
        assert (deg.samplerate, deg.channels, ref.samplerate, ref.channels) == (48000, 1, 48000, 1)
        assert deg.frames == ref.frames
        assert 3.0 - 1e-3 <= deg.duration <= 6.0 + 1e-3


def test_csv_has_nisqa_columns_labels_in_range_and_split_sizes(table: pd.DataFrame) -> None:
    assert set(NISQA_COLUMNS) <= set(table.columns)
    assert table["mos"].between(1.0, 5.0).all()
    assert table["file"].is_unique
    counts = table["db"].value_counts().to_dict()
    assert set(counts) == {"DEMO_TRAIN", "DEMO_VAL", "DEMO_TEST_NOISE", "DEMO_TEST_MIXED"}
    n = SMALL.mos_clips
    assert counts["DEMO_TRAIN"] == pytest.approx(0.7 * n, abs=1)
    assert counts["DEMO_VAL"] == pytest.approx(0.15 * n, abs=1)
    assert counts["DEMO_TEST_NOISE"] + counts["DEMO_TEST_MIXED"] == pytest.approx(0.15 * n, abs=1)
    # Labels spread over most of the scale, as a MOS set should.
    assert table["mos"].min() < 2.0 and table["mos"].max() > 4.2


def test_no_talker_is_shared_between_train_and_held_out_sets(table: pd.DataFrame) -> None:
    talkers = table.groupby("db")["talker"].agg(set)
    test = talkers["DEMO_TEST_NOISE"] | talkers["DEMO_TEST_MIXED"]
    assert test and talkers["DEMO_VAL"]
    assert not test & talkers["DEMO_TRAIN"]
    assert not talkers["DEMO_VAL"] & talkers["DEMO_TRAIN"]
    assert not talkers["DEMO_VAL"] & test


def test_test_sets_separate_additive_noise_from_other_degradations(table: pd.DataFrame) -> None:
    noise_only = table[table["db"] == "DEMO_TEST_NOISE"]
    mixed = table[table["db"] == "DEMO_TEST_MIXED"]
    assert (noise_only["con"] == 0).all()
    assert (mixed["con"] != 0).all()
    train = table[table["db"] == "DEMO_TRAIN"]
    assert 0.2 < (train["con"] != 0).mean() < 0.6  # about 40 % carry a second degradation


def test_corpus_labels_fall_with_snr(table: pd.DataFrame) -> None:
    noise_only = table[table["con"] == 0]
    assert noise_only[["snr_db", "mos"]].corr(method="spearman").iloc[0, 1] > 0.7


def test_proxy_mos_decreases_with_snr_and_is_high_for_clean() -> None:
    sr = 16000
    talkers = clean_talkers(3, seed=11)
    by_snr: dict[float, list[float]] = {30.0: [], 10.0: [], -5.0: []}
    self_scores = []
    for i, family in enumerate(["white", "pink", "babble", "hum", "brown", "transients"]):
        rng = np.random.default_rng(i)
        ref = synth_utterance(talkers[i % 3], 2.0, sr, rng).astype(np.float64)
        noise = make_noise(family, 2.0, sr, rng).astype(np.float64)
        self_scores.append(proxy_mos(ref, ref, sr))
        p_speech = 10 ** (active_speech_level(ref, sr) / 10)
        for snr in by_snr:
            gain = np.sqrt(p_speech / (np.mean(noise**2) * 10 ** (snr / 10)))
            by_snr[snr].append(proxy_mos(ref + gain * noise, ref, sr))
    mean = {snr: float(np.mean(v)) for snr, v in by_snr.items()}
    assert min(self_scores) >= 4.5
    assert mean[30.0] > mean[10.0] + 0.5
    assert mean[10.0] > mean[-5.0] + 0.5
    assert min(by_snr[-5.0]) >= 1.0 and max(by_snr[30.0]) <= 5.0


def test_proxy_mos_refuses_misaligned_signals() -> None:
    with pytest.raises(AudioError, match="aligned"):
        proxy_mos(np.ones(16000), np.ones(8000), 16000)


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    a = generate_demo(tmp_path / "a", TINY, seed=3, workers=1, **TINY_KW)
    b = generate_demo(tmp_path / "b", TINY, seed=3, workers=3, **TINY_KW)
    c = generate_demo(tmp_path / "c", TINY, seed=4, **TINY_KW)
    snap_a, snap_b, snap_c = _snapshot(a.root), _snapshot(b.root), _snapshot(c.root)
    assert any(k.startswith("clean/") for k in snap_a) and "mos/NISQA_corpus_file.csv" in snap_a
    assert snap_a == snap_b
    assert set(snap_a) == set(snap_c)
    differing = [k for k in snap_a if k.endswith(".wav") and snap_a[k] != snap_c[k]]
    assert len(differing) == sum(k.endswith(".wav") for k in snap_a)
    # Regenerating in place gives the same bytes (what DVC relies on to see no change).
    generate_demo(a.root, TINY, seed=3, **TINY_KW)
    assert _snapshot(a.root) == snap_a


def test_interrupted_run_leaves_previous_corpus_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "corpus"
    generate_demo(out, TINY, seed=3, **TINY_KW)
    before = _snapshot(out)
    real_write = demo_corpus.write_audio
    calls = []

    def crash_after_three(*args, **kwargs):  # a crash half-way through writing audio
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated crash")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(demo_corpus, "write_audio", crash_after_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_demo(out, TINY, seed=9, **TINY_KW)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"noise_families": ("white", "thunder")}, "thunder"),
        ({"n_talkers": 1}, "data.demo.n_talkers"),
        ({"mos_clips": 3}, "data.demo.mos_clips"),
        ({"mos_splits": {"train": 0.8, "test": 0.2}}, "data.demo.mos_splits"),
        ({"utterance_seconds": (3.0, 2.0)}, "data.demo.utterance_seconds"),
    ],
)
def test_bad_settings_raise_config_error_naming_them_and_write_nothing(tmp_path: Path, change: dict, key: str) -> None:
    # Settings are checked when the config is built (loading params.yaml, or in code), or, for
    # what needs the corpus plan, before anything is written.
    def build_and_generate() -> None:
        generate_demo(tmp_path / "corpus", dataclasses.replace(TINY, **change), seed=1, **TINY_KW)

    with pytest.raises(ConfigError, match=key):
        build_and_generate()
    assert list(tmp_path.iterdir()) == []


def test_make_noise_rejects_unknown_family() -> None:
    with pytest.raises(ConfigError, match="'rain'"):
        make_noise("rain", 1.0, 16000, np.random.default_rng(0))


def test_prepare_demo_writes_manifests_matching_the_files(tmp_path: Path, corpus: DemoCorpus) -> None:
    root = corpus.root.parent
    paths = prepare_demo(corpus, tmp_path / "manifests", root=root)
    assert set(paths) == {"clean", "noise", "mos", "quarantine"}
    clean = read_manifest(paths["clean"], "clean")
    noise = read_manifest(paths["noise"], "noise")
    mos = read_manifest(paths["mos"], "mos")
    for df, kind in ((clean, "clean"), (noise, "noise"), (mos, "mos")):
        assert list(df.columns[: len(SCHEMAS[kind])]) == SCHEMAS[kind]
        assert all(resolve(p, root).is_file() for p in df["path"])
        assert not any(Path(p).is_absolute() for p in df["path"])
    assert len(clean) == len(list(corpus.clean_dir.glob("*/*.wav")))
    assert len(noise) == len(list(corpus.noise_dir.glob("*.wav")))
    assert len(mos) == SMALL.mos_clips
    assert (clean["speaker"] == clean["id"].str.split("-").str[0]).all()
    assert set(noise["environment"]) == set(FAMILIES)
    assert set(mos["split"]) == {"train", "val", "test"}
    assert set(mos.loc[mos["db"].str.contains("TEST"), "split"]) == {"test"}
    assert (mos["sample_rate"] == 48000).all()
    quarantine = pd.read_csv(paths["quarantine"])
    assert list(quarantine.columns) == ["path", "reason"] and quarantine.empty


def test_prepare_demo_quarantines_unreadable_files(tmp_path: Path) -> None:
    corpus = generate_demo(tmp_path / "corpus", TINY, seed=5, **TINY_KW)
    broken = sorted(corpus.clean_dir.glob("*/*.wav"))[0]
    broken.write_bytes(b"not a wav file")
    paths = prepare_demo(corpus, tmp_path / "manifests", root=tmp_path)
    clean = read_manifest(paths["clean"], "clean")
    quarantine = pd.read_csv(paths["quarantine"])
    assert broken.stem not in set(clean["id"])
    assert len(clean) == TINY.n_talkers * TINY.utterances_per_talker - 1
    assert quarantine["path"].tolist() == [broken.relative_to(tmp_path).as_posix()]
    assert quarantine["reason"].str.contains("not readable").all()


def test_generate_demo_returns_the_corpus_layout(corpus: DemoCorpus) -> None:
    assert corpus.clean_dir == corpus.root / "clean" and corpus.clean_dir.is_dir()
    assert corpus.noise_dir == corpus.root / "noise" and corpus.noise_dir.is_dir()
    assert corpus.mos_csv == corpus.root / "mos" / "NISQA_corpus_file.csv"
    assert corpus.mos_csv.is_file()
    with pytest.raises(AttributeError):
        corpus.root = Path("elsewhere")  # type: ignore[misc]


def test_demo_degradations_are_the_shared_distortion_transforms() -> None:
    # No second mu-law, clipper or packet-loss model: the demo uses jsqa.signal.distortions.
    source = inspect.getsource(degrade)
    assert "log1p" not in source and "expm1" not in source
    sr = 16000
    x = synth_utterance(clean_talkers(1, 3)[0], 1.0, sr, np.random.default_rng(0)).astype(np.float64)
    y, what, _ = degrade.apply_degradation(x, "mulaw8", sr, np.random.default_rng(1))
    assert np.array_equal(y, MuLaw(8)(x)) and what == "mu-law 8 bit"
    # The same draws, replayed, give the shared transform's parameters.
    y, what, threshold_db = degrade.apply_degradation(x, "clipping", sr, np.random.default_rng(2))
    replay = np.random.default_rng(2)
    assert threshold_db == float(gain_to_db(replay.uniform(0.1, 0.5)))
    assert np.array_equal(y, Clip(threshold_db)(x, sr)) and "dB below the peak" in what
    y, what, rate = degrade.apply_degradation(x, "packet_loss", sr, np.random.default_rng(3))
    replay = np.random.default_rng(3)
    assert rate == float(replay.uniform(0.05, 0.25))
    assert np.array_equal(y, PacketLoss(rate)(x, sr, int(replay.integers(2**32))))
    assert (y == 0).any()
    y, what, q_db = degrade.apply_degradation(x, "mnru", sr, np.random.default_rng(4))
    replay = np.random.default_rng(4)
    assert q_db == float(replay.uniform(*degrade.MNRU_Q_DB)) and what.startswith("MNRU")
    assert np.array_equal(y, Mnru(q_db)(x, sr, int(replay.integers(2**32))))
    y, what, high = degrade.apply_degradation(x, "bandpass", sr, np.random.default_rng(5))
    assert np.array_equal(y, Bandpass(high)(x, sr)) and what.startswith("band-pass 300-")
    y, what, rt60 = degrade.apply_degradation(x, "reverb", sr, np.random.default_rng(6))
    replay = np.random.default_rng(6)
    assert rt60 == float(replay.uniform(*degrade.REVERB_RT60_S)) and "RT60" in what
    # The dry signal plus the shared Reverb's output, each scaled: nothing else.
    parts = np.stack([x, Reverb(rt60)(x, sr, int(replay.integers(2**32)))], axis=1)
    gains = np.linalg.lstsq(parts, y, rcond=None)[0]
    assert np.linalg.norm(parts @ gains - y) < 1e-9 * np.linalg.norm(y) and (gains > 0).all()


def _noisy_clips(snr_db: float, sr: int = 16000) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ref, ref + noise at ``snr_db``) for six short utterances over three noise families."""
    talkers = clean_talkers(3, seed=11)
    clips = []
    for i in range(6):
        rng = np.random.default_rng(i)
        ref = synth_utterance(talkers[i % 3], 2.0, sr, rng).astype(np.float64)
        noise = make_noise(("white", "pink", "babble")[i % 3], 2.0, sr, rng).astype(np.float64)
        clips.append((ref, mix_at_snr(ref, noise, snr_db, sr)[0]))
    return clips


def test_every_demo_degradation_lowers_the_label_and_reverb_and_mnru_with_severity() -> None:
    sr = 16000
    clips = _noisy_clips(35.0, sr)
    noise_only = np.mean([proxy_mos(deg, ref, sr) for ref, deg in clips])
    severity: dict[str, list[tuple[float, float]]] = {}
    for kind in degrade.DEGRADATIONS[1:]:
        for j, (ref, deg) in enumerate(clips * 4):
            y, _, param = degrade.apply_degradation(deg, kind, sr, np.random.default_rng(j))
            severity.setdefault(kind, []).append((param, proxy_mos(np.clip(y, -1.0, 1.0), ref, sr)))
        mean = np.mean([label for _, label in severity[kind]])
        assert mean < noise_only - 0.05, kind  # beyond-noise degradations cost quality on top of the noise
    # The label falls as the room gets more reverberant and as MNRU's Q falls.
    rho = {k: pd.DataFrame(severity[k]).corr(method="spearman").iloc[0, 1] for k in ("reverb", "mnru")}
    assert rho["reverb"] < -0.8 and rho["mnru"] > 0.8


def test_csv_has_per_dimension_proxies_in_range(table: pd.DataFrame) -> None:
    dims = ["noi", "col", "dis", "loud"]
    assert set(dims) <= set(table.columns) and table[dims].notna().all().all()
    assert table[dims].apply(lambda c: c.between(1.0, 5.0)).all().all()
    # noi follows the additive-noise SNR alone; col and dis are 5 without their degradations.
    assert table["snr_db"].rank().equals(table["noi"].rank())
    plain = table["degradation"] == "none"
    assert (table.loc[plain, ["col", "dis"]] == 5.0).all().all()
    coloured = table["degradation"].isin(
        ["bandlimit_nb", "bandlimit_wb", "bandpass", "reverb", "mnru", "mulaw8", "quantise"]
    )
    broken = table["degradation"].isin(["clipping", "packet_loss"])
    assert (table.loc[coloured, "col"] < 5).all() and (table.loc[coloured, "dis"] == 5).all()
    assert (table.loc[broken, "dis"] < 5).all() and (table.loc[broken, "col"] == 5).all()
    assert coloured.any() and broken.any()
    # Level-normalised speech: loud is high unless loud noise raises the level.
    assert table["loud"].median() >= 4.5
    assert table.loc[(table["snr_db"] > 20) & (table["degradation"] == "none"), "loud"].min() == 5.0


def test_dimension_proxies_follow_severity() -> None:
    sr = 16000
    x = synth_utterance(clean_talkers(1, 3)[0], 1.0, sr, np.random.default_rng(0)).astype(np.float64)
    col = [dimension_proxies("reverb", rt60, 30.0, x, sr)["col"] for rt60 in (0.2, 0.6, 1.2)]
    dis = [dimension_proxies("packet_loss", rate, 30.0, x, sr)["dis"] for rate in (0.05, 0.15, 0.25)]
    noi = [dimension_proxies("none", 0.0, snr, x, sr)["noi"] for snr in (-5.0, 10.0, 40.0)]
    assert col[0] > col[1] > col[2] and dis[0] > dis[1] > dis[2] and noi[0] < noi[1] < noi[2]
    assert dimension_proxies("none", 0.0, 30.0, x, sr)["loud"] == 5.0
    assert dimension_proxies("none", 0.0, 30.0, 0.1 * x, sr)["loud"] < 3.0  # 20 dB too quiet
