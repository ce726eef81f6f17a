"""Helpers the archive / idempotency / cache tests share: a one-route catalogue and a counting backend."""

from __future__ import annotations

import time
from typing import Any

from gateway import Gateway, MockBackend
from gateway.backends.base import BackendCall
from gateway.backends.mock import solid_png
from gateway.catalog import Catalog, ModelCard, ProviderCard
from gateway.config import Settings
from gateway.retry import RetryPolicy

SRC = {"source": "test", "as_of": "2026-11-01"}
NO_SLEEP = RetryPolicy(max_attempts=1, base_backoff_s=0, max_backoff_s=0, max_retry_after_s=30, jitter=False)


def model(mid: str = "m", usd: str = "0.01") -> ModelCard:
    return ModelCard.model_validate({
        "id": mid, "name": mid, "regions": ["us-east-1"],
        "licence": {"name": "Apache-2.0", "commercial_use": True, **SRC},
        "indemnity": {"level": "none", **SRC}, "training_data": {"disclosed": True, **SRC},
        "provenance": SRC, "moderation": {"provider_side": False, **SRC},
        "pricing": {"unit": "image", "per_image": [{"usd": usd}], **SRC},
        "capabilities": {"max_images": 4, "min_side": 64, "max_side": 1024},
        "defaults": {"width": 256, "height": 256},
    })  # fmt: skip


def catalog(provider: str = "a", usd: str = "0.01") -> Catalog:
    return Catalog([ProviderCard(provider=provider, name=provider, models=(model("m", usd),))])


class Counting:
    """A MockBackend function that counts calls, optionally sleeps and fails its first ``fail`` calls."""

    def __init__(self, delay_s: float = 0.0, fail: int = 0, exc: Exception | None = None) -> None:
        self.calls, self.delay_s, self.fail, self.exc = 0, delay_s, fail, exc

    def __call__(self, call: BackendCall) -> list[bytes]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.exc is not None and self.calls <= self.fail:
            raise self.exc
        r = call.request
        # Pixels depend on the seed, as a real model's would.
        side = (r.width or 256, r.height or 256)
        return [solid_png(*side, (int(r.seed or 0) + i) % 200 + 20) for i in range(r.n)]


def make(settings: Settings, fn: Any = None, **kw: Any) -> Gateway:
    fn = fn if fn is not None else Counting()
    return Gateway(settings, catalog=kw.pop("cat", catalog()), backends={"a": MockBackend(fn)},
                   retry=NO_SLEEP, sleep=kw.pop("sleep", lambda _s: None), **kw)  # fmt: skip


def ledger_rows(gw: Gateway) -> list[tuple[Any, ...]]:
    """(request_id, status, actual_micros) of every ledger request row."""
    ledger: Any = gw._core.ledger
    sql = "SELECT request_id, status, actual_micros FROM ledger_requests ORDER BY ts_us"
    return list(ledger._read(lambda q: q(sql, ())))


def with_archive(settings: Settings, **fields: Any) -> Settings:
    """``settings`` with ``archive.<field>`` replaced (e.g. ``url=...``, ``retention_days=...``)."""
    return settings.model_copy(update={"archive": settings.archive.model_copy(update=fields)})
