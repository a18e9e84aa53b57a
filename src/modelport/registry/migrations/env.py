"""Alembic environment: runs on the connection that Registry.open hands in, never on its own."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "modelport migrations run through modelport.registry.store.Registry.open, "
        "which passes its own connection"
    )

# render_as_batch lets later migrations alter SQLite tables (which lack ALTER COLUMN).
context.configure(connection=connection, render_as_batch=True)

# Registry.open already holds a write transaction, so Alembic joins it: the whole upgrade
# commits or rolls back as one, and concurrent openers wait for it.
with context.begin_transaction():
    context.run_migrations()
