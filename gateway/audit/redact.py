"""Secret scrubbing for everything the gateway writes down: log lines, span attributes, audit records.

Why a scrubber when nobody means to log a secret: secrets arrive by accident, inside an exception
message (a provider echoing a header, a database URL with its password, a boto3 error quoting a
signed request). The scrubber is the last line: it replaces

* every value of the credential environment variables the gateway's backends read (exact match),
* token shapes that are secrets wherever they appear (Replicate ``r8_...``, AWS access key ids,
  AWS secret keys, JWT-like bearer tokens, PEM private keys),
* the value part of ``password=...``, ``token: ...``, ``Authorization: Bearer ...`` and of URLs'
  ``user:password@``,
* and any string value under a key that names a secret (``api_key``, ``password``, ...)

with ``[REDACTED]``. It is a pure function of its input plus the environment, cheap enough (one
compiled regex pass) to run on every audit record and every log line.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"

#: Environment variables whose values are credentials; their exact values are scrubbed anywhere.
SECRET_ENV_VARS: tuple[str, ...] = (
    "REPLICATE_API_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_BEARER_TOKEN_BEDROCK",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "PGPASSWORD",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "GATEWAY_TEST_SECRET",
)

#: Substrings of mapping keys whose (string) values are always secret.
SECRET_KEY_PARTS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "api_token",
    "access_token",
    "auth_token",
    "session_token",
    "security_token",
    "bearer",
    "authorization",
    "credential",
    "private_key",
    "cookie",
)

_SECRET_KEYS = frozenset({"token", "pwd", "auth", "sig", "signature", "key_material"})

_SECRET_VALUE_KEY = re.compile(
    r"(?i)password|passwd|secret|api[_-]?key|api[_-]?token|access[_-]?token|auth[_-]?token|session[_-]?token"
    r"|security[_-]?token|signature|credential|private[_-]?key|authorization"
)


def _key_value(m: re.Match[str]) -> str:
    key = m.group(1)
    if _SECRET_VALUE_KEY.search(key) is None and key.lower() not in _SECRET_KEYS:
        return m.group(0)
    return m.group(1) + m.group(2) + REDACTED


def _aws_secret(m: re.Match[str]) -> str:
    v = m.group(0)
    mixed = any(c.isupper() for c in v) and any(c.islower() for c in v) and any(c.isdigit() for c in v)
    return REDACTED if mixed else v


Replacement = str | Callable[[re.Match[str]], str]

_PATTERNS: tuple[tuple[str, Replacement], ...] = (
    # PEM private keys, whole block.
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", REDACTED),
    # Authorization headers and bearer/basic credentials.
    (r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}", r"\1\2" + REDACTED),
    (r"(?i)\b(token)(\s+)[A-Za-z0-9._~+/=-]{20,}", r"\1\2" + REDACTED),
    # key=value / key: value / "key": "value" where the key names a secret (checked in _key_value).
    (
        r"(?<![A-Za-z0-9_.-])([A-Za-z][A-Za-z0-9_.-]{1,63})([\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}\]]+)",
        _key_value,
    ),
    # Credentials inside URLs: scheme://user:password@host
    (r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", r"\1" + REDACTED + "@"),
    # Replicate API tokens.
    (r"\br8_[A-Za-z0-9_-]{16,}", REDACTED),
    # AWS access key ids (long-term and temporary).
    (r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b", REDACTED),
    # AWS secret access keys: 40 base64 characters standing alone, mixed case with a digit.
    (r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])", _aws_secret),
    # Hugging Face tokens, JWTs.
    (r"\bhf_[A-Za-z0-9]{20,}", REDACTED),
    (r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", REDACTED),
)
_COMPILED: tuple[tuple[re.Pattern[str], Replacement], ...] = tuple(
    (re.compile(p, re.S), r) for p, r in _PATTERNS
)
# A cheap pre-check: most strings (ids, hashes, model names) contain none of these, and skipping the
# full pattern pass for them keeps scrubbing a whole audit record to a few microseconds.
_HINTS: tuple[str, ...] = (
    "begin", "bearer", "basic", "token", "pass", "secret", "key", "signature", "credential", "authoriz",
    "://", "r8_", "hf_", "eyj", "akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "anpa", "anva",
    "aipa", "cookie", "pwd", "auth=", "auth:", "sig=", "sig:",
)  # fmt: skip
# Lowercase hex, numbers and simple names (hashes, ids, trace ids, costs) can hold no secret shape.
_PLAIN = re.compile(r"[0-9a-f.]*|[a-z0-9_.-]{0,24}")
_HINT = re.compile("|".join(re.escape(h) for h in _HINTS))
_SHAPE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def _suspicious(text: str) -> bool:
    return _HINT.search(text.lower()) is not None or _SHAPE.search(text) is not None


_extra_secrets: set[str] = set()
_known_cache: tuple[tuple[Any, ...], int, list[str]] = ((), -1, [])
_extra_version = 0


def register_secret(value: str | None) -> None:
    """Scrub this exact value from now on (a backend calls this with a token it was given directly)."""
    global _extra_version
    if value and len(value) >= 6 and value not in _extra_secrets:
        _extra_secrets.add(value)
        _extra_version += 1


def _env_reader() -> Callable[[], tuple[Any, ...]]:
    """A cheap fingerprint of the credential variables: the raw values straight from ``os.environ``'s
    own dict (a few dict lookups, no per-key decoding), so a changed variable is seen on the next call
    while an unchanged environment costs about a microsecond instead of a scan per string."""
    data = getattr(os.environ, "_data", None)
    encode = getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and callable(encode):
        keys = tuple(encode(name) for name in SECRET_ENV_VARS)
        get = data.get
        return lambda: tuple(map(get, keys))
    return lambda: tuple(map(os.environ.get, SECRET_ENV_VARS))  # pragma: no cover - non-CPython


_env_fingerprint = _env_reader()


def _known_secrets() -> list[str]:
    """The exact values to scrub, longest first; recomputed only when a variable or the registered
    set changes (this runs for every log line, span attribute and audit record)."""
    global _known_cache
    fingerprint = _env_fingerprint()
    cached_fp, cached_version, cached = _known_cache
    if fingerprint == cached_fp and cached_version == _extra_version:
        return cached
    values = {os.environ.get(name) or "" for name in SECRET_ENV_VARS} | _extra_secrets
    known = sorted((v for v in values if len(v) >= 6), key=len, reverse=True)
    _clean.clear()
    _known_cache = (fingerprint, _extra_version, known)
    return known


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret replaced by ``[REDACTED]``."""
    return _scrub(text, [*secrets, *_known_secrets()] if secrets else _known_secrets())


def _scrub(text: str, known: list[str]) -> str:
    if not text:
        return text
    if known is not _known_cache[2]:  # extra secrets given by the caller: no memo
        return _scrub_now(text, known)
    if text in _clean:
        return text
    out = _scrub_now(text, known)
    if out == text and len(text) <= _CLEAN_MAX_LEN and known is _known_cache[2]:
        if len(_clean) >= _CLEAN_MAX:
            _clean.clear()
        _clean.add(text)
    return out


# Short strings repeat from request to request (model names, route keys, teams, reasons). Those that
# held nothing to scrub are remembered until the secret list changes; a string that held a secret is
# never kept.
_CLEAN_MAX_LEN, _CLEAN_MAX = 256, 8192
_clean: set[str] = set()


def _scrub_now(text: str, known: list[str]) -> str:
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    if _PLAIN.fullmatch(text) is not None or not _suspicious(text):
        return text
    for pattern, repl in _COMPILED:
        text = pattern.sub(repl, text)
    return text


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a credential (its string value is then dropped whole)."""
    k = key.lower().replace("-", "_")
    return k in _SECRET_KEYS or any(part in k for part in SECRET_KEY_PARTS)


def redact_value(value: Any, *, secrets: Iterable[str] = ()) -> Any:
    """Scrub strings anywhere inside dicts, lists and tuples; values under secret-named keys entirely."""
    return _walk(value, [*secrets, *_known_secrets()] if secrets else _known_secrets())


def _walk(value: Any, known: list[str]) -> Any:
    kind = type(value)  # exact-type checks first: this runs on every audit record and log line
    if kind is str:
        return _scrub(value, known)
    if kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict or isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if type(v) is str and type(k) is str and v and is_secret_key(k):
                out[k] = REDACTED
            else:
                out[k] = _walk(v, known)
        return out
    if kind is list:
        return [_walk(v, known) for v in value]
    if kind is tuple:
        return tuple(_walk(v, known) for v in value)
    if isinstance(value, str):
        return _scrub(str(value), known)
    if isinstance(value, list | tuple):
        return type(value)(_walk(v, known) for v in value)
    return value


__all__ = ["REDACTED", "SECRET_ENV_VARS", "redact", "redact_value", "register_secret"]
