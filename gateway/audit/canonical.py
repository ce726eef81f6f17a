"""Canonical JSON: the exact bytes an audit entry is hashed over.

Why a canonical form: a hash is over bytes, not over a dict. Sorting keys and dropping insignificant
whitespace makes the bytes a function of the *value*, so anyone holding an exported record can rebuild
them and recompute the hash. Non-ASCII text stays UTF-8 (as RFC 8785 does) rather than ``\\uXXXX``
escapes; NaN and infinities are refused because JSON has no spelling for them.

Values the gateway hands us that JSON lacks are given one fixed spelling here, so the caller never has
to think about it: ``Decimal`` as its string (money stays exact), datetimes as ISO 8601, enums by value,
sets sorted, tuples as lists, and objects with ``to_dict()`` by that dict.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite Decimal {value} has no JSON form")
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda v: canonical_json(v))
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, PurePath):
        return str(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable for the audit log")


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        return _default(o)


_ENCODER = _Encoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, UTF-8 text; raises TypeError/ValueError on what JSON cannot hold."""
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)
    return _ENCODER.encode(value)


def canonical_bytes(value: Any) -> bytes:
    """:func:`canonical_json` encoded as UTF-8: what the audit log stores and hashes."""
    return canonical_json(value).encode("utf-8")


__all__ = ["canonical_bytes", "canonical_json"]
