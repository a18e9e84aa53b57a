"""Compiled artifacts: a version may hold a converted (e.g. ONNX) copy and its check report.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # All nullable: versions pushed before this revision (and pushes without --compile) have
    # no compiled artifact and no report. Adding nullable columns keeps every existing row.
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("compiled_format", sa.String(64), nullable=True))
        batch.add_column(sa.Column("compiled_digest", sa.String(64), nullable=True))
        batch.add_column(sa.Column("compiled_size", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("compile_report", sa.JSON, nullable=True))
    # Blob garbage collection must see compiled blobs as used, so it looks them up too.
    op.create_index("ix_versions_compiled_digest", "versions", ["compiled_digest"])


def downgrade() -> None:
    op.drop_index("ix_versions_compiled_digest", table_name="versions")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("compile_report")
        batch.drop_column("compiled_size")
        batch.drop_column("compiled_digest")
        batch.drop_column("compiled_format")
