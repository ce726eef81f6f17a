"""Class consistency of generated digits, judged by a classifier trained on the REAL digits only.

Used by the quality test and the benchmarks: a logistic regression fitted on scikit-learn's digits
(8x8, 0..16) reads generated images downscaled to 8x8; the score is the share assigned to the digit
that was asked for. Training it on generated images would let the generator grade itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def real_digit_classifier() -> Any:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    clf = LogisticRegression(max_iter=5000, C=0.5)
    clf.fit(d.data.astype(np.float64), d.target)
    return clf


def to_digit_features(png: bytes) -> Any:
    """Decode, convert to grey, box-downscale to 8x8 and map to the dataset's 0..16 range."""
    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L").resize((8, 8), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64).reshape(-1) / 255.0 * 16.0


def class_consistency(images: Sequence[bytes], targets: Iterable[int]) -> float:
    """Fraction of ``images`` the real-digit classifier assigns to their target digit."""
    import numpy as np

    feats = np.stack([to_digit_features(p) for p in images])
    pred = real_digit_classifier().predict(feats)
    tgt = np.asarray(list(targets))
    return float((pred == tgt).mean())
