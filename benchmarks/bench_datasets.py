"""Dataset builder: images/s per executor and worker count, and train-on-synthetic/test-on-real accuracy.

    python benchmarks/bench_datasets.py [--images 300] [--workers 1,2] [--executors local,ray]
        [--repeat 1] [--no-tstr] [--json FILE]

Each configuration builds the same 10-digit tiny-digits spec into a fresh folder with a fresh gateway
home (so nothing is replayed), through the real CLI path (``gateway.datasets.build``): policy, ledger,
provenance and audit included. images/s counts from the first request to the last result, so worker
start-up (importing torch, loading the model) is inside it. TSTR uses ``gateway dataset evaluate``
(logistic regression and an RBF SVM, trained on the build only, tested on held-out real digits, next to
the same classifier trained on as many real digits). Numbers go to docs/datasets.md.

Next to each wall time the run records the 1-minute load average at its start and end and the CPU
seconds of every process it used: this process plus every descendant (pool processes, or Ray's
daemons and actors), sampled every 0.25 s, so the last fraction of a second of a process that exits
is missed. torch runs one intra-op thread per worker (``OMP_NUM_THREADS=1`` unless already set), so
``--workers 2`` means two threads of compute, as on the 2-core host this was measured on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
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


class CpuMeter:
    """CPU seconds (user + system) of this process and all its descendants while the block runs."""

    def __init__(self, every_s: float = 0.25) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._every = every_s
        self._seen: dict[tuple[int, float], float] = {}  # (pid, create time) -> last CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._base = self._me.cpu_times()

    def _sample(self) -> None:
        for proc in self._me.children(recursive=True):
            try:
                t = proc.cpu_times()
                self._seen[(proc.pid, proc.create_time())] = t.user + t.system
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied, self._psutil.ZombieProcess):
                continue

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._before = dict(self._seen)  # descendants that already existed (none, normally)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        now = self._me.cpu_times()
        self.own_s = (now.user + now.system) - (self._base.user + self._base.system)
        self.children_s = sum(v - self._before.get(k, 0.0) for k, v in self._seen.items())
        self.processes = len(self._seen)

    @property
    def total_s(self) -> float:
        return self.own_s + self.children_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--model", default="tiny-digits")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--repeat", type=int, default=1, help="Builds per configuration.")
    ap.add_argument("--no-tstr", action="store_true", help="Skip the train-on-synthetic evaluation.")
    ap.add_argument("--keep", help="Keep the last build folder here (for inspection).")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.images < 10:
        ap.error("--images must be at least 10 (one per digit)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runs = []
    last_out = None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        spec_path = base / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec(args.images, args.model, args.steps)))
        configs = [
            (ex, int(w), r)
            for r in range(args.repeat)
            for ex in args.executors.split(",")
            for w in args.workers.split(",")
        ]
        for ex, w, r in configs:
            home = base / f"home-{ex}-{w}-{r}"
            out = Path(args.keep) if args.keep and (ex, w, r) == configs[-1] else base / f"out-{ex}-{w}-{r}"
            os.environ["GATEWAY_HOME"] = str(home)
            load0 = os.getloadavg()[0]
            with CpuMeter() as cpu:
                t0 = time.perf_counter()
                result = build(spec_path, out, executor_name=ex, workers=w, progress=False)
                wall = time.perf_counter() - t0
            runs.append(
                {
                    "executor": ex,
                    "workers": w,
                    "repeat": r,
                    "images": result.images,
                    "wall_s": round(wall, 2),
                    "images_per_s": round(result.images / wall, 3),
                    "cpu_s": round(cpu.total_s, 1),
                    "cpu_s_per_image": round(cpu.total_s / max(1, result.images), 3),
                    "cpu_s_driver": round(cpu.own_s, 1),
                    "processes": cpu.processes,
                    "loadavg_start": round(load0, 2),
                    "loadavg_end": round(os.getloadavg()[0], 2),
                    "cost_usd": result.cost_usd_total,
                    "exit_code": result.exit_code,
                    "errors": result.errors[:3],
                }
            )
            print(runs[-1], file=sys.stderr, flush=True)
            last_out = out
        tstr = (
            {c: evaluate(last_out, classifier=c) for c in ("logreg", "svm")}
            if last_out and not args.no_tstr
            else {}
        )
    doc = {"benchmark": "datasets", "machine": machine(), "omp_num_threads": os.environ["OMP_NUM_THREADS"]}
    emit(
        {
            **doc,
            "spec": {"images": args.images, "model": args.model, "steps": args.steps},
            "runs": runs,
            "tstr": tstr,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
