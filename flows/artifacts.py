"""Prefect artifacts of a pipeline run besides the metrics table: a link to the MLflow run that
registered the models, and the predicted-vs-true scatter plot.

The plot goes into a markdown artifact as a ``data:`` URI rather than an image artifact: Prefect
image artifacts hold only a URL, and the one URL we have (MLflow's artifact endpoint) works only
while an MLflow server is up, whereas the embedded PNG renders in the UI on its own (the UI's
markdown renderer, prefect 3.8.8, turns an image into ``<img src=...>`` with no URL filtering).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact

LINK_KEY = "jsqa-mlflow-run"
PLOT_KEY = "jsqa-scatter"
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"  # where `make ui-mlflow` serves
# Bigger plots are linked by path instead: the artifact lives in Prefect's database.
MAX_EMBED_BYTES = 2 * 1024 * 1024


def mlflow_ui_base(explicit: str | None = None) -> str:
    """The MLflow UI address: ``explicit``, else an http(s) MLFLOW_TRACKING_URI, else the local UI."""
    if explicit:
        return explicit.rstrip("/")
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    return env.rstrip("/") if env.startswith(("http://", "https://")) else DEFAULT_MLFLOW_UI


def mlflow_run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run, in the UI's Model training view (:data:`jsqa.tracking.UI_VIEW_QUERY`)."""
    from jsqa.tracking import UI_VIEW_QUERY  # here: jsqa.tracking loads MLflow, which the other artifacts never need

    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{UI_VIEW_QUERY}"


def publish_mlflow_link(project_dir: str | Path, ui_base: str | None = None) -> str | None:
    """Link artifact to the register run named in metrics/register.json; returns the URL or None."""
    path = Path(project_dir) / "metrics" / "register.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or not (doc.get("run_id") and doc.get("experiment_id")):
        return None
    run_id, experiment_id = doc["run_id"], doc["experiment_id"]
    url = mlflow_run_url(mlflow_ui_base(ui_base), str(experiment_id), str(run_id))
    version = doc.get("mos_version")
    text = f"MLflow register run ({doc.get('mos_model', 'model')} v{version})" if version else "MLflow register run"
    create_link_artifact(link=url, link_text=text, key=LINK_KEY, description="MLflow run that registered the models")
    return url


def scatter_markdown(png: Path) -> str:
    """Markdown showing ``png`` inline (data: URI), or naming its path when it is too big to embed."""
    data = png.read_bytes()
    if len(data) > MAX_EMBED_BYTES:
        return f"# Predicted vs true MOS\n\n`{png}` ({len(data)} bytes, too big to embed)\n"
    encoded = base64.b64encode(data).decode("ascii")
    return f"# Predicted vs true MOS\n\n![predicted vs true MOS](data:image/png;base64,{encoded})\n"


def publish_scatter(project_dir: str | Path) -> bool:
    """Markdown artifact with plots/scatter.png; False when there is no plot."""
    png = Path(project_dir) / "plots" / "scatter.png"
    if not png.is_file():
        return False
    create_markdown_artifact(markdown=scatter_markdown(png), key=PLOT_KEY, description="evaluate: scatter plot")
    return True
