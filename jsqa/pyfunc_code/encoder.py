"""Models-from-code entry for the served encoder (see jsqa.serving)."""

import mlflow

from jsqa.serving import EncoderPyfunc

mlflow.models.set_model(EncoderPyfunc())
