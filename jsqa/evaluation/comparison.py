"""The field's evaluation added to an evaluate report: mapped and epsilon RMSE, conditions, peers.

:func:`add_comparison` extends the report of :func:`jsqa.evaluation.evaluate.evaluate_models`
(new keys only; nothing existing changes):

- every per-set metrics dict under ``models`` gains ``rmse_map1``, ``rmse_map3`` and ``rmse_eps``
  where computable (absent otherwise; ``notes`` says why); under ``peers`` they are None instead;
- ``peers``: {output: {db: metrics, "pooled": metrics}} for each peer output (DNSMOS SIG, ...),
  over the clips the peer could score (``n``); STOI's raw RMSE/MAE are None (not a MOS scale);
- ``peer_info``: {peer: name, version, sample_rate, licence, trained_on, outputs};
- ``conditions``: {predictor: {db: condition-level metrics}} for sets with a condition column;
- ``notes``: sentences a reader needs (missing conditions, why rmse_eps is absent, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from jsqa.data.manifests import REF_PATH_COLUMNS
from jsqa.evaluation.metrics import METRICS, mos_metrics
from jsqa.evaluation.peers import PeerInfo
from jsqa.evaluation.protocol import (
    CONDITION_METRICS,
    PROTOCOL_METRICS,
    column_or_none,
    condition_metrics,
    condition_table,
    eps_reason,
    protocol_metrics,
)

log = logging.getLogger(__name__)

POOLED = "pooled"
NISQA_TEST_SETS = ("NISQA_TEST_FOR", "NISQA_TEST_P501", "NISQA_TEST_LIVETALK")


def _groups(dbs: pd.Series) -> dict[str, np.ndarray]:
    out = {str(db): idx for db, idx in dbs.groupby(dbs, sort=True).indices.items()}
    out[POOLED] = np.arange(len(dbs))
    return out


def _set_metrics(rows: pd.DataFrame, pred: np.ndarray, idx: np.ndarray, mos_scale: bool) -> dict | None:
    ok = idx[np.isfinite(pred[idx])]
    if len(ok) == 0:
        return None
    y = rows["mos"].to_numpy(dtype=np.float64)[ok]
    m: dict = mos_metrics(y, pred[ok])
    if not mos_scale:
        m["rmse"] = m["mae"] = None
    m.update(protocol_metrics(y, pred[ok], column_or_none(rows, "mos_std", ok), column_or_none(rows, "votes", ok)))
    return m


def add_comparison(
    report: dict,
    preds: pd.DataFrame,
    rows: pd.DataFrame,
    peer_scores: pd.DataFrame | None = None,
    peer_info: Mapping[str, PeerInfo] | None = None,
) -> pd.DataFrame:
    """Add protocol metrics, per-condition results and peers to ``report`` (in place).

    ``rows`` are the test rows in ``preds``' order (id, db, mos and optional condition, mos_std,
    votes); ``peer_scores`` has one column per peer output, aligned with ``rows``. Returns the
    condition-level table (predictor, db, condition, mos, pred, n) for the plots.
    """
    rows = rows.reset_index(drop=True)
    if list(rows["id"]) != list(preds["id"]):
        raise ValueError("test rows and predictions are not in the same order")
    groups = _groups(rows["db"])
    models = [c[len("pred_") :] for c in preds.columns if c.startswith("pred_")]
    _add_model_protocol(report, preds, rows, groups, models)
    notes: list[str] = []
    if peer_scores is not None and len(peer_scores.columns):
        notes += _add_peers(report, rows, groups, peer_scores, dict(peer_info or {}))
    for db, idx in groups.items():
        reason = eps_reason(column_or_none(rows, "mos_std", idx), column_or_none(rows, "votes", idx))
        if reason and db != POOLED:
            notes.append(f"rmse_eps on {db}: not computable ({reason})")
    table = _add_conditions(report, preds, rows, models, peer_scores, notes)
    report["notes"] = notes
    return table


def _add_model_protocol(
    report: dict, preds: pd.DataFrame, rows: pd.DataFrame, groups: dict[str, np.ndarray], models: list[str]
) -> None:
    """The protocol metrics into each model's per-set metrics under ``report["models"]``."""
    for name in models:
        pred = preds[f"pred_{name}"].to_numpy(dtype=np.float64)
        for db, idx in groups.items():
            extra = _set_metrics(rows, pred, idx, True)
            if extra is not None and db in report["models"].get(name, {}):
                # Absent rather than null when not computable: consumers of ``models`` (register's
                # tags) read every value as a number.
                report["models"][name][db].update({k: extra[k] for k in PROTOCOL_METRICS if extra[k] is not None})


def _add_peers(
    report: dict,
    rows: pd.DataFrame,
    groups: dict[str, np.ndarray],
    peer_scores: pd.DataFrame,
    info: Mapping[str, PeerInfo],
) -> list[str]:
    """``report["peers"]`` and ``report["peer_info"]``; returns the notes about them."""
    notes: list[str] = []
    report["peers"] = {}
    for out in peer_scores.columns:
        pred = peer_scores[out].to_numpy(dtype=np.float64)
        mos_scale = info[out].mos_scale if out in info else True
        per = {db: m for db, idx in groups.items() if (m := _set_metrics(rows, pred, idx, mos_scale)) is not None}
        report["peers"][out] = per
        missing = [db for db in groups if db not in per and db != POOLED]
        if out in info and info[out].needs_reference:
            note = reference_note(out, rows, pred)
            notes += [note] if note else []
        elif missing:
            notes.append(f"{out}: no scores on {', '.join(missing)}")
        if not mos_scale:
            notes.append(f"{out}: not on the MOS scale; raw RMSE/MAE are not reported, use the mapped RMSE")
    report["peer_info"] = {
        i.name: {
            "version": i.version,
            "sample_rate": i.sample_rate,
            "licence": i.licence,
            "trained_on": i.trained_on,
            "outputs": list(i.outputs),
        }
        for i in {i.name: i for i in info.values()}.values()
    }
    if any("distillmos" in (i.outputs) for i in info.values()) and any(db.startswith("NISQA") for db in groups):
        notes.append(
            "distillmos learned from NISQA-corpus data: its scores on NISQA test sets are not "
            "independent of its training"
        )
    return notes


def reference_note(out: str, rows: pd.DataFrame, pred: np.ndarray) -> str | None:
    """Why a reference-based peer output (PESQ, STOI) has no score on some test clips, or None
    when it scored them all: without this the peer silently drops out of the tables."""
    scored, total = int(np.isfinite(pred).sum()), len(rows)
    if scored == total:
        return None
    refs = rows["ref_path"] if "ref_path" in rows.columns else pd.Series([], dtype=object)
    given = int((refs.notna() & (refs.astype(str).str.strip() != "")).sum())
    names = " or ".join(REF_PATH_COLUMNS)
    if given == 0:
        return (
            f"{out}: skipped: it needs each clip's clean reference and the test clips have none "
            f"(a CSV gives it in a {names} column)"
        )
    return (
        f"{out}: scored {scored} of {total} test clips; it needs each clip's clean reference and "
        f"{total - given} have none; {given - scored} more could not be scored (reference file missing or unreadable)"
    )


def _add_conditions(
    report: dict,
    preds: pd.DataFrame,
    rows: pd.DataFrame,
    models: list[str],
    peer_scores: pd.DataFrame | None,
    notes: list[str],
) -> pd.DataFrame:
    """``report["conditions"]`` for the sets with a condition column (a note names the others);
    returns the condition-level table of every predictor."""
    predictors = {f"pred_{m}": m for m in models}
    table = pd.concat([rows[["db", "mos"]], preds[list(predictors)]], axis=1)
    if peer_scores is not None:
        for out in peer_scores.columns:
            table[f"pred_{out}"] = peer_scores[out].to_numpy()
            predictors[f"pred_{out}"] = out
    has_con = "condition" in rows.columns
    table["condition"] = rows["condition"] if has_con else None
    with_con = sorted({str(db) for db in rows.loc[table["condition"].notna(), "db"]}) if has_con else []
    without = sorted(set(map(str, rows["db"])) - set(with_con))
    if without:
        notes.append(
            f"per-condition results: {', '.join(without)} has no condition column "
            "(NISQA 'con' or a 'condition' column in the CSV)"
        )
    report["conditions"] = {}
    con_rows = []
    for col, name in predictors.items():
        if not with_con:
            break
        ct = condition_table(table[table["db"].isin(with_con)], col)
        if ct.empty:
            continue
        per = {str(db): condition_metrics(g) for db, g in ct.groupby("db", sort=True)}
        per[POOLED] = condition_metrics(ct)
        report["conditions"][name] = per
        con_rows.append(ct.assign(predictor=name))
    cols = ["predictor", "db", "condition", "mos", "pred", "n"]
    return pd.concat(con_rows, ignore_index=True)[cols] if con_rows else pd.DataFrame(columns=cols)


def metric_rows(report: dict) -> pd.DataFrame:
    """One row per (predictor, test set) with every file-level metric: the per-predictor CSV plot."""
    out = []
    for kind in ("models", "peers"):
        for name, per in (report.get(kind) or {}).items():
            for db, m in per.items():
                out.append(
                    {
                        "predictor": name,
                        "kind": kind[:-1],
                        "db": db,
                        **{k: m.get(k) for k in (*METRICS, *PROTOCOL_METRICS, "n")},
                    }
                )
    return pd.DataFrame(out)


def comparison_flat_metrics(report: dict) -> dict[str, float]:
    """MLflow metrics the base ones lack: ``{model}_{db}_{rmse_map1|...}``, ``peer_{out}_{db}_{metric}``,
    ``con_{predictor}_{db}_{metric}`` (finite values only)."""
    out: dict[str, float] = {}

    def put(key: str, v: object) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[key] = float(v)

    for name, per in (report.get("models") or {}).items():
        for db, m in per.items():
            for k in PROTOCOL_METRICS:
                put(f"{name}_{db}_{k}", m.get(k))
    for name, per in (report.get("peers") or {}).items():
        for db, m in per.items():
            for k in (*METRICS, *PROTOCOL_METRICS):
                put(f"peer_{name}_{db}_{k}", m.get(k))
    for name, per in (report.get("conditions") or {}).items():
        for db, m in per.items():
            for k in CONDITION_METRICS:
                put(f"con_{name}_{db}_{k}", m.get(k))
    return out


def predictor_names(report: dict) -> list[str]:
    """Models, then peer outputs: the panels of the scatter plot."""
    return [*(report.get("models") or {}), *(report.get("peers") or {})]


def sort_sets(names: Sequence[str]) -> list[str]:
    """Test sets sorted, NISQA's named test sets first in their usual order, pooled last."""
    order = {n: i for i, n in enumerate(NISQA_TEST_SETS)}
    return sorted(names, key=lambda n: (n == POOLED, order.get(n, len(order)), n))
