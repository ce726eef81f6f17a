"""Helpers shared by the edit tests: small images, masks, bad files, an edit-capable mock catalogue."""

from __future__ import annotations

import io
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

from gateway.catalog import Catalog, ModelCard, ProviderCard

SRC = {"source": "test", "as_of": "2026-11-01"}


def png(size: tuple[int, int] = (64, 64), color: Any = (120, 30, 200), mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def half_mask(size: tuple[int, int] = (64, 64), *, alpha: bool = False) -> bytes:
    """Right half marked for repainting: white (or, with ``alpha``, transparent)."""
    import numpy as np
    from PIL import Image

    w, h = size
    if alpha:
        arr = np.full((h, w, 4), 255, dtype=np.uint8)
        arr[:, w // 2 :, 3] = 0
    else:
        arr = np.zeros((h, w), dtype=np.uint8)
        arr[:, w // 2 :] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (Pillow would inflate gigabytes)."""
    data = png((1, 1), mode="L", color=0)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return patched + data[8 + 4 + 4 + 13 + 4 :]


def edit_card(mid: str = "m", modes: tuple[str, ...] = ("img2img", "inpaint"), **edit: Any) -> ModelCard:
    return ModelCard.model_validate({
        "id": mid, "name": mid, "regions": ["us-east-1"],
        "licence": {"name": "Apache-2.0", "commercial_use": True, **SRC},
        "indemnity": {"level": "none", **SRC}, "training_data": {"disclosed": True, **SRC},
        "provenance": SRC, "moderation": {"provider_side": False, **SRC},
        "pricing": {"unit": "image", "per_image": [{"usd": "0.01"}], **SRC},
        "capabilities": {"max_images": 4, "min_side": 64, "max_side": 1024,
                         "edit": {"modes": list(modes), "max_inputs": 2, "min_side": 16, **edit}},
        "defaults": {"width": 256, "height": 256},
    })  # fmt: skip


def plain_card(mid: str = "gen") -> ModelCard:
    card = edit_card(mid)
    return card.model_copy(update={"capabilities": card.capabilities.model_copy(update={"edit": None})})


def catalog(*cards: ModelCard, provider: str = "a") -> Catalog:
    return Catalog([ProviderCard(provider=provider, name=provider, models=cards)])


def ledger_rows(home: Path) -> int:
    with sqlite3.connect(home / "ledger.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM ledger_requests").fetchone()[0])
