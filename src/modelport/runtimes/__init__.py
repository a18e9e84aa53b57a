"""How one model computes: a Runtime loads an artifact and predicts on numpy arrays."""
