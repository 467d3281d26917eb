"""The evaluate stage's comparison step: peers scored (through the cache), the report extended,
the plots, the per-predictor and per-condition CSVs (DVC plots) and the HTML page written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from jsqa.errors import ManifestError
from jsqa.evaluation.comparison import add_comparison, metric_rows, predictor_names
from jsqa.evaluation.comparison_plots import condition_scatter, predictor_scatter
from jsqa.evaluation.comparison_report import html_report
from jsqa.evaluation.peer_scoring import PeerCache, score_peers
from jsqa.evaluation.peers import make_peers, output_info
from jsqa.io import atomic_path, write_csv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComparisonFiles:
    """What :func:`write_comparison` wrote, for MLflow and the Prefect artifact."""

    scatter: Path
    metrics_csv: Path
    conditions_csv: Path
    conditions_png: Path
    html: Path

    def extra(self) -> list[Path]:
        """The files besides scatter.png (which the stage logs anyway)."""
        return [self.metrics_csv, self.conditions_csv, self.conditions_png, self.html]


def require_test_split(manifest: pd.DataFrame, source: str) -> None:
    """ManifestError naming the ``split`` column when a user dataset has no test rows."""
    if not (manifest["split"] == "test").any():
        raise ManifestError(
            f"{source}: no test clips: no row has split 'test'. Give the CSV a 'split' column "
            "(train, val or test per row) or name the test dbs *_TEST"
        )


def write_comparison(
    report: dict,
    preds: pd.DataFrame,
    test_rows: pd.DataFrame,
    peers: Sequence[str],
    plots: Path,
    html: Path,
    root: str | Path = ".",
    cache_dir: str | Path | None = None,
) -> ComparisonFiles:
    """Score ``peers`` on ``test_rows`` (cached under ``cache_dir``), extend ``report`` in place
    (:func:`jsqa.evaluation.comparison.add_comparison`), add peer columns to ``preds``, and write
    ``plots/scatter.png`` (one panel per predictor), ``plots/metrics.csv``,
    ``plots/conditions.csv`` (+ ``conditions.png``) and the HTML page ``html``."""
    made = make_peers(peers)
    scores = score_peers(made, test_rows, root, PeerCache(cache_dir) if cache_dir else None) if made else None
    conditions = add_comparison(report, preds, test_rows, scores, output_info(made))
    if scores is not None:
        for out in scores.columns:
            preds[f"pred_{out}"] = scores[out].to_numpy()
    plots = Path(plots)
    files = ComparisonFiles(
        scatter=plots / "scatter.png",
        metrics_csv=plots / "metrics.csv",
        conditions_csv=plots / "conditions.csv",
        conditions_png=plots / "conditions.png",
        html=Path(html),
    )
    predictor_scatter(preds, files.scatter, predictor_names(report))
    write_csv(files.metrics_csv, metric_rows(report))
    write_csv(files.conditions_csv, conditions)
    plots_shown = [("Predicted vs true MOS per file", files.scatter)]
    if condition_scatter(conditions, files.conditions_png):
        plots_shown.append(("Per condition: condition MOS vs mean prediction", files.conditions_png))
    page = html_report(report, plots_shown)
    with atomic_path(files.html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return files
