"""`jsqa study`: DVC experiments (label fractions, ablations) collected into one table and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_projects import blank_project, make_project  # noqa: F401

from jsqa.cli import main
from jsqa.errors import JsqaError
from jsqa.study import experiments_from_exp_show, study_markdown, study_table, varying_params
from jsqa.sweep import expand_grid

# What an evaluation of one setting holds (the parts the study reads): per seed, failed runs,
# and the paired comparison of the pooled set.
_EVAL_STAGE = """
import json, os, yaml
os.makedirs('metrics', exist_ok=True)
p = yaml.safe_load(open('params.yaml'))
f = p['finetune']['label_fraction']
assert f > 0, 'label_fraction must be > 0'
base = 0.6 + 0.2 * (1 - f)          # fewer labels, higher RMSE
gain = -0.08 if f < 0.5 else -0.01  # pretraining helps more when labels are scarce
per = lambda r: {str(s): {'pooled': {'rmse': r + 0.01 * s, 'pcc': 0.8 - r / 4}} for s in range(3)}
ev = {'per_seed': {'pretrained': per(base + gain), 'scratch': per(base)},
      'health': {'pretrained': {str(s): {'collapsed': False} for s in range(3)},
                 'scratch': {str(s): {'collapsed': f < 0.5 and s == 2} for s in range(3)}},
      'paired_of': 'pretrained vs scratch',
      'paired': {'pooled': {'rmse': {'rel': gain / base * 100, 'rel_lo': gain / base * 150,
                                     'rel_hi': gain / base * 50, 'diff': gain, 'p': 0.01}}},
      'verdict': ['pretrained vs scratch, pooled RMSE: ...']}
json.dump(ev, open('metrics/evaluate.json', 'w'))
"""


def _env() -> dict[str, str]:
    # Stage commands are looked up on PATH: the venv's bin must be on it (as `make` puts it).
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }


@pytest.mark.integration
def test_study_runs_a_grid_as_dvc_experiments_and_collects_a_table_and_plot(blank_project, tmp_path):
    runs_log = tmp_path / "evaluations.log"  # outside the project: counts the stage's executions
    root = make_project(
        blank_project,
        tmp_path / "proj",
        {
            "evaluate": {
                "cmd": f"{sys.executable} evaluate.py {runs_log}",
                "deps": ["evaluate.py"],
                "params": ["finetune.label_fraction"],
                "metrics": ["metrics/evaluate.json"],
            }
        },
        params={"seed": 1, "finetune": {"label_fraction": 1.0}},
    )
    # As in jsqa: metrics/ is git-ignored and the evaluation is a cached DVC metric, which is what
    # lets each experiment keep its own.
    (root / ".gitignore").write_text("/metrics/\n")
    log_run = (
        "import sys, yaml; open(sys.argv[1], 'a').write("
        "str(yaml.safe_load(open('params.yaml'))['finetune']['label_fraction']) + '\\n')\n"
    )
    (root / "evaluate.py").write_text(log_run + _EVAL_STAGE)

    def git(*cmd: str) -> None:
        done = subprocess.run(["git", *cmd], cwd=root, env=_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "study")
    study = [
        "study",
        "--root",
        str(root),
        "--out",
        str(root / "study.json"),
        "--table",
        str(root / "study.md"),
        "--plot",
        str(root / "study.png"),
    ]
    # The documented sweep (README, "Label efficiency"), with one setting that fails: the study
    # names it instead of silently dropping it, and exits 1 with the table written.
    grid = ["-S", "finetune.label_fraction=0.1,0.3,1.0,-1"]
    assert main([*study, *grid]) == 1
    executed = runs_log.read_text().split()
    assert sorted(executed) == ["-1", "0.1", "0.3", "1.0"]

    rows = json.loads((root / "study.json").read_text())["rows"]
    assert json.loads((root / "study.json").read_text())["factors"] == ["finetune.label_fraction"]
    by = {(r["finetune.label_fraction"], r["init"]): r for r in rows}
    assert set(by) == {(f, i) for f in (0.1, 0.3, 1.0) for i in ("pretrained", "scratch")}
    # Failed runs are counted and left out of the mean; the paired change sits on the candidate's row.
    assert by[(0.1, "scratch")]["failed"] == 1 and by[(0.1, "scratch")]["seeds"] == 2
    assert by[(0.1, "scratch")]["rmse"] == pytest.approx(0.6 + 0.2 * 0.9 + 0.005)
    assert by[(0.1, "pretrained")]["rmse_diff"] == pytest.approx(-0.08)
    assert by[(0.1, "pretrained")]["rmse_lo"] < by[(0.1, "pretrained")]["rmse"] < by[(0.1, "pretrained")]["rmse_hi"]
    table = (root / "study.md").read_text()
    assert "| finetune.label_fraction | init | seeds (failed) |" in table and "| 0.1 | scratch | 2 (1) |" in table
    assert (root / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((root / "study.json").read_text())["failed_experiments"] == ["label_fraction=-1"]
    assert "1 experiment(s) failed and are not in the table: label_fraction=-1" in table

    # Run again, interrupted or not: finished settings come from DVC's run cache (the stage does
    # not execute again), each setting is still one row, and only the failed one is retried.
    assert main([*study, *grid]) == 1
    assert sorted(runs_log.read_text().split()) == sorted([*executed, "-1"])
    again = json.loads((root / "study.json").read_text())["rows"]
    assert sorted((r["finetune.label_fraction"], r["init"]) for r in again) == sorted(by)


def test_a_grid_expands_like_dvc_and_names_each_setting_by_what_differs():
    grid = expand_grid(["evaluate.peers=[]", "finetune.label_fraction=0.1,0.3", "model.projection_head=true,false"])
    assert [s.overrides for s in grid] == [
        ("evaluate.peers=[]", "finetune.label_fraction=0.1", "model.projection_head=True"),
        ("evaluate.peers=[]", "finetune.label_fraction=0.1", "model.projection_head=False"),
        ("evaluate.peers=[]", "finetune.label_fraction=0.3", "model.projection_head=True"),
        ("evaluate.peers=[]", "finetune.label_fraction=0.3", "model.projection_head=False"),
    ]
    assert [s.name for s in grid][:2] == [
        "label_fraction=0.1_projection_head=True",
        "label_fraction=0.1_projection_head=False",
    ]
    # One setting: named by all of it; characters git refuses in a ref become '-'.
    assert [s.name for s in expand_grid(["evaluate.peers=[a, b]"])] == ["peers=-a-b"]
    assert expand_grid(["other.yaml:x.y=1,2"])[1].overrides == ("other.yaml:x.y=2",)
    with pytest.raises(JsqaError, match="at least one -S"):
        expand_grid([])
    with pytest.raises(JsqaError, match="cannot read the study's -S settings"):
        expand_grid(["finetune.label_fraction=[0.1"])


def test_experiments_are_read_from_dvc_exp_show_json_and_factors_found():
    def entry(rev, name, fraction, evaluation, children=()):
        data = {
            "params": {
                "params.yaml": {
                    "data": {"seed": 1, "finetune": {"label_fraction": fraction}, "model": {"size": "small"}}
                }
            },
            "metrics": {"metrics/evaluate.json": {"data": evaluation} if evaluation else {"error": {}}},
        }
        return {"rev": rev, "name": name, "data": data, "experiments": [{"revs": [c]} for c in children] or None}

    ev = {"per_seed": {"scratch": {"1": {"pooled": {"rmse": 0.7, "pcc": 0.8}}}}, "failed": {}}
    shown = [
        entry("workspace", None, 0.5, ev),
        entry("abc", "main", 1.0, None, [entry("e1", "exp-a", 0.1, ev), entry("e2", "exp-b", 0.5, ev)]),
    ]
    found = experiments_from_exp_show(shown)
    # The workspace repeats exp-b's params (an applied experiment): counted once; the commit has no evaluation.
    assert [e["name"] for e in found] == ["exp-a", "exp-b"]
    shown[0]["data"]["params"]["params.yaml"]["data"]["finetune"]["label_fraction"] = 1.0
    shown[0]["data"]["params"]["params.yaml"]["data"]["evaluate"] = {"peers": ["dnsmos"]}  # not a factor
    again = experiments_from_exp_show(shown)
    assert [e["name"] for e in again] == ["workspace", "exp-a", "exp-b"]
    assert varying_params(again) == ["finetune.label_fraction"]
    assert found[0]["params"]["finetune.label_fraction"] == 0.1
    assert varying_params(found) == ["finetune.label_fraction"]
    table = study_table(found)
    assert list(table["finetune.label_fraction"]) == [0.1, 0.5]
    md = study_markdown(table, ["finetune.label_fraction"])
    assert "| 0.1 | scratch | 1 (0) | 0.700 [0.700, 0.700] | 0.800 [0.800, 0.800] |  |" in md
    with pytest.raises(JsqaError, match="no experiment with an evaluation"):
        study_table([])


def test_study_reads_a_saved_exp_show_file(tmp_path, capsys):
    ev = {
        "per_seed": {
            "pretrained": {"1": {"pooled": {"rmse": 0.6, "pcc": 0.8}}, "2": {"pooled": {"rmse": 0.64, "pcc": 0.78}}}
        },
        "failed": {"pretrained": []},
    }
    shown = [
        {
            "rev": "abc",
            "name": "main",
            "data": {},
            "experiments": [
                {
                    "revs": [
                        {
                            "rev": f"e{i}",
                            "name": f"exp-{i}",
                            "data": {
                                "params": {"params.yaml": {"data": {"model": {"projection_head": flag}}}},
                                "metrics": {"metrics/evaluate.json": {"data": ev}},
                            },
                        }
                    ]
                }
                for i, flag in enumerate((True, False))
            ],
        }
    ]
    (tmp_path / "show.json").write_text(json.dumps(shown))
    assert (
        main(
            [
                "study",
                "--exp-json",
                str(tmp_path / "show.json"),
                "--out",
                str(tmp_path / "s.json"),
                "--table",
                str(tmp_path / "s.md"),
                "--plot",
                str(tmp_path / "s.png"),
            ]
        )
        == 0
    )
    assert "factors model.projection_head" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "s.json").read_text())["factors"] == ["model.projection_head"]
    assert (tmp_path / "s.png").is_file()
