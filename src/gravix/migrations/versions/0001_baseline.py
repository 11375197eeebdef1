"""Baseline: the metadata tables as the releases before migrations made them.

A table that is there already is left as it is (with its rows): a store made
before migrations is taken as this revision. Frozen: never change it; a
change to a table is a new revision.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gravix.migrations import index_to_make, to_make

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # keys.db, tokens.db (its table is named "keys") and PostgreSQL's keys and tokens.
    for logical in ("keys", "tokens"):
        if name := to_make(logical):
            op.create_table(
                name,
                sa.Column("id", sa.Text(), primary_key=True),
                sa.Column("tenant", sa.Text(), nullable=False),
                sa.Column("sha256", sa.LargeBinary(), nullable=False),
                sa.Column("label", sa.Text(), nullable=False, server_default=""),
                sa.Column("created_ms", sa.BigInteger(), nullable=False),
                sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
            )
    if name := to_make("users"):
        op.create_table(
            name,
            sa.Column("name", sa.Text(), primary_key=True),
            sa.Column("tenant", sa.Text(), nullable=False),
            sa.Column("role", sa.Text(), nullable=False),
            sa.Column("password", sa.Text(), nullable=False),
            sa.Column("created_ms", sa.BigInteger(), nullable=False),
            sa.Column("disabled_ms", sa.BigInteger(), nullable=True),
        )
    if name := to_make("sessions"):
        op.create_table(
            name,
            sa.Column("id_sha256", sa.LargeBinary(), primary_key=True),
            sa.Column("user", sa.Text(), nullable=False),
            sa.Column("password_tag", sa.LargeBinary(), nullable=False),
            sa.Column("created_ms", sa.BigInteger(), nullable=False),
            sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        )
    if name := index_to_make("sessions", "sessions_expires"):
        op.create_index("sessions_expires", name, ["expires_ms"])
    if name := to_make("login_attempts"):
        # id: SQLite's rowid, SERIAL in PostgreSQL.
        op.create_table(
            name,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("key", sa.LargeBinary(), nullable=False),
            sa.Column("at_ms", sa.BigInteger(), nullable=False),
        )
    if name := index_to_make("login_attempts", "login_attempts_key"):
        op.create_index("login_attempts_key", name, ["key", "at_ms"])


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: remove the store instead")
