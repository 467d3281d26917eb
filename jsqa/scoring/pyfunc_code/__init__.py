"""MLflow "models from code" entry files: each sets one :mod:`jsqa.scoring.serving` model and nothing else.

``mlflow.pyfunc.log_model(python_model=<path to one of these>)`` stores the file itself in the
model, so no pickled Python object is ever written to or read from the registry.
"""
