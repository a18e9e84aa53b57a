"""Who may call the server and how the connection is protected: credentials, TLS material."""
