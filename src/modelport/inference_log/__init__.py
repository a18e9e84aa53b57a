"""The inference log: its records, the journal and writer that keep them, and the stores."""
