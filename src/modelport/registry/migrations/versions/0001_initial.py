"""Models and their immutable versions.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_models"),
    )
    op.create_table(
        "versions",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("signature", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("pickle", sa.Boolean, nullable=False),
        sa.Column("trusted_pickle", sa.Boolean, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_versions"),
        sa.ForeignKeyConstraint(["name"], ["models.name"], name="fk_versions_name_models"),
        # One model never holds the same artifact twice; the store reports it as a Conflict.
        sa.UniqueConstraint("name", "digest", name="uq_versions_name_digest"),
    )
    # Blob garbage collection and "which models use this artifact" look digests up.
    op.create_index("ix_versions_digest", "versions", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_versions_digest", table_name="versions")
    op.drop_table("versions")
    op.drop_table("models")
