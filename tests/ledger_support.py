"""Helpers the ledger test files share: a fresh store per test on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def fresh_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new ledger location: a temp SQLite file, or a unique schema on the shared test database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    base: str = request.getfixturevalue("postgres_url")
    schema = f"t_ledger_{uuid.uuid4().hex[:16]}"
    try:
        yield with_schema(base, schema)
    finally:
        drop_schema(base, schema)
