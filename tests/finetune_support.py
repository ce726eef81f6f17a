"""Helpers for the fine-tuning tests: a provider card for a tiny SD pipeline, datasets, settings.

The pipeline itself comes from :mod:`tiny_sd` (random weights: it tests the LoRA *loading* path of a
text-to-image pipeline, never image quality).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

TINY_SD_CARD = """\
schema_version: 1
provider: local
name: Local test pipelines
models:
  - id: tiny-sd
    name: tiny random-weight Stable Diffusion (tests only)
    regions: [local]
    licence: {{name: Apache-2.0, commercial_use: true, source: tests, as_of: 2026-12-01}}
    indemnity: {{level: none, source: tests, as_of: 2026-12-01}}
    training_data: {{disclosed: true, summary: random weights, source: tests, as_of: 2026-12-01}}
    provenance: {{watermark: false, c2pa: false, source: tests, as_of: 2026-12-01}}
    moderation: {{provider_side: false, source: tests, as_of: 2026-12-01}}
    pricing: {{unit: hour, usd_per_hour: "0.10", hardware: cpu, expected_seconds: 1.0, source: tests,
              as_of: 2026-12-01}}
    capabilities: {{min_side: 64, max_side: 64, max_images: 2, steps: true, guidance: true,
                   negative_prompt: true, schedulers: [ddim, ddpm]}}
    defaults: {{width: 64, height: 64, steps: 2, guidance_scale: 1.0, scheduler: ddim}}
    options: {{path: {path}}}
"""


def write_card(path: Path, pipe_dir: Path) -> Path:
    path.write_text(textwrap.dedent(TINY_SD_CARD.format(path=json.dumps(str(pipe_dir)))))
    return path


def colour_dataset(out: Path, n: int = 4, licence: str = "proprietary", owner: str = "Acme") -> Path:
    """A few flat-colour 64x64 images in one label folder (enough to exercise the text-to-image path)."""
    from PIL import Image

    (out / "logo").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (64, 64), (200, 30 + 40 * i, 30)).save(out / "logo" / f"{i}.png")
    (out / "dataset.yaml").write_text(
        f"name: acme-colours\nowner: {owner}\nlicence: {licence}\nsource: Acme brand team\n"
        "caption: an acme {label}\n"
    )
    return out


def gateway_settings(home: Path, **extra: Any) -> Any:
    from gateway.config import Settings

    return Settings.load(None, home=home, **extra)
