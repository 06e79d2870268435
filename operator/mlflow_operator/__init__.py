"""mlflow-operator: runs MLflow tracking servers on Kubernetes from a TrackingServer resource."""

__version__ = "0.1.0"
