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


def predicted_digits(images: Sequence[bytes]) -> Any:
    """The digit the real-digit classifier reads in each of ``images`` (an integer array)."""
    import numpy as np

    feats = np.stack([to_digit_features(p) for p in images])
    return real_digit_classifier().predict(feats)


def class_consistency(images: Sequence[bytes], targets: Iterable[int]) -> float:
    """Fraction of ``images`` the real-digit classifier assigns to their target digit."""
    import numpy as np

    tgt = np.asarray(list(targets))
    return float((predicted_digits(images) == tgt).mean())


FD_COMPONENTS = 16  # PCA components of the judge's 8x8 input (stable covariances from a few hundred images)


@lru_cache(maxsize=1)
def _real_digit_stats() -> tuple[Any, Any, Any]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    data = load_digits().data.astype(np.float64)
    pca = PCA(n_components=FD_COMPONENTS, random_state=0).fit(data)
    feats = pca.transform(data)
    return pca, feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(images: Sequence[bytes]) -> float:
    """Fréchet distance between ``images`` and the 1,797 real digits, on the judge's features.

    Class consistency says each image is readable as its digit; it cannot see blur or a lack of
    variety. This compares the two distributions (means and covariances, as FID does with Inception
    features) in a PCA-16 projection of the same 8x8 features the judge reads: lower is closer.
    """
    import numpy as np

    pca, mu_r, cov_r = _real_digit_stats()
    feats = pca.transform(np.stack([to_digit_features(p) for p in images]))
    mu_g, cov_g = feats.mean(axis=0), np.cov(feats, rowvar=False)
    # tr sqrt(cov_g cov_r) = sum of sqrt eigenvalues of the symmetric s cov_g s, s = cov_r^(1/2).
    w, v = np.linalg.eigh(cov_r)
    s = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(s @ cov_g @ s), 0.0, None)).sum()
    return float(((mu_g - mu_r) ** 2).sum() + np.trace(cov_g) + np.trace(cov_r) - 2.0 * tr_covmean)
