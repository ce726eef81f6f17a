"""Register the witness kinds shipped with the SDK; each module loads only when a URL uses it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import Witness, register_witness


def _require(scheme: str, *modules: str) -> None:
    """Refuse at configuration time, with the install line, rather than at the first checkpoint."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        from ...errors import UsageError

        raise UsageError(
            f"{scheme}:// audit witnesses need {', '.join(missing)}: pip install 'diffusion-gateway[witness]'"
        )


def _postgres(url: str, state_dir: Path) -> Witness:
    _require("postgresql", "psycopg")
    from .postgres import PostgresWitness

    return PostgresWitness(url)


def _s3(url: str, state_dir: Path) -> Witness:
    _require("s3", "boto3")
    from .s3 import S3Witness

    return S3Witness(url)


def _tsa(url: str, state_dir: Path) -> Witness:
    _require("tsa+https", "rfc3161_client")
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
