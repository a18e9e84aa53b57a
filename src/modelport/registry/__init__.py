"""Which models exist: immutable versions, their artifacts and their provenance."""
