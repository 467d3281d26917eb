"""Models-from-code entry for the served MOS model (see jsqa.scoring.serving)."""

import mlflow

from jsqa.scoring.serving import MOSPyfunc

mlflow.models.set_model(MOSPyfunc())
