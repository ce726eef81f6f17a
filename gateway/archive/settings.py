"""The ``archive:``, ``cache:`` and ``idempotency:`` sections of gateway.yaml.

Kept beside the archive (not in config.py) so the settings and the code that reads them change
together; :class:`gateway.config.Settings` only embeds them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", frozen=True)


class ArchiveSettings(BaseModel):
    """``url``: ``file:///abs/dir`` or ``s3://bucket/prefix``; None = ``$GATEWAY_HOME/archive``;
    ``off`` only where a policy rule of kind ``archive`` allows it."""

    model_config = _STRICT
    url: str | None = None
    retention_days: float | None = Field(default=None, gt=0, description="None: keep forever.")
    store_inputs: bool = True
    s3: dict[str, Any] = Field(default_factory=dict, description="region, endpoint_url, sse, object_lock")


class CacheSettings(BaseModel):
    """Result cache: off unless enabled here or by a policy rule of kind ``cache``."""

    model_config = _STRICT
    enabled: bool = False
    ttl_s: float = Field(default=86_400.0, gt=0)


class IdempotencySettings(BaseModel):
    model_config = _STRICT
    ttl_s: float = Field(default=86_400.0, gt=0, description="How long a key is remembered (24 h).")
    wait_s: float = Field(default=600.0, ge=0, description="How long a repeat waits for the first call.")
    poll_s: float = Field(default=0.05, gt=0)
    lease_s: float = Field(
        default=900.0, gt=0, description="How long a claim binds a key if its claimer dies mid-request."
    )
