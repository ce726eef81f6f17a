"""Dataset manifests: every training file hashed, decoded safely, and bound into one digest.

A training set is a folder ``DATASET/<label>/*.png|jpg|jpeg|webp`` (label folders are optional for style
sets) plus ``DATASET/dataset.yaml`` saying who owns it, under which licence and where it came from.
:func:`build_manifest` reads every file once, hashes those bytes, checks they decode as a bounded
image, and computes a digest that any later claim ("this adapter was trained on *that*") can be
checked against by hashing the files again.

The digest is an RFC 6962 Merkle root (the same code as the audit log, :mod:`gateway.audit.merkle`):
leaf 0 is ``dataset.yaml\\0<sha256 of the YAML bytes>``, then one leaf ``<relpath>\\0<sha256>`` per file
in sorted path order. Paths are in the leaves because a file moved to another label folder changes
what the model learns; the YAML is in because licence and owner claims are part of what is proven.
Per-file inclusion proofs come for free: a single file can be shown to be part of a dataset without
handing over the others.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._yaml import load_model
from ..audit.merkle import leaf_hash, root
from ..errors import UsageError
from ..types import atomic_write

SPEC_FILE = "dataset.yaml"
MANIFEST_FILE = "dataset.manifest.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
MANIFEST_VERSION = 1


class DatasetError(UsageError):
    """A dataset folder that cannot be trained on as it stands (exit code 2): the message lists files."""


class FileRights(BaseModel):
    """Per-file overrides for a file whose rights differ from the dataset's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    licence: str | None = Field(default=None, description="SPDX id or 'proprietary'.")
    source: str | None = None
    caption: str | None = Field(default=None, description="Text prompt for text-to-image training.")


class DatasetSpec(BaseModel):
    """``dataset.yaml``: the claims about a dataset that its manifest digest binds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    owner: str = Field(default="", description="Who owns the data (person, team or company).")
    licence: str = Field(min_length=1, description="SPDX id (CC-BY-4.0, MIT, ...) or 'proprietary'.")
    source: str = Field(default="", description="Where the files came from.")
    description: str = ""
    rights: str = Field(default="", description="Consent and rights notes (releases, contracts).")
    caption: str = Field(default="{label}", description="Prompt template for text-to-image training.")
    files: dict[str, FileRights] = Field(default_factory=dict, description="Overrides by relative path.")


@dataclass(frozen=True)
class FileEntry:
    path: str  # posix, relative to the dataset folder
    label: str | None
    sha256: str
    bytes: int
    width: int
    height: int
    mode: str
    licence: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Manifest:
    """A dataset as it was hashed: the spec, one entry per file, and the digest over both."""

    name: str
    owner: str
    licence: str
    source: str
    spec_sha256: str
    files: tuple[FileEntry, ...]
    digest: str
    spec: DatasetSpec = field(repr=False, compare=False)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({f.label for f in self.files if f.label is not None}))

    def licence_summary(self) -> dict[str, int]:
        """Files per effective licence, e.g. ``{"proprietary": 300, "CC-BY-4.0": 12}``."""
        out: dict[str, int] = {}
        for f in self.files:
            out[f.licence] = out.get(f.licence, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "name": self.name,
            "owner": self.owner,
            "licence": self.licence,
            "source": self.source,
            "spec_sha256": self.spec_sha256,
            "digest": self.digest,
            "files_count": len(self.files),
            "labels": list(self.labels),
            "licences": self.licence_summary(),
            "files": [f.to_dict() for f in self.files],
        }


def leaves(spec_sha256: str, files: tuple[FileEntry, ...] | list[FileEntry]) -> list[bytes]:
    """The Merkle leaves in order: the YAML first, then files sorted by path."""
    out = [leaf_hash(f"{SPEC_FILE}\0{spec_sha256}".encode())]
    out += [leaf_hash(f"{f.path}\0{f.sha256}".encode()) for f in sorted(files, key=lambda f: f.path)]
    return out


def digest_of(spec_sha256: str, files: tuple[FileEntry, ...] | list[FileEntry]) -> str:
    return root(leaves(spec_sha256, files)).hex()


def image_files(directory: Path) -> Iterator[Path]:
    """Every image under ``directory`` (top level or one label folder deep), in sorted order."""
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            yield p


def check_image(data: bytes) -> tuple[int, int, str]:
    """Decode ``data`` fully under a pixel bound; (width, height, mode) or ValueError with the reason."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in {"PNG", "JPEG", "WEBP"}:
                    raise ValueError(f"format {img.format} is not PNG, JPEG or WebP")
                if img.width * img.height > MAX_PIXELS:
                    raise ValueError(f"{img.width}x{img.height} exceeds {MAX_PIXELS} pixels")
                img.load()
                return img.width, img.height, img.mode
    except ValueError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"does not decode ({type(exc).__name__})") from None


def load_spec(directory: Path) -> tuple[DatasetSpec, bytes]:
    path = directory / SPEC_FILE
    if not path.is_file():
        raise DatasetError(f"{directory}: no {SPEC_FILE} (name, owner, licence, source are required)")
    raw = path.read_bytes()
    return load_model(DatasetSpec, path, text=raw.decode("utf-8")), raw


def build_manifest(directory: str | Path, *, keep: dict[str, bytes] | None = None) -> Manifest:
    """Hash and decode every file of the dataset at ``directory``.

    ``keep``, when given, receives the bytes that were hashed (path -> bytes) so a trainer decodes
    exactly what the digest covers, never a second read that could differ.
    """
    d = Path(directory)
    if not d.is_dir():
        raise DatasetError(f"{d}: not a dataset folder")
    spec, raw_spec = load_spec(d)
    spec_sha = hashlib.sha256(raw_spec).hexdigest()
    entries: list[FileEntry] = []
    bad: list[str] = []
    for p in image_files(d):
        rel = p.relative_to(d).as_posix()
        parts = rel.split("/")
        if len(parts) > 2:
            bad.append(f"{rel}: nested deeper than one label folder")
            continue
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            bad.append(f"{rel}: {size} bytes exceeds {MAX_FILE_BYTES}")
            continue
        data = p.read_bytes()
        try:
            w, h, mode = check_image(data)
        except ValueError as exc:
            bad.append(f"{rel}: {exc}")
            continue
        over = spec.files.get(rel, FileRights())
        entries.append(
            FileEntry(
                path=rel,
                label=parts[0] if len(parts) == 2 else None,
                sha256=hashlib.sha256(data).hexdigest(),
                bytes=len(data),
                width=w,
                height=h,
                mode=mode,
                licence=over.licence or spec.licence,
                source=over.source or spec.source,
            )
        )
        if keep is not None:
            keep[rel] = data
    unknown = sorted(set(spec.files) - {e.path for e in entries} - {b.split(":")[0] for b in bad})
    bad += [f"{rel}: named in {SPEC_FILE} files: but not an image in the dataset" for rel in unknown]
    if bad:
        raise DatasetError(f"{d}: {len(bad)} file(s) cannot be used:\n  " + "\n  ".join(bad))
    if not entries:
        raise DatasetError(f"{d}: no images (.png, .jpg, .webp) found")
    files = tuple(sorted(entries, key=lambda e: e.path))
    return Manifest(
        name=spec.name,
        owner=spec.owner,
        licence=spec.licence,
        source=spec.source,
        spec_sha256=spec_sha,
        files=files,
        digest=digest_of(spec_sha, files),
        spec=spec,
    )


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``dataset.manifest.json`` beside the files (atomically)."""
    path = Path(directory) / MANIFEST_FILE
    atomic_write(path, (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return path


@dataclass(frozen=True)
class ManifestCheck:
    """A stored manifest compared with the files as they are now."""

    ok: bool
    stored_digest: str
    current_digest: str | None
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_manifest(directory: str | Path, stored: Mapping[str, Any] | None = None) -> ManifestCheck:
    """Re-hash the dataset and compare with ``stored`` (default: its ``dataset.manifest.json``).

    The stored digest is first recomputed from the stored entries, so an edited manifest file is
    caught as well as an edited image.
    """
    d = Path(directory)
    if stored is None:
        stored = json.loads((d / MANIFEST_FILE).read_text())
    old = {f["path"]: f["sha256"] for f in stored.get("files", [])}
    claimed = str(stored.get("digest", ""))
    entries = [
        FileEntry(p, None, h, 0, 0, 0, "", "", "") for p, h in old.items()
    ]  # only path + hash enter the digest
    if digest_of(str(stored.get("spec_sha256", "")), entries) != claimed:
        return ManifestCheck(False, claimed, None, error="the manifest's digest does not match its entries")
    try:
        now = build_manifest(d)
    except DatasetError as exc:
        return ManifestCheck(False, claimed, None, error=str(exc))
    cur = {f.path: f.sha256 for f in now.files}
    changed = tuple(sorted(p for p in old.keys() & cur.keys() if old[p] != cur[p]))
    if now.spec_sha256 != stored.get("spec_sha256"):
        changed = (SPEC_FILE, *changed)
    return ManifestCheck(
        ok=now.digest == claimed,
        stored_digest=claimed,
        current_digest=now.digest,
        changed=changed,
        added=tuple(sorted(cur.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - cur.keys())),
    )


__all__ = [
    "MANIFEST_FILE",
    "SPEC_FILE",
    "DatasetError",
    "DatasetSpec",
    "FileEntry",
    "Manifest",
    "ManifestCheck",
    "build_manifest",
    "check_manifest",
    "digest_of",
    "write_manifest",
]
