"""What happens when a model is registered: push, compile, convert, verify, import from MLflow."""
