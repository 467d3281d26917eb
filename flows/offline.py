"""Telemetry off for every tool the pipeline drives: offline by default, and CI must not phone home.

The Makefile exports the same variables (its own copy, as make cannot import this); the flow's
entry point sets them here too, so a run started without make (``python -m flows.pipeline run``)
is just as quiet. A value the user set wins.
"""

from __future__ import annotations

import os

TELEMETRY_OFF: dict[str, str] = {
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def telemetry_off() -> None:
    """Set every variable of :data:`TELEMETRY_OFF` not already set, for this process and its children."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
