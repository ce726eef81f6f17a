"""Dataset builder: images/s per executor and worker count, and train-on-synthetic/test-on-real accuracy.

    python benchmarks/bench_datasets.py [--images 300] [--workers 1,2] [--executors local,ray] [--json FILE]

Each configuration builds the same 10-digit tiny-digits spec into a fresh folder with a fresh gateway
home (so nothing is replayed), through the real CLI path (``gateway.datasets.build``): policy, ledger,
provenance and audit included. images/s counts from the first request to the last result, so worker
start-up (importing torch, loading the model) is inside it. TSTR uses ``gateway dataset evaluate``
(logistic regression and an RBF SVM, trained on the build only, tested on held-out real digits, next to
the same classifier trained on as many real digits). Numbers go to docs/datasets.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import emit, machine  # noqa: E402

from gateway.datasets import build  # noqa: E402
from gateway.datasets.evaluate import evaluate  # noqa: E402


def spec(images: int, model: str, steps: int | None) -> dict[str, Any]:
    per = images // 10
    doc: dict[str, Any] = {
        "name": "bench-digits",
        "model": model,
        "seed": 11,
        "split": {"train": 1.0},
        "images_per_request": 5,  # the default policy allows at most 8 images per request
        "classes": [{"label": str(d), "prompts": [f"a handwritten {d}"], "count": per} for d in range(10)],
    }
    if steps:
        doc["steps"] = steps
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--model", default="tiny-digits")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--keep", help="Keep the last build folder here (for inspection).")
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = []
    last_out = None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        spec_path = base / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec(args.images, args.model, args.steps)))
        for ex in args.executors.split(","):
            for w in (int(x) for x in args.workers.split(",")):
                home = base / f"home-{ex}-{w}"
                out = (
                    Path(args.keep)
                    if args.keep and ex == args.executors.split(",")[-1]
                    else base / f"out-{ex}-{w}"
                )
                os.environ["GATEWAY_HOME"] = str(home)
                t0 = time.perf_counter()
                result = build(spec_path, out, executor_name=ex, workers=w, progress=False)
                wall = time.perf_counter() - t0
                runs.append(
                    {
                        "executor": ex,
                        "workers": w,
                        "images": result.images,
                        "wall_s": round(wall, 2),
                        "images_per_s": round(result.images / wall, 2),
                        "cost_usd": result.cost_usd_total,
                        "exit_code": result.exit_code,
                        "errors": result.errors[:3],
                    }
                )
                print(runs[-1], file=sys.stderr)
                last_out = out
        tstr = {c: evaluate(last_out, classifier=c) for c in ("logreg", "svm")} if last_out else {}
    emit({"benchmark": "datasets", "machine": machine(), "runs": runs, "tstr": tstr}, args.json)


if __name__ == "__main__":
    main()
