"""Cost accounting: pricing from provider cards, budgets, reservations, settlement, reports.

``open_ledger(url)`` picks the store from the URL scheme through a small registry (no if/elif over
engines), and imports the PostgreSQL driver only when a PostgreSQL URL is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from ..errors import ConfigError
from .store import REPORT_DIMENSIONS, BudgetStatus, CounterDrift, Ledger, Reservation

# scheme -> "module:Class", loaded on first use
STORES: dict[str, str] = {
    "sqlite": "gateway.ledger.sqlite:SQLiteLedger",
    "postgresql": "gateway.ledger.postgres:PostgresLedger",
    "postgres": "gateway.ledger.postgres:PostgresLedger",
    "postgresql+psycopg": "gateway.ledger.postgres:PostgresLedger",
}


def open_ledger(url: str) -> Ledger:
    """Open (creating and migrating the schema if needed) the ledger at ``url``.

    ``sqlite:///abs/path.db`` is the embedded default; ``postgresql://user@host/db?schema=name`` serves
    many hosts. See docs/ledger.md for the options each store accepts.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    target = STORES.get(scheme)
    if target is None:
        raise ConfigError(f"unsupported ledger URL scheme {scheme!r}; use one of {sorted(STORES)}")
    module, _, name = target.partition(":")
    try:
        cls: Callable[[str], Ledger] = getattr(import_module(module), name)
    except ImportError as exc:
        raise ConfigError(
            f"the {scheme} ledger needs an optional dependency ({exc.name}):"
            " pip install 'diffusion-gateway[postgres]'"
        ) from None
    return cls(url)


__all__ = [
    "REPORT_DIMENSIONS",
    "STORES",
    "BudgetStatus",
    "CounterDrift",
    "Ledger",
    "Reservation",
    "open_ledger",
]
