"""The evaluation table, rendered once for both readers: plain text (CLI) and markdown (Prefect).

Reads the ``metrics/evaluate.json`` layout of :func:`jsqa.evaluation.evaluate.evaluate_models`; older
reports without seeds or intervals render their primary figures only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jsqa.evaluation.metrics import METRICS

HEADERS = {"rmse": "RMSE", "mae": "MAE", "pcc": "PCC", "srcc": "SRCC"}
FORMATS = ("text", "markdown")


def _num(value: Any, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:+.2f}%"


def _test_sets(per_model: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for per_set in per_model.values():
        for name in per_set if isinstance(per_set, dict) else ():
            if name not in names:
                names.append(name)
    # The pooled row summarises the others, so it reads best last.
    return sorted(names, key=lambda n: n == "pooled")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str, names: int = 2) -> list[str]:
    if fmt == "markdown":
        clean = [[c.replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
            "| " + " | ".join(r) + " |" for r in clean
        ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    # Names left-aligned, figures right-aligned so the decimals line up.
    return [
        "  ".join(c.ljust(w) if i < names else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in [header, *rows]
    ]


def _heading(title: str, fmt: str, level: int) -> list[str]:
    return ["", f"{'#' * level} {title}", ""] if fmt == "markdown" else ["", title]


def evaluation_tables(report: dict, fmt: str = "text", level: int = 2) -> str:
    """The evaluation report as tables: primary model (with 95% bootstrap interval), mean ± std
    over seeds, and the relative change against the baseline. ``fmt``: 'text' or 'markdown'
    (titles as headings of ``level``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format '{fmt}' (choose {', '.join(FORMATS)})")
    digits = 4 if fmt == "markdown" else 3
    models = report.get("models") or {}
    ci = report.get("ci95") or {}
    seeds = report.get("seeds") or {}
    stats = report.get("seed_stats") or {}
    sets = _test_sets(models)
    lines: list[str] = []

    rows = []
    for db in sets:
        for name, per in models.items():
            m = per.get(db) if isinstance(per, dict) else None
            if not isinstance(m, dict):
                continue
            cells = []
            for k in METRICS:
                cell = _num(m.get(k), digits)
                iv = ci.get(name, {}).get(db, {}).get(k)
                if isinstance(iv, dict):
                    cell += f" [{_num(iv.get('lo'), digits)}, {_num(iv.get('hi'), digits)}]"
                cells.append(cell)
            n = m.get("n")
            rows.append([str(db), str(name), *cells, str(n) if isinstance(n, int) else "–"])
    title = "Primary model per test set"
    if ci:
        ci_level = (report.get("bootstrap") or {}).get("level", 0.95)
        title += f", [{ci_level:.0%} bootstrap interval over test clips]"
    lines += _heading(title, fmt, level)
    lines += _table(["test set", "model", *(HEADERS[k] for k in METRICS), "n"], rows, fmt)

    if stats:
        rows = []
        for db in sets:
            for name, per in stats.items():
                st = per.get(db, {})
                label = f"{name} ({len(seeds.get(name, []))} seeds)"
                rows.append([str(db), label, *(
                    f"{_num(st.get(k, {}).get('mean'), digits)} ± {_num(st.get(k, {}).get('std'), digits)}"
                    for k in METRICS)])
        lines += _heading("Mean ± std over seeds", fmt, level)
        lines += _table(["test set", "model", *(HEADERS[k] for k in METRICS)], rows, fmt)

    change = report.get("relative_change") or {}
    if isinstance(change, dict) and change:
        what = report.get("relative_change_of", "pretrained vs scratch")
        basis = " (of the seed means)" if stats else ""
        lines += _heading(f"Relative change, {what}{basis}: RMSE/MAE as reduction, PCC/SRCC as increase", fmt, level)
        rows = [[str(db), *(_pct((change[db] or {}).get(k)) for k in METRICS)]
                for db in sorted(change, key=lambda n: n == "pooled")]
        lines += _table(["test set", *(HEADERS[k] for k in METRICS)], rows, fmt, names=1)
    return "\n".join(lines).strip("\n") + "\n"
