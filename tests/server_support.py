"""Helpers for the server tests: the app on a real uvicorn in a thread, keys, and a small policy.

The app runs exactly as ``gateway serve`` runs it (Starlette + uvicorn on a socket bound to a free
loopback port); tests talk to it with the official ``openai`` client and with httpx.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.dashboard.server import bind
from gateway.retry import RetryPolicy
from gateway.server.app import ServerState, create_app
from gateway.server.keys import KeyStore

POLICY = """version: 1
rules:
  - {id: no-boats, kind: blocklist, description: test rule, terms: [boat]}
  - {id: design-day, kind: budget, when: {team: design}, scope: team, period: day, limit_usd: "5.00"}
  - {id: slow-team, kind: rate_limit, when: {team: throttled}, scope: team, requests: 1, per: minute}
  - {id: marketing-alpha-only, kind: route, when: {team: marketing}, allowed_providers: [alpha]}
"""
NO_SLEEP = RetryPolicy(max_attempts=1, base_backoff_s=0, max_backoff_s=0, max_retry_after_s=0, jitter=False)


def settings(home: Path, **extra: Any) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    policy = home / "server-policy.yaml"
    policy.write_text(POLICY)
    fields: dict[str, Any] = {
        "home": home,
        "policies": (policy,),
        "provenance": {"watermark_remote": False, "c2pa_remote": False},
        **extra,
    }
    return Settings(**fields)


@dataclass
class Served:
    base_url: str  # http://127.0.0.1:PORT
    state: ServerState
    server: Any
    clients: list[Any] = field(default_factory=list)  # closed when the server stops

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    @property
    def keys(self) -> KeyStore:
        return self.state.keys


@contextmanager
def serving(s: Settings, graceful_s: float = 5.0, **kwargs: Any) -> Iterator[Served]:
    """The app on uvicorn in a thread; returns once it accepts connections, stops it afterwards."""
    import uvicorn

    app = create_app(s, **kwargs)
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    config.timeout_graceful_shutdown = graceful_s  # type: ignore[assignment]  # uvicorn takes a float
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.started, "server did not start"
    served = Served(f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.gateway_server, srv)
    try:
        yield served
    finally:
        for c in served.clients:
            c.close()
        srv.should_exit = True
        thread.join(timeout=60)
        sock.close()
