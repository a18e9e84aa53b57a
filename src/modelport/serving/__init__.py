"""What the server does, independent of transport: the dataplane, the lifecycle, the catalog."""
