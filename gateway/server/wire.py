"""OpenAI's images wire format <-> the gateway's request, context and result.

Reading is lenient where OpenAI's API is (unknown fields are accepted and ignored, so clients that
send ``background`` or ``moderation`` keep working) and strict where a silent correction would
mislead (a malformed ``size``, ``response_format=url``, a model nobody configured). The ``model`` field
names a route key (``local/tiny-digits``), a model id (``tiny-digits``), a use case the key may use,
or an alias from the ``server.aliases`` section of the config; ``auto`` or no model lets routing
choose.
"""

from __future__ import annotations

import base64
import inspect
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..types import ImageRequest
from .errors import BadRequest, KeyNotAllowed
from .keys import ApiKey

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..types import Context, GenerationResult

_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_AUTO = frozenset({"", "auto", "default"})


class ServerSettings(BaseModel):
    """The ``server:`` section of gateway.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    aliases: dict[str, str] = Field(default_factory=dict, description="model name -> use case")
    key_cache_s: float = Field(default=2.0, ge=0)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)


class ImagesBody(BaseModel):
    """The fields of /v1/images/generations (and the form fields of /edits) the gateway reads."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    user: str | None = Field(default=None, max_length=256)
    response_format: str | None = None
    # Gateway extensions (send them with the client's ``extra_body``):
    seed: int | None = None
    negative_prompt: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    # Edits only:
    strength: float | None = None
    mode: str | None = None


def parse_body(data: Mapping[str, Any]) -> ImagesBody:
    try:
        return ImagesBody.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequest(f"invalid {param or 'body'}: {err['msg']}", param=param) from None


def _supports(field: str) -> bool:
    return field in ImageRequest.model_fields


def accepts_keyword(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes ``name`` as an explicit keyword (not just through ``**options``)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def resolve(
    body: ImagesBody, key: ApiKey, catalog: Catalog, aliases: Mapping[str, str], *, edit: bool = False
) -> tuple[dict[str, Any], Context]:
    """The keyword options for ``AsyncGateway.generate`` (or ``edit``) and the context the key fixes."""
    options: dict[str, Any] = {}
    use_case: str | None = None
    m = (body.model or "").strip()
    if m.lower() not in _AUTO:
        route = catalog.get(m)
        if route is not None:
            options.update(provider=route.provider, model=route.model)
        elif m in aliases:
            use_case = aliases[m]
        elif any(r.model == m for r in catalog):
            options["model"] = m
        elif m in key.use_cases:
            use_case = m
        else:
            raise BadRequest(
                f"unknown model {m!r}: name a route (GET /v1/models), a model id or a use case",
                param="model",
                code="model_not_found",
            )
    if use_case is not None and use_case not in key.use_cases:
        raise KeyNotAllowed(f"this key may not use {m!r} (use case {use_case!r})", param="model")
    if body.response_format not in (None, "b64_json"):
        raise BadRequest("only response_format=b64_json is offered", param="response_format")
    if body.n is not None:
        options["n"] = body.n
    if body.size is not None and body.size.lower() not in _AUTO:
        sm = _SIZE.match(body.size.lower())
        if sm is None:
            raise BadRequest(f"size must be WIDTHxHEIGHT or auto, got {body.size!r}", param="size")
        options.update(width=int(sm.group(1)), height=int(sm.group(2)))
    if body.quality is not None and body.quality.lower() not in _AUTO and _supports("quality"):
        options["quality"] = body.quality
    extensions = ("seed", "negative_prompt", "steps", "guidance_scale")
    for name in (*extensions, "strength", "mode") if edit else extensions:
        value = getattr(body, name)
        if value is not None:
            options[name] = value
    return options, key.context(use_case, end_user=body.user)


def images_response(result: GenerationResult) -> dict[str, Any]:
    """``{created, data: [{b64_json}], output_format, size}`` (OpenAI's ImagesResponse)."""
    first = result.images[0] if result.images else None
    out: dict[str, Any] = {
        "created": int(time.time()),
        "data": [{"b64_json": base64.b64encode(img.data).decode("ascii")} for img in result.images],
        "output_format": (first.mime.split("/")[-1] if first else "png"),
    }
    if first is not None:
        out["size"] = f"{first.width}x{first.height}"
    usage = result.metadata.get("usage") if isinstance(result.metadata, Mapping) else None
    if isinstance(usage, Mapping):
        out["usage"] = dict(usage)
    return out


__all__ = ["ImagesBody", "ServerSettings", "accepts_keyword", "images_response", "parse_body", "resolve"]
