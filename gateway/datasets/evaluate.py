"""Train on synthetic, test on real (TSTR) for digit datasets, next to the same classifier on real data.

Why this and not a look at the pictures: a synthetic set is only as good as what a model learns from
it. The classifier is trained on the build's images only (downscaled to scikit-learn's 8x8, 0..16
digits), then tested on real digits it never saw; the baseline is the same classifier trained on as
many *real* digits, tested on the same held-out real digits. The gap between the two is the cost of
replacing real data by generated data.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

CLASSIFIERS = ("logreg", "svm")


def _classifier(kind: str) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if kind == "svm":
        return make_pipeline(StandardScaler(), SVC(gamma="scale", C=10.0))
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.5))


def _features(png: bytes) -> Any:
    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L").resize((8, 8), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64).reshape(-1) / 255.0 * 16.0


def evaluate(directory: str | Path, *, classifier: str = "logreg", seed: int = 0) -> dict[str, Any]:
    """TSTR accuracy on real digits vs the real-data baseline of the same size (labels must be 0-9)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from ..errors import UsageError

    root = Path(directory)
    labels_path = root / "labels.jsonl"
    if not labels_path.exists():
        raise UsageError(f"{root}: no labels.jsonl (is this a dataset build folder?)")
    rows = [json.loads(line) for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise UsageError(f"{root}: the dataset is empty")
    if any(str(r["label"]) not in {str(d) for d in range(10)} for r in rows):
        raise UsageError("the real-digits evaluation needs labels 0-9")
    x_syn = np.stack([_features((root / r["path"]).read_bytes()) for r in rows])
    y_syn = np.asarray([int(r["label"]) for r in rows])
    real = load_digits()
    n = len(rows)
    if n >= len(real.target) - 100:
        raise UsageError(f"{n} synthetic images: too many to leave a real test set of the same digits")
    x_base, x_test, y_base, y_test = train_test_split(
        real.data.astype(np.float64),
        real.target,
        train_size=n,
        stratify=real.target if n >= 10 else None,  # a stratified draw needs one of each digit
        random_state=seed,
    )
    tstr = _classifier(classifier).fit(x_syn, y_syn)
    base = _classifier(classifier).fit(x_base, y_base)
    syn_acc = float((tstr.predict(x_test) == y_test).mean())
    real_acc = float((base.predict(x_test) == y_test).mean())
    per_class = {
        str(d): float((tstr.predict(x_test[y_test == d]) == d).mean())
        for d in range(10)
        if (y_test == d).any()
    }
    return {
        "dataset": str(root),
        "classifier": classifier,
        "train_images": n,
        "test_images": len(y_test),
        "tstr_accuracy": round(syn_acc, 4),
        "real_baseline_accuracy": round(real_acc, 4),
        "gap_points": round((real_acc - syn_acc) * 100, 2),
        "tstr_per_class": {k: round(v, 3) for k, v in per_class.items()},
    }


__all__ = ["CLASSIFIERS", "evaluate"]
