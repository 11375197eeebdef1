"""Alembic's environment for the metadata store.

Run by :func:`gravix.migrations.prepare` only (``gravix db upgrade``, first
use): the connection, already in the caller's transaction, and the tables of
the database come in ``config.attributes``. The ``alembic`` command is not
used; there is no ``alembic.ini``.
"""

from __future__ import annotations

from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
