"""Models-from-code entry for the served encoder (see jsqa.scoring.serving)."""

import mlflow

from jsqa.scoring.serving import EncoderPyfunc

mlflow.models.set_model(EncoderPyfunc())
