"""Ledger schema as an append-only list of migrations (the simonw/llm pattern).

Why append-only: a ledger outlives the code that wrote it, and many processes (or hosts) open it at
once. Each migration has a stable name, runs once, inside the same transaction that records it, and is
never edited after release; a schema change is a new entry at the end. A database that records a
migration this code does not know was written by a newer gateway and is refused loudly.

The SQL is the portable subset SQLite (>= 3.35, for RETURNING) and PostgreSQL (>= 12) share: BIGINT,
TEXT, DOUBLE PRECISION, partial indexes, ``ON CONFLICT``. Money columns are integer micro-dollars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    statements: tuple[str, ...]


TOKEN_COLUMNS = ("input_text_tokens", "input_image_tokens", "output_image_tokens", "output_text_tokens")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "m001_initial",
        (
            # One row per admitted request: a reservation that becomes a settled/released/expired spend.
            """CREATE TABLE ledger_requests (
                request_id TEXT PRIMARY KEY,
                status TEXT NOT NULL,
                ts_us BIGINT NOT NULL,
                expires_us BIGINT NOT NULL,
                settled_us BIGINT,
                team TEXT NOT NULL,
                project TEXT NOT NULL,
                use_case TEXT NOT NULL,
                user_name TEXT NOT NULL,
                route_key TEXT NOT NULL,
                provider TEXT NOT NULL,
                model TEXT NOT NULL,
                images INTEGER NOT NULL DEFAULT 0,
                estimated_micros BIGINT NOT NULL,
                actual_micros BIGINT,
                latency_s DOUBLE PRECISION,
                billed_seconds DOUBLE PRECISION,
                reason TEXT
            )""",
            "CREATE INDEX ledger_requests_ts ON ledger_requests (ts_us)",
            "CREATE INDEX ledger_requests_route ON ledger_requests (route_key, ts_us)",
            "CREATE INDEX ledger_requests_lease ON ledger_requests (expires_us) WHERE status = 'reserved'",
            # Running totals per (period window, scope): what a reservation locks and checks.
            """CREATE TABLE ledger_counters (
                period TEXT NOT NULL,
                window_start BIGINT NOT NULL,
                scope TEXT NOT NULL,
                scope_value TEXT NOT NULL,
                spent_micros BIGINT NOT NULL DEFAULT 0,
                reserved_micros BIGINT NOT NULL DEFAULT 0,
                requests BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (period, window_start, scope, scope_value)
            )""",
            # Budgets as last enforced, so `gateway report` shows spend vs budget without the policy.
            """CREATE TABLE ledger_budgets (
                id TEXT PRIMARY KEY,
                scope TEXT NOT NULL,
                scope_value TEXT NOT NULL,
                period TEXT NOT NULL,
                limit_micros BIGINT NOT NULL,
                warn_at DOUBLE PRECISION NOT NULL,
                updated_us BIGINT NOT NULL
            )""",
            # Requests refused by a budget or rate limit (they never reached a backend).
            """CREATE TABLE ledger_refusals (
                request_id TEXT NOT NULL,
                ts_us BIGINT NOT NULL,
                team TEXT NOT NULL,
                project TEXT NOT NULL,
                use_case TEXT NOT NULL,
                user_name TEXT NOT NULL,
                route_key TEXT NOT NULL,
                provider TEXT NOT NULL,
                model TEXT NOT NULL,
                amount_micros BIGINT NOT NULL,
                kind TEXT NOT NULL,
                limit_ids TEXT NOT NULL
            )""",
            "CREATE INDEX ledger_refusals_ts ON ledger_refusals (ts_us)",
        ),
    ),
    # Idempotency keys, claimed with the first reservation (see gateway/ledger/idempotency.py).
    Migration(
        "m002_idempotency_keys",
        (
            """CREATE TABLE ledger_idempotency (
                team TEXT NOT NULL,
                idem_key TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                request_id TEXT NOT NULL,
                status TEXT NOT NULL,
                created_us BIGINT NOT NULL,
                lease_us BIGINT NOT NULL,
                expires_us BIGINT NOT NULL,
                replays BIGINT NOT NULL DEFAULT 0,
                result TEXT,
                PRIMARY KEY (team, idem_key)
            )""",
            "CREATE INDEX ledger_idempotency_expires ON ledger_idempotency (expires_us)",
        ),
    ),
    # Token-priced routes (OpenAI GPT-image, Gemini): the provider's counts next to the dollars, so
    # finance can re-price a month from the ledger alone. NULL = the provider reported none.
    Migration(
        "m003_token_counts",
        tuple(f"ALTER TABLE ledger_requests ADD COLUMN {col} BIGINT" for col in TOKEN_COLUMNS),
    ),
)


CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS ledger_migrations (name TEXT PRIMARY KEY, applied_us BIGINT NOT NULL)"
)


def migrate(q: Query, now_us: int, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply pending migrations in order; return their names. Run inside one write transaction."""
    q(CREATE_MIGRATIONS_TABLE, ())
    applied = {str(r[0]) for r in q("SELECT name FROM ledger_migrations", ())}
    known = {m.name for m in migrations}
    unknown = sorted(applied - known)
    if unknown:
        raise ConfigError(
            f"ledger schema was written by a newer gateway (unknown migrations {unknown}); upgrade this one"
        )
    done: list[str] = []
    for m in migrations:
        if m.name in applied:
            continue
        for statement in m.statements:
            q(statement, ())
        q("INSERT INTO ledger_migrations (name, applied_us) VALUES (?, ?)", (m.name, now_us))
        done.append(m.name)
    return done
