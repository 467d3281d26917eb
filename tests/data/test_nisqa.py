"""NISQA recipe: corpus CSV with the real columns, per-subset CSVs, licence gate, download."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from httpserver import serve

from jsqa.data.manifests import MOS_COLUMNS, read_manifest, write_manifest
from jsqa.data.nisqa import (
    LICENCE_NOTE,
    NISQA_REMOTE,
    NISQA_SUBSETS,
    download_nisqa,
    prepare_nisqa,
    prepare_user_mos,
)
from jsqa.errors import ConfigError, JsqaError, ManifestError

# The columns of NISQA_corpus_file.csv, in the published order.
CORPUS_COLUMNS = [
    "db", "con", "file", "con_description", "filename_deg", "filename_ref", "source", "lang", "votes",
    "mos", "noi", "col", "dis", "loud", "noi_std", "col_std", "dis_std", "loud_std", "mos_std",
    "filepath_deg", "filepath_ref",
]  # fmt: skip

CLIPS = {  # subset -> (file name, mos)
    "NISQA_TRAIN_SIM": [("c00001_a.wav", 3.2), ("c00002_b.wav", 1.4)],
    "NISQA_VAL_LIVE": [("c00003_c.wav", 4.1)],
    "NISQA_TEST_P501": [("c00004_d.wav", 2.5)],
}


def make_nisqa(base: Path, corpus_file: bool = True) -> Path:
    """base/NISQA_Corpus with deg/ audio (48 kHz) and the corpus CSV or per-subset CSVs."""
    corpus = base / "NISQA_Corpus"
    rng = np.random.default_rng(1)
    tables = {}
    for db, clips in CLIPS.items():
        rows = []
        for k, (name, mos) in enumerate(clips):
            deg = corpus / db / "deg" / name
            deg.parent.mkdir(parents=True, exist_ok=True)
            sf.write(deg, (0.05 * rng.standard_normal(4800)).astype(np.float32), 48000)
            row = dict.fromkeys(CORPUS_COLUMNS, 0)
            row.update(
                db=db,
                con=k,
                file=name[:-4],
                filename_deg=name,
                filename_ref=name,
                source="x",
                lang="en",
                votes=5,
                mos=mos,
                filepath_deg=f"{db}/deg/{name}",
                filepath_ref=f"{db}/ref/{name}",
            )
            rows.append(row)
        tables[db] = pd.DataFrame(rows, columns=CORPUS_COLUMNS)
    if corpus_file:
        pd.concat(tables.values()).to_csv(corpus / "NISQA_corpus_file.csv", index=False)
    else:
        for db, table in tables.items():
            table.to_csv(corpus / db / f"{db}_file.csv", index=False)
    return corpus


def test_corpus_csv_becomes_a_manifest_with_splits(tmp_path: Path) -> None:
    corpus = make_nisqa(tmp_path)
    manifest, quarantine = prepare_nisqa(corpus, root=tmp_path)
    assert quarantine == [] and list(manifest.columns)[: len(MOS_COLUMNS)] == MOS_COLUMNS
    split = dict(zip(manifest["db"], manifest["split"]))
    assert split == {"NISQA_TRAIN_SIM": "train", "NISQA_VAL_LIVE": "val", "NISQA_TEST_P501": "test"}
    row = manifest.set_index("id").loc["NISQA_TRAIN_SIM__deg__c00002_b"]
    assert row["mos"] == pytest.approx(1.4) and row["sample_rate"] == 48000
    assert row["path"] == "NISQA_Corpus/NISQA_TRAIN_SIM/deg/c00002_b.wav"
    write_manifest(tmp_path / "mos.parquet", manifest, "mos")
    assert len(read_manifest(tmp_path / "mos.parquet", "mos")) == 4


def test_subset_choice_and_unknown_subset(tmp_path: Path) -> None:
    corpus = make_nisqa(tmp_path)
    manifest, _ = prepare_nisqa(tmp_path, subsets=["NISQA_VAL_LIVE", "NISQA_TEST_P501"])  # parent works too
    assert sorted(manifest["split"]) == ["test", "val"]
    with pytest.raises(ConfigError, match="NISQA_TEST_XYZ.*known: NISQA_TRAIN_SIM"):
        prepare_nisqa(corpus, subsets=["NISQA_TEST_XYZ"])
    assert len(NISQA_SUBSETS) == 7


def test_per_subset_csvs_when_the_corpus_file_is_absent(tmp_path: Path) -> None:
    corpus = make_nisqa(tmp_path, corpus_file=False)
    manifest, _ = prepare_nisqa(corpus, subsets=["NISQA_TRAIN_SIM", "NISQA_TEST_P501"])
    assert sorted(manifest["db"]) == ["NISQA_TEST_P501", "NISQA_TRAIN_SIM", "NISQA_TRAIN_SIM"]
    with pytest.raises(ManifestError, match="NISQA_VAL_SIM_file.csv.*download_nisqa"):
        prepare_nisqa(corpus, subsets=["NISQA_VAL_SIM"])


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    corpus = make_nisqa(tmp_path)
    csv = corpus / "NISQA_corpus_file.csv"
    pd.read_csv(csv).drop(columns="mos").to_csv(csv, index=False)
    with pytest.raises(ManifestError, match=r"NISQA_corpus_file\.csv: missing column\(s\) mos"):
        prepare_nisqa(corpus)


def test_unreadable_clip_is_quarantined(tmp_path: Path) -> None:
    corpus = make_nisqa(tmp_path)
    (corpus / "NISQA_VAL_LIVE/deg/c00003_c.wav").write_bytes(b"garbage")
    manifest, quarantine = prepare_nisqa(corpus, root=tmp_path)
    assert len(manifest) == 3 and "NISQA_VAL_LIVE" not in set(manifest["db"])
    assert quarantine[0]["path"] == "NISQA_Corpus/NISQA_VAL_LIVE/deg/c00003_c.wav"


def test_a_row_naming_a_missing_file_is_quarantined_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = make_nisqa(tmp_path)
    csv = corpus / "NISQA_corpus_file.csv"
    table = pd.read_csv(csv)
    gone = table.iloc[[1]].assign(filepath_deg="NISQA_TRAIN_SIM/deg/c09999_gone.wav", file="c09999_gone")
    pd.concat([table.iloc[:2], gone, table.iloc[2:]]).to_csv(csv, index=False)
    with caplog.at_level("INFO"):
        manifest, quarantine = prepare_nisqa(corpus, root=tmp_path)
    assert len(manifest) == len(table) and "c09999_gone" not in " ".join(manifest["path"])
    assert [q["path"] for q in quarantine] == ["NISQA_Corpus/NISQA_TRAIN_SIM/deg/c09999_gone.wav"]
    assert quarantine[0]["reason"].endswith("c09999_gone.wav: no such file")
    assert len([r for r in caplog.records if "c09999_gone" in r.getMessage()]) == 1


def test_user_mos_dataset_in_the_nisqa_layout(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "x.wav", np.full(1600, 0.01, np.float32), 16000)
    pd.DataFrame({"filepath_deg": ["clips/x.wav"], "mos": [3.5], "db": ["MYSET_TEST"]}).to_csv(
        tmp_path / "my.csv", index=False
    )
    manifest, _ = prepare_user_mos(tmp_path / "my.csv", root=tmp_path)
    assert manifest[["id", "mos", "db", "split"]].values.tolist() == [["clips__x", 3.5, "MYSET_TEST", "test"]]
    with pytest.raises(ManifestError, match="not found"):
        prepare_user_mos(tmp_path / "none.csv")


@pytest.mark.parametrize("column", ["filepath_ref", "ref_path"])
def test_user_csv_clean_reference_column_by_either_name(column: str, tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    sf.write(tmp_path / "clips" / "x.wav", np.full(1600, 0.01, np.float32), 16000)
    table = {"filepath_deg": ["clips/x.wav", "clips/x.wav"], "mos": [3.5, 2.0], "db": ["MYSET_TEST"] * 2}
    pd.DataFrame({**table, column: ["clips/clean_x.wav", ""]}).to_csv(tmp_path / "my.csv", index=False)
    manifest, _ = prepare_user_mos(tmp_path / "my.csv", root=tmp_path)
    assert manifest["ref_path"].iloc[0] == "clips/clean_x.wav" and pd.isna(manifest["ref_path"].iloc[1])


def test_licence_not_accepted_shows_the_note_and_how_to_accept(tmp_path: Path) -> None:
    with pytest.raises(JsqaError) as err:
        download_nisqa(tmp_path, accept_licence=False)
    assert LICENCE_NOTE in str(err.value)
    assert "set data.corpora.accept_nisqa_licence: true" in str(err.value)
    assert "non-commercial" in LICENCE_NOTE
    assert not any(tmp_path.iterdir())  # nothing downloaded
    assert "4728081" in NISQA_REMOTE.urls[0]


def test_download_from_mirror_then_rerun_is_a_noop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = make_nisqa(tmp_path / "src")
    served = tmp_path / "www"
    served.mkdir()
    with zipfile.ZipFile(served / "NISQA_Corpus.zip", "w") as zf:
        for f in sorted(corpus.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(corpus.parent).as_posix())
    target = tmp_path / "data"
    with serve(served) as url:
        with caplog.at_level("WARNING", logger="jsqa.data.nisqa"):
            out = download_nisqa(target, accept_licence=True, base_url=url, progress=False)
        assert "non-commercial" in caplog.text  # the note is logged even when accepted
        assert out == target / "NISQA_Corpus"
        assert download_nisqa(target, accept_licence=True, base_url=url, progress=False) == out
        assert len(url.requests) == 1
    manifest, _ = prepare_nisqa(out, root=tmp_path)
    assert len(manifest) == 4
