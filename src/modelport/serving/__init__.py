"""What the server does, independent of transport: the dataplane, the catalog, the executor."""
