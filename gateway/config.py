"""Settings: ``gateway.yaml`` plus environment -> one typed, frozen object.

With no file at all the gateway runs on the embedded default: the local tiny-digits model, the shipped
default policy pack, and SQLite ledger and audit under ``$GATEWAY_HOME`` (default ``./.gateway``).
Relative paths in a config file are resolved against the file's folder, so a config is portable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._yaml import load_model
from .archive.settings import ArchiveSettings, CacheSettings, IdempotencySettings
from .catalog import default_data_dir

_STRICT = ConfigDict(extra="forbid", frozen=True)
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def default_home() -> Path:
    """``$GATEWAY_HOME`` or ``./.gateway`` (absolute)."""
    return Path(os.environ.get("GATEWAY_HOME") or ".gateway").expanduser().resolve()


class RoutingSettings(BaseModel):
    model_config = _STRICT
    strategy: Literal["cheapest", "fastest", "priority", "weighted", "cheapest_meeting_quality"] = "cheapest"
    priority: tuple[str, ...] = ()
    weights: dict[str, float] = Field(default_factory=lambda: {"cost": 0.5, "latency": 0.5})
    max_routes: int = Field(default=3, ge=1, description="Routes tried per request (first + fallbacks).")
    breaker_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)


class RetrySettings(BaseModel):
    model_config = _STRICT
    max_attempts: int = Field(default=3, ge=1, le=10)
    max_retry_after_s: float = Field(default=30.0, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=8.0, ge=0)


class Settings(BaseModel):
    """Everything configurable. Each backend/provenance/audit section is handed to its owner as-is."""

    model_config = _STRICT

    home: Path = Field(default_factory=default_home)
    policies: tuple[Path, ...] = ()  # empty = the shipped default pack
    providers: tuple[Path, ...] = ()  # empty = the shipped provider cards
    ledger_url: str | None = None  # None = sqlite under home
    audit_url: str | None = None  # None = sqlite under home
    timeout_s: float = Field(default=120.0, gt=0)
    routing: RoutingSettings = RoutingSettings()
    retry: RetrySettings = RetrySettings()
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    telemetry: dict[str, Any] = Field(default_factory=dict)
    # Audit evidence beyond the host (docs/audit.md "Witnesses" and "Threat model").
    audit_witnesses: tuple[str, ...] = ()  # postgresql://, s3://, tsa+https://, dir:// (dev only)
    audit_witness_quorum: int | None = Field(default=None, ge=0)  # None = every witness
    audit_witness_best_effort: bool = False  # True: a missed quorum is recorded and retried, not raised
    audit_signing_key: str | None = None  # Ed25519 PEM path outside the home, or kms:KEY-ID
    audit_trusted_keys: tuple[str, ...] = ()  # pinned checkpoint keys: 16-hex key ids or *.pub paths
    audit_origin: str | None = None  # the log's name in its checkpoint notes
    archive: ArchiveSettings = ArchiveSettings()  # output archive (docs/archive.md)
    cache: CacheSettings = CacheSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    server: dict[str, Any] = Field(default_factory=dict)  # `gateway serve` (gateway.server.wire)

    @property
    def resolved_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{self.home / 'ledger.db'}"

    @property
    def resolved_audit_url(self) -> str:
        return self.audit_url or f"sqlite:///{self.home / 'audit.db'}"

    @property
    def policy_paths(self) -> tuple[Path, ...]:
        return self.policies or (default_data_dir("policies") / "default.yaml",)

    @property
    def provider_paths(self) -> tuple[Path, ...]:
        return self.providers or (default_data_dir("providers"),)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Read ``path`` (if any), resolve relative paths against its folder, apply overrides."""
        if path is None:
            settings = cls()
        else:
            p = Path(path)
            settings = load_model(cls, p)
            settings = settings._relative_to(p.resolve().parent)
        clean = {k: v for k, v in overrides.items() if v is not None}
        return settings._with_overrides(clean) if clean else settings

    def _with_overrides(self, clean: dict[str, Any]) -> Settings:
        """Apply keyword overrides through validation, exactly like values read from a file.

        ``model_copy(update=...)`` would skip validation and keep a ``str`` where a ``Path`` belongs.
        """
        from pydantic import ValidationError

        from .errors import ConfigError

        data = {k: getattr(self, k) for k in type(self).model_fields}
        try:
            return type(self).model_validate({**data, **clean})
        except ValidationError as exc:
            errs = exc.errors(include_url=False)
            msgs = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in errs[:5]]
            raise ConfigError("invalid setting override: " + "; ".join(msgs)) from None

    def _relative_to(self, base: Path) -> Settings:
        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        update: dict[str, Any] = {
            "policies": tuple(fix(p) for p in self.policies),
            "providers": tuple(fix(p) for p in self.providers),
        }
        if "home" in self.model_fields_set:
            update["home"] = fix(self.home)
        key = self.audit_signing_key
        if key and not key.startswith("kms:"):
            update["audit_signing_key"] = str(fix(Path(key).expanduser()))
        update["audit_trusted_keys"] = tuple(
            k if _KEY_ID.match(k) else str(fix(Path(k).expanduser())) for k in self.audit_trusted_keys
        )
        return self.model_copy(update=update)

    def backend_options(self, name: str) -> Mapping[str, Any]:
        return self.backends.get(name, {})
