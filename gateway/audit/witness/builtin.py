"""Register the witness kinds shipped with the SDK; each module loads only when a URL uses it."""

from __future__ import annotations

from pathlib import Path

from .base import Witness, register_witness


def _postgres(url: str, state_dir: Path) -> Witness:
    from .postgres import PostgresWitness

    return PostgresWitness(url)


def _s3(url: str, state_dir: Path) -> Witness:
    from .s3 import S3Witness

    return S3Witness(url)


def _tsa(url: str, state_dir: Path) -> Witness:
    from .tsa import TimestampWitness

    return TimestampWitness(url, state_dir / "tsa")


def _dir(url: str, state_dir: Path) -> Witness:
    from .directory import DirectoryWitness

    return DirectoryWitness(url)


for _scheme in ("postgresql", "postgres"):
    register_witness(_scheme, _postgres)
register_witness("s3", _s3)
for _scheme in ("tsa+https", "tsa+http"):
    register_witness(_scheme, _tsa)
register_witness("dir", _dir)
