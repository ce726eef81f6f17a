"""Audit witnesses: signed tree heads stored where the log's own host cannot rewrite them.

Kinds (by URL): ``postgresql://`` (an INSERT-only role on a separate database), ``s3://bucket/prefix``
(Object Lock), ``tsa+https://`` (an RFC 3161 timestamping authority), ``dir:///path`` (development
only). See :mod:`gateway.audit.witness.base` for the contract and docs/audit.md for the threat model.
"""

from __future__ import annotations

from .base import (
    Witness,
    WitnessConflict,
    WitnessedHead,
    WitnessError,
    WitnessQuorumError,
    WitnessSet,
    open_witness,
    register_witness,
)

__all__ = [
    "Witness",
    "WitnessConflict",
    "WitnessError",
    "WitnessQuorumError",
    "WitnessSet",
    "WitnessedHead",
    "open_witness",
    "register_witness",
]
