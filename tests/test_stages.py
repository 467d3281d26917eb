"""The stage contract: dvc.yaml is the table in jsqa/stages.py, and the table matches the code."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jsqa.dvc_yaml import (
    check_dvc_yaml,
    code_deps,
    main,
    param_leaves,
    params_read,
    render_dvc_yaml,
    render_dvc_yaml_text,
)
from jsqa.stages import EXECUTION_KEYS, STAGES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def doc() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def test_dvc_yaml_on_disk_is_the_rendered_table(doc):
    assert (REPO / "dvc.yaml").read_text() == render_dvc_yaml_text()
    assert doc == render_dvc_yaml()
    assert list(doc["stages"]) == [s.name for s in STAGES]


def test_real_dvc_yaml_has_no_problems(doc):
    assert check_dvc_yaml(doc) == []
    assert main(["--check"]) == 0


def test_missing_code_dep_is_reported(doc):
    doc["stages"]["pairs"]["deps"].remove("jsqa/pairs/render.py")
    assert check_dvc_yaml(doc) == ["pairs: imports jsqa/pairs/render.py, not among its deps"]


def test_missing_params_key_is_reported(doc):
    doc["stages"]["finetune"]["params"].remove("data.sample_rate")
    assert check_dvc_yaml(doc) == ["finetune: reads params key data.sample_rate, not listed"]


def test_listed_execution_key_and_unread_key_and_stale_dep_are_reported(doc):
    stages = doc["stages"]
    stages["pairs"]["params"].append("pairs.workers")
    stages["finetune_scratch"]["params"].append("pairs.jnd_db")
    stages["pretrain"]["params"].remove("pretrain.epochs")
    stages["pretrain"]["params"].append("pretrain")  # a whole section holds execution keys
    stages["evaluate"]["deps"].append("jsqa/report.py")  # an old path
    problems = check_dvc_yaml(doc)
    assert "pairs: lists execution key pairs.workers" in problems
    assert "finetune_scratch: lists params key pairs.jnd_db, which its code does not read" in problems
    for key in ("pretrain.checkpoint_every", "pretrain.device", "pretrain.threads"):
        assert f"pretrain: lists execution key {key} (under pretrain)" in problems
    assert "evaluate: dep jsqa/report.py is neither an input nor code it imports" in problems
    assert len(problems) == 6, problems


def test_cmd_and_outs_must_match_the_table(doc):
    doc["stages"]["validate"]["outs"] = ["data/validation"]
    doc["stages"]["register"]["cmd"] += " --verbose"
    problems = check_dvc_yaml(doc)
    assert any(p.startswith("validate: outs differs from the table") for p in problems)
    assert any(p.startswith("register: cmd differs from the table") for p in problems)


def test_downstream_stages_depend_on_the_verdict_not_the_data_docs(doc):
    for name in ("pairs", "finetune", "finetune_scratch"):
        deps = doc["stages"][name]["deps"]
        assert "data/validation/report.json" in deps
        assert not any(d.startswith("data/validation/gx") or d == "data/validation" for d in deps)


def test_code_deps_of_pairs():
    deps = code_deps("jsqa.cli.pairs")
    assert {"jsqa/cli/pairs.py", "jsqa/pairs/render.py", "jsqa/signal/levels.py"} <= set(deps)
    assert "jsqa/scoring/serving.py" not in deps
    assert deps == sorted(deps)
    # Parent packages are not implied: jsqa/cli/__init__.py imports app, which imports every command.
    assert "jsqa/cli/__init__.py" not in deps and "jsqa/cli/app.py" not in deps


def test_register_depends_on_the_serving_code():
    deps = {*render_dvc_yaml()["stages"]["register"]["deps"]}
    assert {"jsqa/scoring/serving.py", "jsqa/scoring/pyfunc_code/mos.py", "jsqa/registry/provenance.py"} <= deps


def test_code_deps_follow_every_kind_of_import(tmp_path):
    pkg = tmp_path / "jsqa"
    for rel, text in {
        "__init__.py": "",
        "entry.py": "def run():\n    from jsqa.sub import leaf\n    from . import rel\n",
        "sub/__init__.py": "from jsqa.sub.x import X\n",
        "sub/leaf.py": "import jsqa.sub.deep\n",
        "sub/deep.py": "from jsqa.sub import X\n",  # X is a name: the package __init__ is imported
        "sub/x.py": "X = 1\n",
        "rel.py": "from .sub.x import X\n",
        "unused.py": "",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    assert code_deps("jsqa.entry", repo=tmp_path) == [
        "jsqa/entry.py",
        "jsqa/rel.py",
        "jsqa/sub/__init__.py",
        "jsqa/sub/deep.py",
        "jsqa/sub/leaf.py",
        "jsqa/sub/x.py",
    ]


def test_params_read_follows_attribute_chains_and_whole_sections():
    assert "data.sample_rate" in params_read("jsqa.cli.finetune")
    assert params_read("jsqa.cli.evaluate") == {
        "seed",
        "data.sample_rate",
        "evaluate.test_sets",
        "evaluate.bootstrap_resamples",
        "evaluate.device",
        "train.deterministic",
        "evaluate.peers",
    }
    pairs = params_read("jsqa.cli.pairs")  # p.pairs is passed whole: every leaf, workers too
    assert param_leaves("pairs") <= pairs and "pairs.distortions.reverb.rt60_s" in pairs
    assert "pairs.workers" in pairs


def test_execution_keys_are_real_leaves_and_never_listed(doc):
    for key in EXECUTION_KEYS:
        assert param_leaves(key) == {key}
    for name, stage in doc["stages"].items():
        for key in stage.get("params", []):
            if isinstance(key, dict):  # the params check stage reads the whole file
                continue
            assert not (param_leaves(key) & EXECUTION_KEYS), (name, key)


# --- DVC itself: execution settings re-run nothing -----------------------------------------

_FAKE_STAGE = '''"""Create the given files (a path with a suffix) and folders (none, or .seeds) with content."""
import pathlib, sys
for arg in sys.argv[1:]:
    p = pathlib.Path(arg)
    if p.suffix and p.suffix != ".seeds":
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(arg)
    else:
        p.mkdir(parents=True, exist_ok=True)
        (p / "x").write_text(arg)
'''


def _out_paths(stage: dict) -> list[str]:
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for e in stage.get(kind, []):
            paths.extend(e if isinstance(e, dict) else [e])
    return paths


def _fake_cmds(doc: dict) -> dict:
    """``doc`` with every cmd replaced by one that just creates the stage's outputs (and the
    files later stages depend on inside an output folder); deps, params and outs unchanged."""
    fake = copy.deepcopy(doc)
    all_deps = [d for s in doc["stages"].values() for d in s.get("deps", [])]
    for stage in fake["stages"].values():
        outs = _out_paths(stage)
        inside = [d for d in all_deps for o in outs if d.startswith(o + "/")]
        stage["cmd"] = shlex.join([sys.executable, "fake_stage.py", *inside, *outs])
    return fake


def _dvc(project: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        check=False,
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _set(project: Path, key: str, value: object) -> None:
    """Set one dotted key in the project's params.yaml (to a value it does not have)."""
    path = project / "params.yaml"
    before = yaml.safe_load(path.read_text())
    changed = copy.deepcopy(before)
    *parents, leaf = key.split(".")
    node = changed
    for part in parents:
        node = node[part]
    assert node[leaf] != value, key
    node[leaf] = value
    path.write_text(yaml.safe_dump(changed, sort_keys=False))


def _status(project: Path) -> dict:
    """``dvc status`` less the params check stage, which any edit of params.yaml makes stale (cheap, by design)."""
    status = json.loads(_dvc(project, "status", "--json") or "{}")
    status.pop(STAGES[0].name, None)
    return status


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    """A git + DVC project with the real dvc.yaml's deps/params/outs, run once with fake commands."""
    root = tmp_path_factory.mktemp("contract") / "project"
    shutil.copytree(REPO / "jsqa", root / "jsqa", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "fake_stage.py").write_text(_FAKE_STAGE)
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (root / "dvc.yaml").write_text(yaml.safe_dump(_fake_cmds(doc), sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    _dvc(root, "repro")
    assert _status(root) == {}
    return root


EXECUTION_CHANGES = {
    "pairs.workers": 3,
    "pretrain.threads": 1,
    "pretrain.device": "cpu",
    "pretrain.checkpoint_every": 7,
    "finetune.threads": 1,
    "finetune.device": "cpu",
    "validate.workers": 1,
    "train.deterministic": False,
    "evaluate.device": "cpu",
}


def test_execution_changes_cover_every_execution_key():
    assert set(EXECUTION_CHANGES) == EXECUTION_KEYS


def _set_many(project: Path, changes: dict[str, object]) -> None:
    for key, value in changes.items():
        _set(project, key, value)


@pytest.fixture
def restore_params(dvc_project):
    before = (dvc_project / "params.yaml").read_text()
    yield dvc_project
    (dvc_project / "params.yaml").write_text(before)


@pytest.mark.integration
def test_execution_settings_rerun_no_stage(restore_params):
    # All at once: one `dvc status` (seconds each); any listed one would name its stage.
    _set_many(restore_params, EXECUTION_CHANGES)
    assert _status(restore_params) == {}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("key", "value", "stages"),
    [
        ("pairs.jnd_db", 4.0, {"pairs", "calibrate"}),  # calibrate labels held-out pairs by the JND
        ("validate.min_rms_dbov", -80.0, {"validate"}),
        ("data.sample_rate", 8000, {"acquire", "validate", "pairs", "finetune", "finetune_scratch", "evaluate"}),
    ],
)
def test_a_result_setting_reruns_its_stages(restore_params, key, value, stages):
    _set(restore_params, key, value)
    status = _status(restore_params)
    assert set(status) == stages, status
    for name in stages:
        changed = [e["changed deps"] for e in status[name] if isinstance(e, dict) and "changed deps" in e]
        assert changed and key in json.dumps(changed), status[name]
