"""What the server records about its work: metrics, access logs, the inference log, drift."""
