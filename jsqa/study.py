"""The label-efficiency study (and ablations): DVC experiments collected into one table and plot.

Each DVC experiment is one setting (``finetune.label_fraction``, or an ablation such as
``model.projection_head``, ``pretrain.mask_jnd_negatives`` or ``pairs.jnd_db``) with its
``metrics/evaluate.json``, which already holds every seed of both inits and their paired
comparison. This module reads ``dvc exp show --json``, keeps the experiments that have an
evaluation, and lays them out by the params that differ between them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from jsqa.errors import JsqaError
from jsqa.io import atomic_path
from jsqa.stages import EXECUTION_KEYS

log = logging.getLogger(__name__)

EVALUATION = "metrics/evaluate.json"
PARAMS = "params.yaml"
POOLED = "pooled"
# Params that never make two settings of the study different: speed-only keys, and the peers
# (scored beside the models, off in study experiments, on in the workspace run).
IGNORED_PARAMS = frozenset({"seed", "evaluate.peers"}) | EXECUTION_KEYS


def experiments_from_exp_show(exp_show: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``[{name, rev, params: {dotted key: value}, evaluation: dict}]`` from ``dvc exp show --json``,
    for every commit and experiment that has an evaluation, and the workspace's own (the
    pipeline run at the params in params.yaml, one more setting of the study) unless an
    experiment has exactly its params."""
    found: list[dict[str, Any]] = []
    workspace: dict[str, Any] | None = None

    def visit(entry: Mapping[str, Any]) -> None:
        nonlocal workspace
        data = entry.get("data") or {}
        rev, name = entry.get("rev") or data.get("rev"), entry.get("name") or data.get("name")
        evaluation = ((data.get("metrics") or {}).get(EVALUATION) or {}).get("data")
        params = ((data.get("params") or {}).get(PARAMS) or {}).get("data")
        if evaluation and params:
            item = {
                "name": name or (rev if rev == "workspace" else str(rev)[:7]),
                "rev": rev,
                "params": _flatten(params),
                "evaluation": evaluation,
            }
            if rev == "workspace":
                workspace = item
            else:
                found.append(item)
        for group in entry.get("experiments") or []:
            for child in group.get("revs") or []:
                visit(child)

    for entry in exp_show:
        visit(entry)
    if workspace is not None and all(_setting(e["params"]) != _setting(workspace["params"]) for e in found):
        found.insert(0, workspace)
    return found


def failed_experiments(exp_show: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the experiments whose run failed (DVC keeps them, with an error, in the listing)."""
    names: list[str] = []
    for entry in exp_show:
        for group in entry.get("experiments") or []:
            for child in group.get("revs") or []:
                if child.get("error"):
                    names.append(str(child.get("name") or group.get("name") or child.get("rev")))
    return sorted(names)


def _setting(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in IGNORED_PARAMS}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def varying_params(experiments: Sequence[Mapping[str, Any]]) -> list[str]:
    """The params keys whose values differ between experiments (the study's factors), sorted."""
    keys = sorted({k for e in experiments for k in e["params"]} - IGNORED_PARAMS)
    return [k for k in keys if len({repr(e["params"].get(k)) for e in experiments}) > 1]


def _mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of the mean over seeds (the mean itself twice for one value)."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


def study_table(experiments: Sequence[Mapping[str, Any]], test_set: str = POOLED) -> pd.DataFrame:
    """One row per experiment and init: the factors, seeds that learned / failed, RMSE and PCC
    (mean and 95% interval over the seeds that learned), and the paired change of RMSE against
    the baseline with its interval and p-value (on the candidate's rows)."""
    if not experiments:
        raise JsqaError(
            "no experiment with an evaluation (metrics/evaluate.json) to collect: "
            "run the study first (README, 'Does pretraining help?')"
        )
    factors = varying_params(experiments)
    rows = []
    for e in experiments:
        ev = e["evaluation"]
        # `dvc exp show` drops lists from metrics, so failed runs are read from the per-seed
        # health flags (booleans survive) and, for saved files, from the list.
        health = ev.get("health") or {}
        failed = (
            {
                name: [s for s, h in per.items() if isinstance(h, Mapping) and h.get("collapsed")]
                for name, per in health.items()
            }
            if health
            else (ev.get("failed") or {})
        )
        paired = (ev.get("paired") or {}).get(test_set)
        cand = str(ev.get("paired_of", "")).split(" vs ")[0]
        for init, per_seed in (ev.get("per_seed") or {}).items():
            bad = {str(s) for s in failed.get(init, [])}
            learned = {s: m[test_set] for s, m in per_seed.items() if s not in bad and test_set in m}
            row: dict[str, Any] = {
                "experiment": e["name"],
                **{f: e["params"].get(f) for f in factors},
                "init": init,
                "seeds": len(learned),
                "failed": len(bad),
            }
            for metric in ("rmse", "pcc"):
                if learned:
                    mean, lo, hi = _mean_interval([m[metric] for m in learned.values()])
                    row.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
            if paired and init == cand:
                r = paired["rmse"]
                row.update(
                    {
                        "rmse_change_pct": r.get("rel"),
                        "rmse_change_lo": r.get("rel_lo"),
                        "rmse_change_hi": r.get("rel_hi"),
                        "rmse_diff": r.get("diff"),
                        "p": r.get("p"),
                    }
                )
            rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values([*factors, "init"], kind="stable").reset_index(drop=True)


def study_markdown(df: pd.DataFrame, factors: Sequence[str]) -> str:
    """The study table as markdown: a number with its interval in one cell."""

    def iv(r: pd.Series, k: str, digits: int = 3) -> str:
        if k not in r or pd.isna(r.get(k)):
            return "–"
        return f"{r[k]:.{digits}f} [{r[f'{k}_lo']:.{digits}f}, {r[f'{k}_hi']:.{digits}f}]"

    def change(r: pd.Series) -> str:
        if pd.isna(r.get("rmse_change_pct", np.nan)):
            return ""
        p = r["p"]
        ptxt = "p < 0.001" if p == 0 else f"p = {p:.3f}"
        return (
            f"{r['rmse_change_pct']:+.1f}% [{r['rmse_change_lo']:+.1f}, {r['rmse_change_hi']:+.1f}] "
            f"({r['rmse_diff']:+.3f} MOS), {ptxt}"
        )

    header = [*factors, "init", "seeds (failed)", "RMSE [95% CI]", "PCC [95% CI]", "RMSE change vs baseline"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in df.iterrows():
        cells = [
            *(str(r[f]) for f in factors),
            str(r["init"]),
            f"{r['seeds']} ({r['failed']})",
            iv(r, "rmse"),
            iv(r, "pcc"),
            change(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def study_plot(df: pd.DataFrame, x: str, path: str | Path, title: str = "") -> None:
    """RMSE and PCC (mean and 95% interval over seeds) against factor ``x``, one line per init
    (and per value of any other factor); log x for label fractions (PNG, atomic)."""
    others = [
        c
        for c in df.columns
        if c not in {x, "experiment", "init", "seeds", "failed"} and not c.startswith(("rmse", "pcc", "p"))
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, g in df.groupby(["init", *others], sort=True, dropna=False):
        label = ", ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        g = g.sort_values(x)
        for ax, metric in zip(axes, ("rmse", "pcc")):
            if metric not in g:
                continue
            err = np.vstack([g[metric] - g[f"{metric}_lo"], g[f"{metric}_hi"] - g[metric]])
            ax.errorbar(g[x], g[metric], yerr=err, marker="o", capsize=3, label=label)
    for ax, metric in zip(axes, ("RMSE", "PCC")):
        ax.set(xlabel=x, ylabel=f"test {metric} (pooled)", title=f"{title} {metric}".strip())
        if x.endswith("label_fraction"):
            ax.set_xscale("log")
            ax.set_xticks(sorted(df[x].unique()), labels=[f"{v:g}" for v in sorted(df[x].unique())])
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def factor_to_plot(factors: Iterable[str]) -> str | None:
    """The x axis: the label fraction when it varies, else the first factor."""
    factors = list(factors)
    if "finetune.label_fraction" in factors:
        return "finetune.label_fraction"
    return factors[0] if factors else None
