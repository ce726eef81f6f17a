"""A small style dataset for the tiny-digits model: scikit-learn's digits with bolder strokes.

Why it ships: the fine-tuning path must be exercised end to end on a fresh machine with no network
(tests, the CI smoke run, ``benchmarks/bench_lora_style.py``, the docs' walk-through), and a style
that a number can measure (ink mass, stroke area) makes "the adapter changed the look but kept the
digit" checkable. The images are derived from sklearn's copy of the UCI digits (CC BY 4.0, FACTS.md),
so the generated ``dataset.yaml`` says so.

Bolder = the digit upscaled to 16x16 like tiny-digits' own training data, then blended with its
grey-level dilation by a 3x3 cross and brightened: strokes get about a pixel wider while the judge in
:mod:`gateway.models.quality` (a classifier trained on the real digits) still reads them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

SIZE = 16


def _dilate_cross(a: Any) -> Any:
    import numpy as np

    p = np.pad(a, 1)
    return np.maximum.reduce([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])


def bolden(a: Any, strength: float = 0.5, gain: float = 1.15) -> Any:
    """``a`` in [0, 1] (ink bright) -> bolder strokes, still in [0, 1]."""
    import numpy as np

    return np.clip(gain * ((1 - strength) * a + strength * _dilate_cross(a)), 0.0, 1.0)


def digits16() -> tuple[Any, Any]:
    """sklearn's digits as (N, 16, 16) float arrays in [0, 1] (bilinear upscale) and labels."""
    import numpy as np
    import torch
    import torch.nn.functional as func
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = func.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return x.squeeze(1).numpy(), d.target


def png(a: Any) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_bold_digits(
    out: str | Path,
    *,
    per_class: int = 30,
    offset: int = 0,
    strength: float = 0.5,
    gain: float = 1.15,
    name: str = "bold-digits",
    owner: str = "Example Brand Studio",
    licence: str = "CC-BY-4.0",
) -> Path:
    """Write ``out/<digit>/NNNN.png`` (``per_class`` images per digit) and ``out/dataset.yaml``."""
    x, y = digits16()
    root = Path(out)
    counts = dict.fromkeys(range(10), 0)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        if i < offset or counts[int(label)] >= per_class:
            continue
        d = root / str(int(label))
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:04d}.png").write_bytes(png(bolden(img, strength, gain)))
        counts[int(label)] += 1
    (root / "dataset.yaml").write_text(
        f"name: {name}\n"
        f"owner: {owner}\n"
        f"licence: {licence}\n"
        "source: sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits), "
        "strokes thickened by gateway.finetune.digits_style\n"
        "description: Handwritten digits 0-9 with bold strokes, 16x16 grey, bright ink on black.\n"
        "rights: Derived from a CC BY 4.0 dataset; attribution to UCI and the original authors.\n"
    )
    return root


__all__ = ["bolden", "digits16", "write_bold_digits"]
