"""The MLflow model registry: registering versions, moving @champion, provenance tags."""
