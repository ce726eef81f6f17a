"""Shared test setup: offline, isolated state, and the PostgreSQL URL.

Every test gets its own GATEWAY_HOME so nothing touches ./.gateway; hubs are forced offline so no
test can download weights; AWS_BEARER_TOKEN_BEDROCK is removed because it switches boto3 to Bearer auth.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("AWS_BEARER_TOKEN_BEDROCK", None)

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "gateway-home"
    monkeypatch.setenv("GATEWAY_HOME", str(home))
    return home


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The real server's URL; in CI (CI=true) its absence is a failure, elsewhere a loud skip."""
    if not postgres_available():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {POSTGRES_URL}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} (set GATEWAY_TEST_POSTGRES_URL)")
    return POSTGRES_URL


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The gateway's JSON log lines, captured at DEBUG; logging is put back as it was afterwards."""
    import logging

    import structlog

    from gateway.audit import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    yield stream
    structlog.reset_defaults()
    logger = logging.getLogger("gateway")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
