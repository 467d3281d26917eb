"""JND pair planning, rendering, sharded generation and reading (jsqa.pairs)."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pair_inputs import CFG, SR, T, clean_frame, noise_frame, speech_like

from jsqa.audio import load_audio, write_audio
from jsqa.data.manifests import write_manifest
from jsqa.errors import AudioError, ConfigError, ManifestError
from jsqa.pairs.generate import generate_pairs, partial_dir
from jsqa.pairs.jnd import within_jnd
from jsqa.pairs.plan import plan_pairs, plan_uniforms, plan_width
from jsqa.pairs.render import PLAN_COLUMNS, crop, render_pair
from jsqa.pairs.store import PairSet, load_pairs
from jsqa.signal.levels import active_speech_level, measure_snr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six speech-like utterances (one shorter than a segment, one silent, one corrupt) and
    three noises (one shorter than a segment), with manifests, under one project root."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(7)
    clean_rows = []
    for i, seconds in enumerate([1.2, 0.3, 2.0, 1.0, 1.5, 1.1]):
        x = speech_like(seconds, rng)
        if i == 3:
            x = np.zeros_like(x)
        rel = f"clean/u{i}.wav"
        write_audio(root / rel, x, SR)
        clean_rows.append(
            {"id": f"u{i}", "path": rel, "duration": seconds, "sample_rate": SR, "channels": 1, "speaker": f"s{i % 2}"}
        )
    (root / "clean/u5.wav").write_bytes(b"this is not a wav file at all")
    noise_rows = []
    for i, seconds in enumerate([2.0, 0.1, 1.3]):
        n = rng.standard_normal(int(seconds * SR)) * 0.1
        if i == 2:
            n = np.cumsum(n) / 40  # brown-ish: a different spectrum
        rel = f"noise/n{i}.wav"
        write_audio(root / rel, n, SR)
        noise_rows.append(
            {"id": f"n{i}", "path": rel, "duration": seconds, "sample_rate": SR, "channels": 1, "environment": "lab"}
        )
    write_manifest(root / "clean.parquet", pd.DataFrame(clean_rows), "clean")
    write_manifest(root / "noise.parquet", pd.DataFrame(noise_rows), "noise")
    return root


def generate(corpus: Path, out: Path, workers: int = 1) -> PairSet:
    cfg = dataclasses.replace(CFG, workers=workers)
    return generate_pairs(corpus / "clean.parquet", corpus / "noise.parquet", cfg, 11, out, SR, corpus)


@pytest.fixture(scope="module")
def rendered(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "w1"
    generate(corpus, out, workers=1)
    return out


# ---------------------------------------------------------------- the JND rule


def test_within_jnd_rule() -> None:
    assert within_jnd(10.0, 12.9, 3.0)
    assert not within_jnd(10.0, 13.0, 3.0)  # strictly less than one JND
    assert within_jnd(math.inf, math.inf, 3.0)
    assert not within_jnd(math.inf, 40.0, 3.0)
    got = within_jnd(np.array([0.0, 0.0, math.inf]), np.array([-2.9, 3.5, math.inf]), 3.0)
    assert got.tolist() == [True, False, True]
    with pytest.raises(ConfigError, match="jnd_db"):
        within_jnd(1.0, 2.0, 0.0)


# ---------------------------------------------------------------- planning


def test_plan_satisfies_jnd_rule_and_ranges() -> None:
    clean, noise = clean_frame(200), noise_frame(5)
    plan = plan_pairs(clean, noise, CFG, 3, SR)
    lo, hi = CFG.snr_db
    assert list(plan.columns) == PLAN_COLUMNS
    assert plan["pair_id"].tolist() == list(range(800))
    assert (plan["shard"] == plan["pair_id"] // CFG.shard_size).all()

    anchor = np.isposinf(plan["snr_a"])
    pos = plan[~anchor]
    assert within_jnd(pos["snr_a"].to_numpy(), pos["snr_b"].to_numpy(), CFG.jnd_db).all()
    assert pos["snr_a"].between(lo, hi).all()
    anchors = plan[anchor]
    assert ((anchors["snr_b"] >= hi) & (anchors["snr_b"] < hi + CFG.jnd_db)).all()
    assert anchor.mean() == pytest.approx(CFG.clean_anchor_prob, abs=0.05)

    # Pair k of an utterance draws snr_a from the k-th quarter of the range.
    k = plan["pair_id"] % CFG.pairs_per_utterance
    width = (hi - lo) / CFG.pairs_per_utterance
    stratum = np.floor((pos["snr_a"] - lo) / width).clip(upper=CFG.pairs_per_utterance - 1)
    assert (stratum == k[~anchor]).all()

    n_len = 3 * SR
    assert plan["noise_offset"].between(0, n_len - 1).all()
    clean_len = np.round(clean.set_index("id").loc[plan["utterance_id"], "duration"].to_numpy() * SR)
    assert (plan["crop_offset"].to_numpy() + T <= clean_len).all()
    # Pairs of one utterance share their segment and differ only in SNR.
    per_utt = plan.groupby("utterance_id")[["noise_id", "noise_offset", "crop_offset"]].nunique()
    assert (per_utt == 1).all().all()


def test_plan_is_deterministic_and_per_utterance() -> None:
    clean, noise = clean_frame(30), noise_frame(4)
    full = plan_pairs(clean, noise, CFG, 5, SR)
    pd.testing.assert_frame_equal(full, plan_pairs(clean, noise, CFG, 5, SR))
    # Utterance i's pairs depend on (seed, i) only: a prefix of the manifest plans the same.
    head = plan_pairs(clean.head(10), noise, CFG, 5, SR)
    pd.testing.assert_frame_equal(head, full.head(40))
    other = plan_pairs(clean, noise, CFG, 6, SR)
    assert not np.array_equal(other["snr_b"], full["snr_b"])
    assert (full["seed"] == 5).all()
    # One utterance's draws are replayed alone by advancing the run seed's stream.
    width = plan_width(CFG)
    whole = plan_uniforms(5, 0, 30, width)
    for i in (0, 7, 29):
        np.testing.assert_array_equal(plan_uniforms(5, i, 1, width)[0], whole[i])


def test_plan_short_utterance_starts_at_zero_and_independent_segments() -> None:
    clean, noise = clean_frame(20, seconds=0.2), noise_frame(3)
    plan = plan_pairs(clean, noise, dataclasses.replace(CFG, shared_segment=False), 1, SR)
    assert (plan["crop_offset"] == 0).all()
    assert plan.groupby("utterance_id")["noise_offset"].nunique().gt(1).any()


def test_plan_rejects_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="pairs.snr_db"):
        plan_pairs(clean_frame(2), noise_frame(1), dataclasses.replace(CFG, snr_db=(10.0, 0.0)), 1, SR)
    with pytest.raises(ManifestError, match="no utterances"):
        plan_pairs(clean_frame(0), noise_frame(1), CFG, 1, SR)
    with pytest.raises(ManifestError, match="no noise"):
        plan_pairs(clean_frame(2), noise_frame(0), CFG, 1, SR)
    with pytest.raises(ManifestError, match="speaker"):
        plan_pairs(clean_frame(2).drop(columns="speaker"), noise_frame(1), CFG, 1, SR)


# ---------------------------------------------------------------- rendering one pair


def recipe(snr_a: float, snr_b: float, crop_offset: int = 1000, noise_offset: int = 500) -> dict:
    return {"crop_offset": crop_offset, "noise_offset": noise_offset, "snr_a": snr_a, "snr_b": snr_b}


def test_render_pair_hits_snrs_against_utterance_level() -> None:
    rng = np.random.default_rng(0)
    speech = speech_like(1.5, rng).astype(np.float32)
    noise = rng.standard_normal(SR).astype(np.float32)
    for snr_a in rng.uniform(-5, 40, 20):
        snr_b = snr_a + rng.uniform(-3, 3)
        a, b, gains = render_pair(recipe(snr_a, snr_b), speech, noise, CFG, SR)
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (T,)
        clean = speech[1000 : 1000 + T].astype(np.float64) * gains["speech_gain"]
        for member, snr in ((a, snr_a), (b, snr_b)):
            got = measure_snr(clean, member - clean, SR, speech_level_db=CFG.speech_level_dbov)
            assert got == pytest.approx(snr, abs=0.1)
    normalised = speech.astype(np.float64) * gains["speech_gain"]
    assert active_speech_level(normalised, SR) == pytest.approx(CFG.speech_level_dbov, abs=1e-6)


def test_clean_anchor_member_is_the_normalised_speech_exactly() -> None:
    rng = np.random.default_rng(1)
    speech = speech_like(1.2, rng).astype(np.float32)
    a, b, gains = render_pair(recipe(math.inf, 41.0), speech, rng.standard_normal(SR), CFG, SR)
    # The float32 speech times the float32 gain at int16 scale, brought back by a power of two.
    scale = np.float32(gains["speech_gain"] * 32768.0)
    expected = (speech[1000 : 1000 + T] * scale) * np.float32(1.0 / 32768.0)
    assert gains["noise_gain_a"] == 0.0 and gains["noise_gain_b"] > 0.0
    assert np.array_equal(a, expected)
    assert not np.array_equal(b, expected)


def test_short_noise_is_looped() -> None:
    rng = np.random.default_rng(2)
    speech = speech_like(1.0, rng)
    period = 1600  # 0.1 s of noise for a 0.5 s segment
    noise = rng.standard_normal(period)
    a, b, gains = render_pair(recipe(math.inf, 10.0, noise_offset=1234), speech, noise, CFG, SR)
    noise_part = b.astype(np.float64) - a
    assert np.allclose(noise_part[period:], noise_part[:-period], atol=1e-6)
    assert np.allclose(noise_part[:10], gains["noise_gain_b"] * noise[1234:1244], atol=1e-6)


# ---------------------------------------------------------------- sharded generation


def shard_files(out: Path) -> list[Path]:
    return sorted(out.glob("shard-*"))


def test_generation_layout_and_skips(rendered: Path) -> None:
    index = pd.read_json(rendered / "index.json", typ="series")
    plan = pd.read_parquet(rendered / "plan.parquet")
    pairs = pd.read_parquet(rendered / "pairs.parquet")
    skipped = pd.read_csv(rendered / "skipped.csv")
    assert index["n_planned"] == len(plan) == 6 * CFG.pairs_per_utterance
    assert index["n_shards"] == 4 and index["segment_samples"] == T and index["jnd_db"] == CFG.jnd_db
    # The silent (u3) and the corrupt (u5) utterances are skipped and reported, nothing else.
    assert sorted(skipped["utterance_id"]) == ["u3", "u5"]
    reasons = dict(zip(skipped["utterance_id"], skipped["reason"]))
    assert "silent" in reasons["u3"]
    assert "clean/u5.wav: not readable" in reasons["u5"]  # named as in the manifest
    assert skipped["n_pairs"].tolist() == [CFG.pairs_per_utterance] * 2
    assert not pairs["utterance_id"].isin(["u3", "u5"]).any()
    assert index["n_pairs"] == len(pairs) == len(plan) - 2 * CFG.pairs_per_utterance
    assert sum(s["n_rendered"] for s in index["shards"]) == len(pairs)
    assert not pairs.isna().any().any()
    pos = pairs[np.isfinite(pairs["snr_a"])]
    assert within_jnd(pos["snr_a"].to_numpy(), pos["snr_b"].to_numpy(), CFG.jnd_db).all()
    assert pos["snr_a"].between(*CFG.snr_db).all()
    for npy in rendered.glob("shard-*.npy"):
        arr = np.load(npy)
        assert arr.dtype == np.int16 and arr.shape[1:] == (2, T)
    # Each recipe points at its own row of its shard.
    for _shard, rows in pairs.groupby("shard"):
        assert rows["row"].tolist() == list(range(len(rows)))


def test_pair_set_returns_the_rendered_audio(rendered: Path, corpus: Path) -> None:
    ps = load_pairs(rendered)
    assert ps.n == len(ps) == len(ps.recipes)
    for i in range(ps.n):
        rec = ps.recipes.iloc[i]
        x = ps[i]
        assert x.dtype == np.float32 and x.shape == (2, T)
        speech, _ = load_audio(corpus / rec["clean_path"], SR)
        noise, _ = load_audio(corpus / rec["noise_path"], SR)
        a, b, gains = render_pair(rec, speech, noise, CFG, SR)
        # Stored as int16: within one quantisation step of the float render.
        assert np.max(np.abs(x - np.stack([a, b]))) <= 1.0 / 32768 + 1e-7
        assert gains == pytest.approx({k: rec[k] for k in gains}, rel=1e-12)
        clean = crop(speech, int(rec["crop_offset"]), T) * rec["speech_gain"]
        for member, snr in zip(x, (rec["snr_a"], rec["snr_b"])):
            if math.isinf(snr):
                assert np.max(np.abs(member - clean)) <= 1.0 / 32768 + 1e-7
            else:
                got = measure_snr(clean, member - clean, SR, speech_level_db=CFG.speech_level_dbov)
                assert got == pytest.approx(snr, abs=0.1)


def test_workers_give_bit_identical_output(rendered: Path, tmp_path: Path, corpus: Path) -> None:
    out2 = tmp_path / "w2"
    generate(corpus, out2, workers=2)
    names = [p.name for p in shard_files(rendered)]
    assert names == [p.name for p in shard_files(out2)] and len(names) == 12
    for name in names + ["plan.parquet", "pairs.parquet", "skipped.csv", "index.json"]:
        assert (rendered / name).read_bytes() == (out2 / name).read_bytes(), name


def _blas_threads(_: object) -> int:
    from threadpoolctl import threadpool_info

    return max(d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas")


def test_pool_workers_run_blas_on_one_thread() -> None:
    # An idle BLAS thread spins on the other core and doubles the CPU a level costs.
    from concurrent.futures import ProcessPoolExecutor

    from jsqa.pairs.generate import _pool_context
    from jsqa.pairs.render import worker_init

    with ProcessPoolExecutor(2, mp_context=_pool_context(), initializer=worker_init) as pool:
        assert list(pool.map(_blas_threads, range(2))) == [1, 1]


def _refaults_after_free(_: object) -> int:
    import resource

    arrays = [np.ones(1 << 18, dtype=np.float32) for _ in range(24)]  # 24 x 1 MiB, then freed
    del arrays
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    again = [np.ones(1 << 18, dtype=np.float32) for _ in range(24)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del again
    return faults


def test_pool_workers_reuse_freed_memory() -> None:
    # A worker frees a shard's decoded audio just before decoding the next one: with glibc's
    # defaults every page of it faulted in again (24 MiB: ~6,000 faults here).
    from concurrent.futures import ProcessPoolExecutor

    from jsqa.pairs.generate import _pool_context
    from jsqa.pairs.render import worker_init

    with ProcessPoolExecutor(1, mp_context=_pool_context(), initializer=worker_init) as pool:
        assert list(pool.map(_refaults_after_free, [0])) == [pytest.approx(0, abs=300)]


def test_resume_rerenders_only_the_missing_shard(
    corpus: Path, rendered: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "resume"
    generate(corpus, out)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shard_files(out)}
    for suffix in (".npy", ".arrow", ".json"):
        (out / f"shard-00001{suffix}").unlink()
    with caplog.at_level(logging.WARNING, logger="jsqa.pairs"):
        generate(corpus, out)
    # Skips of kept shards are still reported on a resumed run.
    assert any("u3" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in shard_files(out)}
    assert after.keys() == before.keys()
    for name, (mtime, data) in after.items():
        assert data == before[name][1], name
        assert (mtime == before[name][0]) == (not name.startswith("shard-00001")), name
    # Kept and re-rendered shards give the same pair set as a run from scratch.
    for name in ("pairs.parquet", "index.json", "skipped.csv"):
        assert (out / name).read_bytes() == (rendered / name).read_bytes(), name


def test_a_killed_runs_work_folder_is_resumed_then_removed(
    corpus: Path, rendered: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a killed run leaves after DVC deleted its output: no out_dir, two finished shards
    # in the work folder, a third one half written.
    out = tmp_path / "pairs"
    work = partial_dir(out)
    assert work == tmp_path / "pairs.partial"
    work.mkdir()
    for shard in ("shard-00000", "shard-00002"):
        for suffix in (".npy", ".json", ".arrow"):
            shutil.copy2(rendered / f"{shard}{suffix}", work / f"{shard}{suffix}")
    shutil.copy2(rendered / "shard-00001.npy", work / "shard-00001.npy")
    inodes = {p.name: p.stat().st_ino for p in work.glob("shard-0000[02].*")}
    with caplog.at_level(logging.INFO, logger="jsqa.pairs"):
        generate(corpus, out)
    assert "2 shards kept (2 resumed from" in caplog.text and "2 to render" in caplog.text
    assert {name: (out / name).stat().st_ino for name in inodes} == inodes  # moved, not rendered again
    assert not work.exists()
    for name in [p.name for p in shard_files(rendered)] + ["pairs.parquet", "index.json", "skipped.csv"]:
        assert (out / name).read_bytes() == (rendered / name).read_bytes(), name


def test_a_work_folder_of_other_settings_is_not_reused(
    corpus: Path, rendered: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    cfg = dataclasses.replace(CFG, speech_level_dbov=-32.0)
    generate_pairs(corpus / "clean.parquet", corpus / "noise.parquet", cfg, 11, other, SR, corpus)
    out = tmp_path / "pairs"
    work = partial_dir(out)
    work.mkdir()
    for p in shard_files(other):
        p.rename(work / p.name)
    (work / "shard-00099.npy").write_bytes(b"a shard of a larger plan")
    with caplog.at_level(logging.INFO, logger="jsqa.pairs"):
        generate(corpus, out)
    assert "0 shards kept (0 resumed from" in caplog.text and "4 to render" in caplog.text
    assert not work.exists()
    assert [p.name for p in shard_files(out)] == [p.name for p in shard_files(rendered)]
    for name in [p.name for p in shard_files(rendered)] + ["pairs.parquet", "index.json"]:
        assert (out / name).read_bytes() == (rendered / name).read_bytes(), name


def test_changed_render_settings_invalidate_shards(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "level"
    generate(corpus, out)
    first = load_pairs(out)[0]
    cfg = dataclasses.replace(CFG, speech_level_dbov=-32.0)
    ps = generate_pairs(corpus / "clean.parquet", corpus / "noise.parquet", cfg, 11, out, SR, corpus)
    ratio = np.abs(ps[0][0]).max() / np.abs(first[0]).max()
    assert ratio == pytest.approx(10 ** (-6 / 20), rel=0.01)


def test_rerun_over_an_older_layout_drops_its_parquet_shard_recipes(
    corpus: Path, rendered: Path, tmp_path: Path
) -> None:
    # Shard recipes were parquet files before render format 5: a rerun in such a folder
    # re-renders (old format) and must not leave the old recipe files beside the new ones.
    out = tmp_path / "old-layout"
    out.mkdir()
    (out / "shard-00000.parquet").write_bytes(b"old recipes")
    (out / "shard-00000.npy").write_bytes(b"old audio")
    generate(corpus, out)
    assert not (out / "shard-00000.parquet").exists()
    assert [p.name for p in shard_files(out)] == [p.name for p in shard_files(rendered)]
    assert (out / "shard-00000.npy").read_bytes() == (rendered / "shard-00000.npy").read_bytes()


def test_nothing_renderable_is_an_error(corpus: Path, tmp_path: Path) -> None:
    clean = pd.read_parquet(corpus / "clean.parquet")
    write_manifest(tmp_path / "silent.parquet", clean[clean["id"] == "u3"], "clean")
    with pytest.raises(AudioError, match="no pair could be rendered"):
        generate_pairs(tmp_path / "silent.parquet", corpus / "noise.parquet", CFG, 11, tmp_path / "out", SR, corpus)
    assert pd.read_csv(tmp_path / "out" / "skipped.csv")["utterance_id"].tolist() == ["u3"]


# ---------------------------------------------------------------- in-batch positives


def test_positives_mask_marks_only_jnd_neighbours(tmp_path: Path) -> None:
    rec = pd.DataFrame(
        {
            "pair_id": range(6),
            "utterance_id": ["u0", "u0", "u0", "u0", "u1", "u0"],
            "speaker": "s",
            "clean_path": "c.wav",
            "noise_id": ["n0", "n0", "n0", "n1", "n0", "n0"],
            "noise_path": "n.wav",
            "noise_offset": [5, 5, 5, 5, 5, 9],
            "crop_offset": 0,
            "snr_a": [10.0, 12.5, 13.0, 10.0, 10.0, 10.0],
            "snr_b": 0.0,
            "seed": 1,
            "shard": 0,
            "row": range(6),
        }
    )
    ps = PairSet(tmp_path, rec, T, SR, 3.0)
    m = ps.positives_mask(np.arange(6))
    assert m.dtype == bool and m.shape == (6, 6)
    assert np.array_equal(m, m.T) and m.diagonal().all()
    # Pair 0 is within one JND of pair 1 only (pair 2 is exactly 3 dB away; 3-5 differ in
    # noise, utterance or noise offset).
    assert m[0].tolist() == [True, True, False, False, False, False]
    assert m[1, 2]
    assert ps.positives_mask(np.array([4, 4])).all()
    with pytest.raises(IndexError):
        ps.positives_mask(np.array([6]))


def test_positives_mask_on_generated_pairs(rendered: Path) -> None:
    ps = load_pairs(rendered)
    idx = np.arange(ps.n)
    m = ps.positives_mask(idx)
    r = ps.recipes
    same_utt = r["utterance_id"].to_numpy()[:, None] == r["utterance_id"].to_numpy()[None, :]
    snr = r["snr_a"].to_numpy()
    # Pairs of one utterance share their segment, so the JND rule alone decides.
    assert np.array_equal(m, same_utt & within_jnd(snr[:, None], snr[None, :], CFG.jnd_db))


def test_positives_mask_accounts_for_distortions(tmp_path: Path) -> None:
    # One segment, SNRs all within one JND; only the distortion differs.
    kinds = ["none", "lowpass", "lowpass", "lowpass", "lowpass", "packet_loss", "packet_loss"]
    params = [0.0, 3000.0, 3100.0, 3300.0, 3000.0, 0.05, 0.055]
    seeds = [0, 7, 7, 7, 8, 7, 7]
    n = len(kinds)
    rec = pd.DataFrame(
        {
            "pair_id": range(n),
            "utterance_id": "u0",
            "speaker": "s",
            "clean_path": "c.wav",
            "noise_id": "n0",
            "noise_path": "n.wav",
            "noise_offset": 5,
            "crop_offset": 0,
            "snr_a": [10.0, 10.5, 11.0, 10.0, 10.0, 12.0, 11.0],
            "snr_b": 0.0,
            "seed": 1,
            "shard": 0,
            "distortion": kinds,
            "dist_param_a": params,
            "dist_param_b": params,
            "dist_seed": seeds,
            "rir_path": "",
            "row": range(n),
        }
    )
    ps = PairSet(tmp_path, rec, T, SR, 3.0, {"lowpass": 0.05, "packet_loss": 0.01})
    m = ps.positives_mask(np.arange(n))
    assert np.array_equal(m, m.T) and m.diagonal().all()
    # Clean vs distorted is never within one JND, whatever the SNRs.
    assert not m[0, 1:].any()
    # Lowpass 3000 vs 3100 Hz is within the 5% step; 3300 Hz (10%) is not; nor another seed.
    assert m[1, 2] and not m[1, 3] and not m[1, 4]
    # Packet loss 5% vs 5.5% is within its 1-point step; a different kind is not.
    assert m[5, 6] and not m[1, 5]
    # A tighter configured step is honoured: 3000 vs 3100 Hz is 3.3% apart.
    tight = PairSet(tmp_path, rec, T, SR, 3.0, {"lowpass": 0.02, "packet_loss": 0.01})
    assert not tight.positives_mask(np.array([1, 2]))[0, 1]
