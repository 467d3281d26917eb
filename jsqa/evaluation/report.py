"""The evaluation table, rendered once for both readers: plain text (CLI) and markdown (Prefect).

Reads the ``metrics/evaluate.json`` layout of :func:`jsqa.evaluation.evaluate.evaluate_models`; older
reports without seeds or intervals render their primary figures only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jsqa.evaluation.collapse import failure_summary
from jsqa.evaluation.metrics import METRICS
from jsqa.evaluation.paired import format_p

HEADERS = {"rmse": "RMSE", "mae": "MAE", "pcc": "PCC", "srcc": "SRCC"}
FORMATS = ("text", "markdown")


def format_num(value: Any, digits: int) -> str:
    """``value`` with ``digits`` decimals; "–" for anything not a number."""
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


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str, names: int = 2) -> list[str]:
    """A table's lines in ``fmt`` ('text' or 'markdown'); the first ``names`` columns are names."""
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


def heading_lines(title: str, fmt: str, level: int) -> list[str]:
    """A table's title lines in ``fmt`` (a markdown heading of ``level``)."""
    return ["", f"{'#' * level} {title}", ""] if fmt == "markdown" else ["", title]


def evaluation_tables(report: dict, fmt: str = "text", level: int = 2) -> str:
    """The evaluation report as tables: primary model (with 95% bootstrap interval), mean ± std
    over seeds, and the relative change against the baseline. ``fmt``: 'text' or 'markdown'
    (titles as headings of ``level``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format '{fmt}' (choose {', '.join(FORMATS)})")
    digits = 4 if fmt == "markdown" else 3
    sets = _test_sets(report.get("models") or {})
    lines = _primary_table(report, sets, fmt, level, digits)
    lines += _seed_table(report, sets, fmt, level, digits)
    lines += _output_tables(report, fmt, level, digits)
    lines += _comparison(report, "Paired difference", fmt, level, digits)
    budget = report.get("equal_compute")
    if isinstance(budget, dict) and budget.get("paired"):
        lines += _comparison(budget, f"At equal compute ({budget.get('epochs')} epochs each)", fmt, level, digits)
    elif isinstance(budget, dict) and budget.get("verdict"):
        lines += heading_lines(f"At equal compute ({budget.get('epochs')} epochs each)", fmt, level)
        lines += [str(v) for v in budget["verdict"]]
    if "paired" not in report:
        lines += _legacy_change(report, fmt, level, report.get("seed_stats") or {})
    failed = report.get("failed") or {}
    if not report.get("verdict") and any(failed.values()):
        lines += heading_lines("Failed runs", fmt, level)
        lines += failure_summary(failed, report.get("seeds") or {}, report.get("health"))
    if isinstance(report.get("jnd"), dict):
        lines += heading_lines("Perceptual distance", fmt, level)
        lines += [jnd_line(report["jnd"]), ""]
    return "\n".join(lines).strip("\n") + "\n"


def _primary_table(report: dict, sets: list[str], fmt: str, level: int, digits: int) -> list[str]:
    """The primary model's metrics per test set, each with its bootstrap interval when there is one."""
    models = report.get("models") or {}
    ci = report.get("ci95") or {}
    rows = []
    for db in sets:
        for name, per in models.items():
            m = per.get(db) if isinstance(per, dict) else None
            if not isinstance(m, dict):
                continue
            cells = []
            for k in METRICS:
                cell = format_num(m.get(k), digits)
                iv = ci.get(name, {}).get(db, {}).get(k)
                if isinstance(iv, dict):
                    cell += f" [{format_num(iv.get('lo'), digits)}, {format_num(iv.get('hi'), digits)}]"
                cells.append(cell)
            n = m.get("n")
            rows.append([str(db), str(name), *cells, str(n) if isinstance(n, int) else "–"])
    title = "Primary model per test set"
    if ci:
        ci_level = (report.get("bootstrap") or {}).get("level", 0.95)
        title += f", [{ci_level:.0%} bootstrap interval over test clips]"
    return [
        *heading_lines(title, fmt, level),
        *table_lines(["test set", "model", *(HEADERS[k] for k in METRICS), "n"], rows, fmt),
    ]


def _seed_table(report: dict, sets: list[str], fmt: str, level: int, digits: int) -> list[str]:
    """Mean ± std over the seeds of each model (none without seed statistics)."""
    stats = report.get("seed_stats") or {}
    if not stats:
        return []
    failed = report.get("failed") or {}
    seeds = report.get("seeds") or {}
    rows = []
    for db in sets:
        for name, per in stats.items():
            st = per.get(db, {})
            n_failed, total = len(failed.get(name, [])), len(seeds.get(name, []))
            if n_failed and n_failed >= total:  # statistics over all runs, all of which failed
                label = f"{name} ({total} seeds, all failed)"
            else:
                label = f"{name} ({total - n_failed} seeds" + (f", {n_failed} failed)" if n_failed else ")")
            rows.append(
                [
                    str(db),
                    label,
                    *(
                        f"{format_num(st.get(k, {}).get('mean'), digits)} ± {format_num(st.get(k, {}).get('std'), digits)}"
                        for k in METRICS
                    ),
                ]
            )
    return [
        *heading_lines("Mean ± std over seeds (runs that learned)", fmt, level),
        *table_lines(["test set", "model", *(HEADERS[k] for k in METRICS)], rows, fmt),
    ]


def jnd_line(jnd: dict) -> str:
    """One line: same/different accuracy on held-out JND pairs (metrics/jnd.json, the calibrate
    stage's), against the majority rule."""

    def num(v: object) -> str:
        return "n/a" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]

    if jnd.get("available") is False:
        return f"Held-out JND pairs: same/different accuracy: not available ({jnd.get('reason')})"
    return (
        f"Held-out JND pairs (n={jnd.get('n_report')}): same/different accuracy "
        f"{num(jnd.get('accuracy'))} (majority rule {num(jnd.get('majority_accuracy'))}), "
        f"ROC AUC {num(jnd.get('roc_auc'))}"
    )


def _output_tables(report: dict, fmt: str, level: int, digits: int) -> list[str]:
    """Calibration of the predicted mos_std and the quality-dimension metrics, when the report has them."""
    lines: list[str] = []
    cal = report.get("calibration") or {}
    rows = [
        [
            str(db),
            str(name),
            *(format_num(c.get(k), digits) for k in ("coverage68", "coverage95", "mean_sigma")),
            str(c.get("n", "–")),
        ]
        for name, per in cal.items()
        for db, c in sorted(per.items(), key=lambda kv: kv[0] == "pooled")
    ]
    if rows:
        lines += heading_lines(
            "Calibration: share of files within the predicted 68% / 95% intervals "
            "(nominal 0.68 / 0.95), mean predicted std",
            fmt,
            level,
        )
        lines += table_lines(["test set", "model", "68%", "95%", "mean std", "n"], rows, fmt)
    dims = report.get("dimensions") or {}
    rows = [
        [str(dim), str(db), str(name), *(format_num(m.get(k), digits) for k in METRICS), str(m.get("n", "–"))]
        for name, per_dim in dims.items()
        for dim, per in per_dim.items()
        for db, m in sorted(per.items(), key=lambda kv: kv[0] == "pooled")
    ]
    if rows:
        lines += heading_lines("Quality dimensions (primary model)", fmt, level)
        lines += table_lines(
            ["dimension", "test set", "model", *(HEADERS[k] for k in METRICS), "n"], rows, fmt, names=3
        )
    return lines


def _comparison(report: dict, title: str, fmt: str, level: int, digits: int) -> list[str]:
    """Paired differences with intervals and p-values, then the verdict and failed-run lines."""
    paired = report.get("paired") or {}
    lines: list[str] = []
    if isinstance(paired, dict) and paired:
        what = report.get("paired_of", "pretrained vs scratch")
        some = next(iter(paired.values()))
        lines += heading_lines(
            f"{title}, {what}: difference [95% CI], signed % change, p "
            f"(paired bootstrap over {len(some.get('seeds', []))} seeds and the clips)",
            fmt,
            level,
        )
        rows = []
        for db in sorted(paired, key=lambda n: n == "pooled"):
            r = paired[db]
            cells = []
            for k in METRICS:
                m = r.get(k) or {}
                cells.append(
                    f"{format_num(m.get('diff'), digits)} [{format_num(m.get('lo'), digits)}, {format_num(m.get('hi'), digits)}]"
                    f" {_pct(m.get('rel'))} {format_p(m.get('p'), r.get('resamples', 1000))}"
                )
            rows.append([str(db), *cells])
        lines += table_lines(["test set", *(HEADERS[k] for k in METRICS)], rows, fmt, names=1)
    verdicts = report.get("verdict") or []
    if verdicts:
        lines += heading_lines("Verdict", fmt, level + 1 if fmt == "markdown" else level)
        lines += [f"- {v}" if fmt == "markdown" else v for v in verdicts]
    return lines


def _legacy_change(report: dict, fmt: str, level: int, stats: dict) -> list[str]:
    """Reports written before paired statistics: the relative change table as it was."""
    change = report.get("relative_change") or {}
    if not (isinstance(change, dict) and change):
        return []
    what = report.get("relative_change_of", "pretrained vs scratch")
    basis = " (of the seed means)" if stats else ""
    lines = heading_lines(f"Relative change, {what}{basis}", fmt, level)
    rows = [
        [str(db), *(_pct((change[db] or {}).get(k)) for k in METRICS)]
        for db in sorted(change, key=lambda n: n == "pooled")
    ]
    return lines + table_lines(["test set", *(HEADERS[k] for k in METRICS)], rows, fmt, names=1)
