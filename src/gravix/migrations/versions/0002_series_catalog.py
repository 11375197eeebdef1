"""The series catalog in the metadata store: table ``series``.

PostgreSQL gets the table. ``catalog.db`` files made by earlier releases have
it already (made by the catalog itself, with its rows): such a file is taken as
the baseline and this revision leaves the table as it is. Frozen: never change
it; a change to a table is a new revision.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gravix.migrations import to_make

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if name := to_make("series"):
        # '' for a fact without env or version; WITHOUT ROWID in SQLite, as before.
        op.create_table(
            name,
            sa.Column("tenant", sa.Text(), primary_key=True),
            sa.Column("service", sa.Text(), primary_key=True),
            sa.Column("method", sa.Text(), primary_key=True),
            sa.Column("path", sa.Text(), primary_key=True),
            sa.Column("env", sa.Text(), primary_key=True),
            sa.Column("version", sa.Text(), primary_key=True),
            sqlite_with_rowid=False,
        )


def downgrade() -> None:
    raise NotImplementedError("migrations are not undone: restore a copy of the store instead")
