"""Choose which checkpoint of a ``tiny-digits-lcm`` distillation run to ship, on VALIDATION seeds.

Why: picking the checkpoint with the best score on the benchmark's own seeds would tune the reported
number to those seeds (selection bias). This scores each checkpoint on seeds the benchmark never uses
(``VALIDATION_SEED0 + 100*digit + batch``; the benchmark's are 1000..1999), through the same
``LocalBackend`` path and the same real-digit judge, and applies one fixed rule:

    the highest 2-step class consistency; ties -> the higher 1-step class consistency;
    then the lower 2-step Fréchet distance.

    python -m gateway.models.select_tiny_digits_lcm CKPT_DIR [CKPT_DIR ...] [--per-digit 30] [--json PATH]

Prints one JSON line per checkpoint to stderr and the whole result (with ``chosen``) to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

VALIDATION_SEED0 = 500_000  # far from the benchmark's seeds (1000 + 100*digit + batch < 2000)
BATCH = 10
SIZE = 256


def score(path: Path, steps: int, per_digit: int, backend: Any) -> dict[str, Any]:
    """Class consistency and FD of ``per_digit`` images per digit from the checkpoint at ``path``."""
    from gateway.backends.base import BackendCall
    from gateway.models.quality import class_consistency, frechet_distance
    from gateway.types import ImageRequest

    images: list[bytes] = []
    targets: list[int] = []
    for digit in range(10):
        for b in range(0, per_digit, BATCH):
            n = min(BATCH, per_digit - b)
            req = ImageRequest(prompt=f"a handwritten {digit}", n=n, width=SIZE, height=SIZE,
                               seed=VALIDATION_SEED0 + 100 * digit + b, steps=steps)  # fmt: skip
            images += backend.generate(BackendCall(req, str(path), {}, 3600.0, "validation")).images
            targets += [digit] * n
    return {
        "class_consistency": class_consistency(images, targets),
        "fd": frechet_distance(images) if len(images) >= 100 else None,
        "images": len(images),
    }


def rank_key(row: dict[str, Any]) -> tuple[float, float, float]:
    """The fixed selection rule (see the module docstring): larger is better."""
    return (row["2"]["class_consistency"], row["1"]["class_consistency"], -(row["2"]["fd"] or 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--per-digit", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    import torch

    from gateway.backends.local import LocalBackend

    torch.set_num_threads(max(1, a.threads))
    backend = LocalBackend()
    rows = []
    for path in a.checkpoints:
        t0 = time.perf_counter()
        info = json.loads((path / "training.json").read_text())
        row: dict[str, Any] = {"checkpoint": str(path), "steps_done": info.get("steps_done")}
        for steps in (1, 2):
            row[str(steps)] = score(path, steps, a.per_digit, backend)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    backend.close()
    best = max(rows, key=rank_key)
    out = {
        "validation_seeds": f"{VALIDATION_SEED0} + 100*digit + batch (batches of {BATCH})",
        "per_digit": a.per_digit,
        "rule": "max 2-step class consistency, then 1-step class consistency, then min 2-step FD",
        "rows": rows,
        "chosen": best["checkpoint"],
    }
    text = json.dumps(out, indent=2)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
