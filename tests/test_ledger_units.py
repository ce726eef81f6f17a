"""Pure parts of the ledger: UTC windows, scope matching, URLs, the migration list, lazy imports."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BudgetExceeded, ConfigError, RateLimitExceeded
from gateway.ledger import open_ledger
from gateway.ledger.migrations import MIGRATIONS
from gateway.ledger.postgres import parse_postgres_url, redact
from gateway.ledger.sqlite import parse_sqlite_url
from gateway.ledger.store import (
    PERIODS,
    Usage,
    check,
    from_us,
    scope_matches,
    to_us,
    window_end_us,
    window_start_us,
)
from gateway.types import Budget, RateLimit

instants = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2199, 12, 31), timezones=st.just(dt.UTC)
)


@given(instants, st.sampled_from(PERIODS))
def test_every_instant_lies_in_exactly_one_window(ts: dt.datetime, period: str) -> None:
    us = to_us(ts)
    start = window_start_us(period, us)
    end = window_end_us(period, start)
    assert start <= us
    assert end is None or us < end
    assert window_start_us(period, start) == start  # a window's start is in that window
    if end is not None:
        assert window_start_us(period, end) == end  # and the next window starts where it ends


@given(instants)
def test_calendar_windows_match_the_calendar(ts: dt.datetime) -> None:
    us = to_us(ts)
    day = from_us(window_start_us("day", us))
    assert day == ts.replace(hour=0, minute=0, second=0, microsecond=0)
    week = from_us(window_start_us("week", us))
    assert week.weekday() == 0
    assert week == day - dt.timedelta(days=ts.weekday())
    assert from_us(window_start_us("month", us)) == day.replace(day=1)
    assert window_start_us("total", us) == 0
    assert from_us(us) == ts


def test_month_windows_cross_year_ends() -> None:
    start = to_us(dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    assert from_us(window_end_us("month", start) or 0) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        to_us(dt.datetime(2026, 1, 1))


def test_other_time_zones_are_converted_to_utc() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert to_us(dt.datetime(2026, 1, 1, 0, 30, tzinfo=cet)) == to_us(
        dt.datetime(2025, 12, 31, 23, 30, tzinfo=dt.UTC)
    )


def test_scope_matching() -> None:
    ctx = {"team": "eng-ml", "project": "atlas", "use_case": "ads", "user": "ada"}
    assert scope_matches("org", "anything", ctx)
    assert scope_matches("team", "eng-*", ctx)
    assert not scope_matches("team", "eng", ctx)
    assert scope_matches("user", "ada", ctx)


def test_check_names_every_refusing_limit_and_a_retry_time() -> None:
    b = Budget(id="b", scope="org", scope_value="*", period="day", limit_usd=Decimal("1"))
    rl = RateLimit(id="r", scope="org", scope_value="*", requests=1, per="minute")
    now = to_us(dt.datetime(2026, 1, 1, 0, 0, 20, tzinfo=dt.UTC))
    usage = {("day", window_start_us("day", now), "org", "*"): Usage(spent=900_000, requests=1),
             ("minute", window_start_us("minute", now), "org", "*"): Usage(requests=1)}  # fmt: skip
    reasons, refused, retry, warned = check([b], [rl], usage, 100_001, now)
    assert refused == ["b", "r"]
    assert len(reasons) == 2
    assert retry == 40.0
    assert warned == []
    assert check([b], [], usage, 100_000, now)[3] == ["b"]  # exactly at the limit: allowed, warned


def test_error_types() -> None:
    assert issubclass(RateLimitExceeded, BudgetExceeded)
    assert RateLimitExceeded("x", budget_ids=["r"], retry_after=3.0).exit_code == 4


# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///var/gw/l.db", "/var/gw/l.db"), ("sqlite:////var/gw/l.db", "/var/gw/l.db"),
     ("sqlite:///var/gw/l.db?synchronous=full", "/var/gw/l.db")],
)  # fmt: skip
def test_sqlite_urls(url: str, path: str) -> None:
    assert parse_sqlite_url(url)[0] == Path(path)


def test_sqlite_relative_url_and_the_config_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import Settings

    monkeypatch.chdir(tmp_path)
    assert parse_sqlite_url("sqlite:data/l.db")[0] == tmp_path / "data" / "l.db"
    home = tmp_path / "home"
    monkeypatch.setenv("GATEWAY_HOME", str(home))
    assert parse_sqlite_url(Settings().resolved_ledger_url)[0] == home / "ledger.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [("sqlite://host/x.db", "has a host"), ("sqlite:", "without a path"),
     ("sqlite:///x.db?cache=1", "unknown"), ("sqlite:///x.db?synchronous=off", "synchronous must be")],
)  # fmt: skip
def test_bad_sqlite_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_sqlite_url(url)


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="unsupported ledger URL scheme 'mysql'"):
        open_ledger("mysql://x/y")


def test_postgres_url_options_are_ours_and_the_rest_is_libpq() -> None:
    conninfo, schema, size = parse_postgres_url(
        "postgresql://u:pw@h:5433/db?sslmode=require&schema=gw&pool_size=8"
    )
    assert (schema, size) == ("gw", 8)
    assert conninfo == "postgresql://u:pw@h:5433/db?sslmode=require&connect_timeout=10"
    assert parse_postgres_url("postgres://h/db")[1:] == ("public", 4)
    # libpq decodes %XX but not "+": options with spaces must survive the round trip
    opts = parse_postgres_url("postgresql://h/db?options=-c%20synchronous_commit%3Doff")[0]
    assert "options=-c%20synchronous_commit%3Doff" in opts
    with pytest.raises(ConfigError, match="schema"):
        parse_postgres_url("postgresql://h/db?schema=Robert'); DROP")
    with pytest.raises(ConfigError, match="pool_size"):
        parse_postgres_url("postgresql://h/db?pool_size=0")
    assert redact("postgresql://u:s3cret@h/db") == "postgresql://u:***@h/db"


# ------------------------------------------------------------------ migrations

# Released migrations are frozen: editing one changes its digest and fails here. Append a new one.
RELEASED = {"m001_initial": "d070509e", "m002_idempotency_keys": "3c9ec12e"}


def test_migrations_are_append_only() -> None:
    names = [m.name for m in MIGRATIONS]
    assert names == sorted(set(names)), "migration names must be unique and in order"
    for m in MIGRATIONS:
        if m.name in RELEASED:
            digest = hashlib.sha256("\n".join(m.statements).encode()).hexdigest()[:8]
            assert digest == RELEASED[m.name], f"released migration {m.name} was edited"
    assert list(RELEASED) == names[: len(RELEASED)]


def test_import_gateway_ledger_does_not_import_the_postgres_driver() -> None:
    code = "import sys, gateway.ledger, gateway.ledger.sqlite; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
