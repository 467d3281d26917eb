"""Scoring reads files block by block: the blocks equal whole-file decoding and resampling, and
what a user is told about empty, over-long and truncated files (and CSVs without a split)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from jsqa.audio import BlockResampler, load_audio, resample
from jsqa.data.manifests import mos_manifest_from_csv
from jsqa.errors import AudioError, ManifestError
from jsqa.scoring.limits import LIMITS, ScoringAudio, ScoringLimits, load_scoring_audio
from jsqa.scoring.predict import format_rows


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize(("orig", "target"), [(48000, 16000), (44100, 16000), (8000, 16000), (47999, 16000)])
def test_block_resampling_equals_whole_signal_resampling(orig, target):
    x = _noise(orig * 3 + 17)
    rng = np.random.default_rng(1)
    r, parts, i = BlockResampler(orig, target), [], 0
    while i < len(x):
        step = int(rng.integers(1, orig))  # blocks from one sample to nearly a second
        parts.append(r.push(x[i : i + step]))
        i += step
    parts.append(r.finish())
    np.testing.assert_allclose(np.concatenate(parts), resample(x, orig, target), atol=1e-5)


def test_a_file_read_in_blocks_equals_the_file_decoded_whole(tmp_path):
    f = tmp_path / "a.wav"
    sf.write(f, np.stack([_noise(48000 * 5 + 3), _noise(48000 * 5 + 3, 1)], axis=1), 48000)
    with ScoringAudio(f) as audio:
        blocks = list(audio.blocks(16000))
        assert len(blocks) > 2 and audio.truncation is None
    np.testing.assert_allclose(np.concatenate(blocks), load_audio(f, 16000)[0], atol=1e-5)


def test_a_zero_byte_file_is_called_empty(tmp_path):
    f = tmp_path / "nothing.wav"
    f.touch()
    with pytest.raises(AudioError, match=rf"^{f}: empty file \(0 bytes\)$"):
        ScoringAudio(f)


def test_the_duration_refusal_names_the_option_that_raises_it(tmp_path):
    f = tmp_path / "long.wav"
    sf.write(f, _noise(16000 * 3), 16000)
    with pytest.raises(AudioError) as err:
        ScoringAudio(f, limits=ScoringLimits(max_seconds=2.0))
    assert str(err.value) == f"{f}: 3.0 s long, over the 2 s limit (raise it with --max-seconds)"
    assert LIMITS.max_seconds == 600


def test_a_truncated_wav_says_how_much_was_read(tmp_path):
    whole, cut = tmp_path / "whole.wav", tmp_path / "cut.wav"
    sf.write(whole, _noise(16000), 16000, subtype="PCM_16")
    raw = whole.read_bytes()
    cut.write_bytes(raw[: 44 + 2 * 6000])  # the header still promises 16000 frames
    with ScoringAudio(cut) as audio:
        assert sum(len(b) for b in audio.blocks(16000)) == 6000
        assert audio.truncation == f"{cut}: truncated: read 6000 of 16000 frames"
    assert len(load_scoring_audio(cut)) == 6000


def test_a_user_csv_without_split_says_to_add_a_split_column(tmp_path):
    sf.write(tmp_path / "a.wav", _noise(16000), 16000)
    pd.DataFrame({"filepath_deg": ["a.wav"], "mos": [3.0], "db": ["MYCORPUS"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ManifestError, match="db names carry no TRAIN/VAL/TEST .* there is no 'split' column"):
        mos_manifest_from_csv(tmp_path / "c.csv", root=tmp_path)


def test_every_output_format_ends_with_exactly_one_newline():
    rows = [{"path": "a.wav", "mos": 3.5, "error": None, "warning": None}]
    for fmt in ("csv", "json", "table"):
        text = format_rows(rows, fmt)
        assert text.endswith("\n") and not text.endswith("\n\n"), fmt


def test_a_sample_rate_beyond_int64_is_refused_as_out_of_range():
    from jsqa.scoring.limits import scoring_waveform

    with pytest.raises(AudioError, match=r"^clip: sample rate -9223372036854775809 Hz is outside 8000\.\.192000 Hz$"):
        scoring_waveform(np.zeros(1000, dtype=np.float32), -(2**63) - 1, "clip")
