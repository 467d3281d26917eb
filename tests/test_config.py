"""params.yaml -> typed config: defaults, typos and bad values are caught with the key named."""

from pathlib import Path

import pytest
import yaml

from jsqa.config import Params, load_params, params_from_dict, to_flat_dict
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
    "raw, key",
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
