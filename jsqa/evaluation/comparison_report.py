"""Tables of the field comparison (mapped RMSE, peers, conditions) and the one-page HTML report.

Text for the CLI, markdown for the Prefect artifact, and a self-contained HTML page (tables and
plots embedded as ``data:`` URIs) that the evaluate stage writes and attaches to its MLflow run.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from jsqa.evaluation.comparison import POOLED, sort_sets
from jsqa.evaluation.metrics import METRICS
from jsqa.evaluation.report import FORMATS, HEADERS, evaluation_tables, format_num, heading_lines, table_lines

HEADERS_PROTOCOL = {"rmse_map1": "RMSE map1", "rmse_map3": "RMSE map3", "rmse_eps": "RMSE eps"}
HEADERS_CON = {"pcc": "PCC", "srcc": "SRCC", "rmse": "RMSE", "rmse_map1": "RMSE map1", "rmse_map3": "RMSE map3"}


def _sets(*sections: dict) -> list[str]:
    names = {db for section in sections for per in section.values() if isinstance(per, dict) for db in per}
    return sort_sets(list(names))


def comparison_tables(report: dict, fmt: str = "text", level: int = 2) -> str:
    """Peers beside the models, mapped and epsilon RMSE, per-condition results, peer facts, notes."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format '{fmt}' (choose {', '.join(FORMATS)})")
    digits = 4 if fmt == "markdown" else 3
    peers = report.get("peers") or {}
    lines = _peer_table(peers, fmt, level, digits)
    lines += _protocol_table({**(report.get("models") or {}), **peers}, fmt, level, digits)
    lines += _condition_table(report.get("conditions") or {}, fmt, level, digits)
    info = report.get("peer_info") or {}
    if info:
        rows = [
            [name, str(i.get("version")), f"{i.get('sample_rate')} Hz", str(i.get("licence")), str(i.get("trained_on"))]
            for name, i in info.items()
        ]
        lines += heading_lines("Peers: version, input rate, licence, training data", fmt, level)
        lines += table_lines(["peer", "version", "input rate", "licence", "trained on"], rows, fmt, names=5)
    notes = report.get("notes") or []
    if notes:
        lines += heading_lines("Notes", fmt, level)
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines).strip("\n") + "\n" if lines else ""


def _peer_table(peers: dict, fmt: str, level: int, digits: int) -> list[str]:
    """The peers' metrics per test set (none without peers)."""
    if not peers:
        return []
    rows = []
    for db in _sets(peers):
        for name, per in peers.items():
            m = per.get(db)
            if isinstance(m, dict):
                rows.append([db, name, *(format_num(m.get(k), digits) for k in METRICS), str(m.get("n", "–"))])
    return [
        *heading_lines("Peers per test set (same clips; n = clips the peer could score)", fmt, level),
        *table_lines(["test set", "peer", *(HEADERS[k] for k in METRICS), "n"], rows, fmt),
    ]


def _protocol_table(predictors: dict, fmt: str, level: int, digits: int) -> list[str]:
    """Mapped and epsilon-insensitive RMSE of every predictor that has them."""
    rows = []
    for db in _sets(predictors) if predictors else []:
        for name, per in predictors.items():
            m = per.get(db)
            if isinstance(m, dict) and any(k in m for k in HEADERS_PROTOCOL):
                rows.append([db, name, *(format_num(m.get(k), digits) for k in HEADERS_PROTOCOL)])
    if not rows:
        return []
    title = "RMSE after 1st / monotonic 3rd-order mapping per test set, and epsilon-insensitive RMSE (ITU-T P.1401)"
    return [
        *heading_lines(title, fmt, level),
        *table_lines(["test set", "predictor", *HEADERS_PROTOCOL.values()], rows, fmt),
    ]


def _condition_table(cons: dict, fmt: str, level: int, digits: int) -> list[str]:
    """Per-condition results of every predictor (none without conditions)."""
    if not cons:
        return []
    rows = []
    for db in _sets(cons):
        for name, per in cons.items():
            m = per.get(db)
            if isinstance(m, dict):
                cells = [format_num(m.get(k), digits) for k in HEADERS_CON]
                rows.append([db, name, *cells, str(m.get("n_conditions", "–"))])
    return [
        *heading_lines("Per condition (condition MOS = mean over its files, vs mean prediction)", fmt, level),
        *table_lines(["test set", "predictor", *HEADERS_CON.values(), "conditions"], rows, fmt),
    ]


def _img(png: Path, title: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}th{background:#f3f3f3}
td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}figcaption{color:#555}"""


def html_report(report: dict, plots: Sequence[tuple[str, Path]], title: str = "jsqa evaluation") -> str:
    """One self-contained HTML page: every table of the evaluation, then the plots (embedded)."""
    import mistune

    md = evaluation_tables(report, "markdown", level=2) + "\n" + comparison_tables(report, "markdown", level=2)
    body = mistune.create_markdown(escape=True, plugins=["table"])(md)
    figures = "\n".join(_img(p, t) for t, p in plots if Path(p).is_file())
    pooled = report.get("models") or {}
    n = next((per.get(POOLED, {}).get("n") for per in pooled.values() if isinstance(per, dict)), None)
    subtitle = f"<p>{n} test clips.</p>" if n else ""
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{subtitle}\n{body}\n"
        f"<h2>Plots</h2>\n{figures}\n</body></html>\n"
    )
