"""Models-from-code entry for the served MOS model (see jsqa.serving)."""

import mlflow

from jsqa.serving import MOSPyfunc

mlflow.models.set_model(MOSPyfunc())
