"""params.yaml -> typed config: defaults, typos and bad values are caught with the key named."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from jsqa.config import (
    ModelConfig,
    PairsConfig,
    Params,
    load_params,
    params_from_dict,
    parse_digest,
    to_flat_dict,
)
from jsqa.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_file_loads_and_matches_dataclass_sections():
    p = load_params(REPO / "params.yaml")
    assert isinstance(p, Params)
    assert p.pairs.jnd_db == 3.0
    assert p.model.size in ("small", "paper")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # every section in the file is a real config section (no dead params)
    assert set(raw) <= set(Params.__dataclass_fields__)


def test_typo_names_the_full_key_and_suggests_the_right_one(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("finetune:\n  lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_params(f)
    msg = str(err.value)
    assert "finetune.lerning_rate" in msg and "finetune.learning_rate" in msg and str(f) in msg


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"pretrain": {"epochs": "ten"}}, "pretrain.epochs"),
        ({"pairs": {"snr_db": [1.0]}}, "pairs.snr_db"),
        ({"model": {"size": "huge"}}, "model.size"),
        ({"model": {"projection_head": "yes"}}, "model.projection_head"),
        ({"data": 3}, "data"),
    ],
)
def test_bad_values_name_their_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        params_from_dict(raw)


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_ints_are_accepted_as_floats_and_flattening_is_dotted():
    p = params_from_dict({"pairs": {"jnd_db": 2}})
    assert p.pairs.jnd_db == 2.0 and isinstance(p.pairs.jnd_db, float)
    flat = to_flat_dict(p)
    assert flat["pairs.jnd_db"] == 2.0 and flat["seed"] == p.seed


def test_dataclass_defaults_are_the_shipped_params():
    # Library callers that build configs in code get exactly what params.yaml ships.
    assert load_params(REPO / "params.yaml") == Params()


@pytest.mark.parametrize(
    ("raw", "key", "allowed"),
    [
        ({"finetune": {"loss": "huber"}}, "finetune.loss", "gnll, mse, l1"),
        ({"pretrain": {"device": "tpu"}}, "pretrain.device", "auto, cpu, cuda"),
        ({"register": {"direction": "up"}}, "register.direction", "higher, lower"),
        ({"data": {"demo": {"noise_families": ["white", "rain"]}}}, "data.demo.noise_families", "white, pink"),
    ],
)
def test_literal_choices_reject_other_values_naming_key_and_choices(raw, key, allowed):
    with pytest.raises(ConfigError) as err:
        params_from_dict(raw)
    msg = str(err.value)
    assert msg.startswith(f"{key}: ") and allowed in msg


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"pairs": {"jnd_db": 0.0}}, "pairs.jnd_db"),
        ({"pairs": {"snr_db": [5.0, 5.0]}}, "pairs.snr_db"),
        ({"pairs": {"snr_db": [0.0, float("inf")]}}, "pairs.snr_db"),
        ({"pairs": {"clean_anchor_prob": 1.5}}, "pairs.clean_anchor_prob"),
        ({"pairs": {"shard_size": 0}}, "pairs.shard_size"),
        ({"pairs": {"workers": 0}}, "pairs.workers"),
        ({"pairs": {"speech_level_dbov": 3.0}}, "pairs.speech_level_dbov"),
        ({"pairs": {"distortions": {"clip": {"prob": -0.1}}}}, "pairs.distortions.clip.prob"),
        ({"pairs": {"distortions": {"reverb": {"prob": 0.6}, "lowpass": {"prob": 0.6}}}}, "pairs.distortions"),
        ({"pretrain": {"epochs": 0}}, "pretrain.epochs"),
        ({"pretrain": {"temperature": 0.0}}, "pretrain.temperature"),
        ({"pretrain": {"learning_rate": -1e-3}}, "pretrain.learning_rate"),
        ({"finetune": {"batch_size": 0}}, "finetune.batch_size"),
        ({"finetune": {"seeds": 0}}, "finetune.seeds"),
        ({"data": {"demo": {"mos_splits": {"train": 0.7, "val": 0.1, "test": 0.1}}}}, "data.demo.mos_splits"),
        ({"validate": {"min_duration_s": 40.0}}, "validate.min_duration_s"),
        ({"seed": -1}, "seed"),
        ({"data": {"corpora": {"mirrors": {"librispeach": "https://x"}}}}, "data.corpora.mirrors"),
        (
            {"data": {"corpora": {"checksums": {"dev-clean.tar.gz": "md5:abc"}}}},
            "data.corpora.checksums.dev-clean.tar.gz",
        ),
        ({"data": {"corpora": {"checksums": {"x.zip": "sha1:" + "a" * 40}}}}, "data.corpora.checksums.x.zip"),
        ({"data": {"corpora": {"checksums": {"x.zip": "a" * 40}}}}, "data.corpora.checksums.x.zip"),
        ({"data": {"corpora": {"checksums": {"x.zip": "g" * 32}}}}, "data.corpora.checksums.x.zip"),
        ({"data": {"corpora": {"checksums": {"x.zip": 12345}}}}, "data.corpora.checksums.x.zip"),
    ],
)
def test_out_of_range_values_fail_at_load_naming_the_dotted_key(raw, key):
    with pytest.raises(ConfigError) as err:
        params_from_dict(raw)
    assert str(err.value).startswith(f"{key}: ")


def test_range_errors_name_the_file_and_key_through_load_params(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("pairs:\n  jnd_db: -1.0\n")
    with pytest.raises(ConfigError, match=rf"{f}: pairs\.jnd_db: must be positive, got -1\.0"):
        load_params(f)


def test_sections_built_in_code_are_validated_too():
    # __post_init__ runs whatever builds the section, and names its place in params.yaml.
    with pytest.raises(ConfigError, match=r"^pairs\.shard_size: must be >= 1, got 0$"):
        PairsConfig(shard_size=0)
    with pytest.raises(ConfigError, match=r"^model\.size: 'huge' is not one of small, paper$"):
        ModelConfig(size="huge")


def test_every_section_knows_its_dotted_place_in_params_yaml():
    seen: list[tuple[type, str]] = []

    def walk(cls: type, key: str) -> None:
        seen.append((cls, key))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{key}.{f.name}".lstrip("."))

    walk(Params, "")
    assert len(seen) == 21  # every section, each once
    for cls, key in seen:
        assert cls._key == key, cls.__name__


def test_distortion_settings_parse_into_specs_with_each_kinds_bounds():
    from jsqa.signal.distortions import parse_specs

    cfg = params_from_dict({"pairs": {"distortions": {"clip": {"prob": 0.5, "step_db": 2.0}}}}).pairs.distortions
    specs = parse_specs(cfg, 16000)
    assert [s.kind for s in specs] == ["reverb", "lowpass", "mulaw", "clip", "packet_loss", "mnru", "bandpass"]
    assert specs[3].step == 2.0 and specs[3].prob == 0.5 and cfg.steps["clip"] == 2.0 and cfg.enabled
    bad = params_from_dict({"pairs": {"distortions": {"mulaw": {"bits": [1, 8]}}}}).pairs.distortions
    with pytest.raises(ConfigError, match=r"pairs\.distortions\.mulaw: range \(1\.0, 8\.0\) out of bounds"):
        parse_specs(bad, 16000)
    # Beyond-noise pairs are on in the demo profile and off in the paper profile (additive noise only).
    assert Params().pairs.distortions.for_profile("demo").enabled
    off = Params().pairs.for_profile("paper").distortions
    assert not off.enabled and off.steps == Params().pairs.distortions.steps


def test_checksums_accept_md5_sha256_and_bare_hex_of_either_length():
    md5, sha = "0123456789abcdef" * 2, "0123456789ABCDEF" * 4
    checksums = {"a.tar.gz": f"md5:{md5}", "b.zip": f"sha256:{sha}", "c.zip": md5, "d.zip": sha}
    corpora = params_from_dict({"data": {"corpora": {"checksums": checksums}}}).data.corpora
    assert [parse_digest(v) for v in corpora.checksums.values()] == [
        ("md5", md5),
        ("sha256", sha.lower()),
        ("md5", md5),
        ("sha256", sha.lower()),
    ]
    with pytest.raises(ConfigError) as err:
        params_from_dict({"data": {"corpora": {"checksums": {"x.zip": "md5:" + "a" * 31}}}})
    assert str(err.value) == "data.corpora.checksums.x.zip: md5 needs 32 hex digits, got 'md5:" + "a" * 31 + "'"
