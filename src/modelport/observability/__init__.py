"""Request telemetry: the observer, metrics, access log and tracing (injected, never global)."""
