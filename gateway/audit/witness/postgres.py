"""``postgresql://...``: heads in a table of a separate database, written through an INSERT-only role.

Why this is a witness and the audit database is not: the gateway's role here may INSERT and SELECT
but not UPDATE, DELETE or TRUNCATE, and the table belongs to another role (the witness database's
owner, ideally another team). Whoever controls the gateway host can add heads but not remove or change
one, so a truncated or rewritten log cannot be made to match what the witness saw.

Set-up, run once by the witness database's owner (:func:`setup_sql` prints it; docs/audit.md)::

    CREATE TABLE audit_witness_heads (
      origin text NOT NULL, size bigint NOT NULL CHECK (size >= 0), root text NOT NULL,
      note text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (origin, size));
    REVOKE ALL ON audit_witness_heads FROM PUBLIC;
    GRANT SELECT, INSERT ON audit_witness_heads TO gateway_witness;

URL options: ``?table=NAME`` (default ``audit_witness_heads``). ``ON CONFLICT DO NOTHING`` needs only
INSERT, so a repeated head is accepted and a different root for a held size is reported as a conflict.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..note import TreeHead
from .base import Witness, WitnessedHead, WitnessError

_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DEFAULT_TABLE = "audit_witness_heads"


def setup_sql(table: str = DEFAULT_TABLE, role: str = "gateway_witness") -> str:
    """The DDL and grants a witness database's owner runs once (the gateway never creates the table)."""
    if not _TABLE.match(table) or not _TABLE.match(role):
        raise ValueError("table and role names must be lower-case SQL identifiers")
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        "  origin text NOT NULL,\n"
        "  size bigint NOT NULL CHECK (size >= 0),\n"
        "  root text NOT NULL,\n"
        "  note text NOT NULL,\n"
        "  received_at timestamptz NOT NULL DEFAULT now(),\n"
        "  PRIMARY KEY (origin, size)\n"
        ");\n"
        f"REVOKE ALL ON {table} FROM PUBLIC;\n"
        f"GRANT SELECT, INSERT ON {table} TO {role};\n"
    )


class PostgresWitness(Witness):
    scheme = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        options = {k: v for k, v in query if k == "table"}
        self.table = options.get("table", DEFAULT_TABLE)
        if not _TABLE.match(self.table):
            from ...errors import ConfigError

            raise ConfigError(f"witness table must match {_TABLE.pattern}, got {self.table!r}")
        rest = [(k, v) for k, v in query if k != "table"]
        self._conninfo = urlunsplit(parts._replace(query=urlencode(rest)))

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise WitnessError(f"cannot connect: {type(exc).__name__}") from None

    def submit(self, head: TreeHead, note: bytes) -> None:
        import psycopg
        from psycopg import sql

        table = sql.Identifier(self.table)
        with self._connect() as conn:
            try:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (origin, size, root, note) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (origin, size) DO NOTHING"
                    ).format(table),
                    (head.origin, head.size, head.root_hex, note.decode()),
                )
                row = conn.execute(
                    sql.SQL("SELECT note FROM {} WHERE origin = %s AND size = %s").format(table),
                    (head.origin, head.size),
                ).fetchone()
            except psycopg.Error as exc:
                raise WitnessError(f"{type(exc).__name__}: {exc.diag.message_primary or exc}") from None
        if row is None:
            raise WitnessError("the head was not stored")
        held = str(row[0]).encode()
        if held != note:
            self.check_same(head, held, self.name)

    def heads(self, origin: str) -> list[WitnessedHead]:
        import psycopg
        from psycopg import sql

        with self._connect() as conn:
            try:
                rows = conn.execute(
                    sql.SQL("SELECT note, received_at FROM {} WHERE origin = %s ORDER BY size").format(
                        sql.Identifier(self.table)
                    ),
                    (origin,),
                ).fetchall()
            except psycopg.Error as exc:
                raise WitnessError(f"{type(exc).__name__}: {exc.diag.message_primary or exc}") from None
        return [
            WitnessedHead.from_note(str(note).encode(), received.strftime("%Y-%m-%dT%H:%M:%SZ"))
            for note, received in rows
        ]
