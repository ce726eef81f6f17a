"""Local quality against cost on tiny-digits, and the Gateway against a direct LocalBackend call.

    python benchmarks/bench_local_quality.py            # every scheduler/steps, 100 images each
    python benchmarks/bench_local_quality.py --quick    # 20 images each, no DDPM-1000 (smoke)

Quality: for each (scheduler, steps) the shipped model draws 100 images, 10 of each digit (one call
with n=10 per digit, fixed seeds, guidance 2.0, 256x256 PNG output as the provider card's default), on
CPU through ``LocalBackend.generate`` directly; images per second = 100 / total wall time of the ten
calls. Class consistency is :func:`gateway.models.quality.class_consistency`: the share of images a
logistic regression trained on the real scikit-learn digits assigns to the digit asked for.

Gateway against direct: the same work (DDIM 20 steps, n=8, 256x256, same digit and seed) through
``Gateway.generate`` and through ``LocalBackend.generate``, interleaved round-robin. Two figures: the
paired ratio (each round's gateway time over the same round's direct time, median over rounds), and
the gateway's own added time measured inside each call (its wall time minus the backend attempt's
latency, which the result records), as a share of the direct call's median. One denoising call here
varies by +-15% from run to run on this shared CPU, far more than the few milliseconds the gateway
adds, so the goal is judged on the added time; the paired ratio is shown for transparency.
Local outputs always get the gateway's watermark and C2PA manifest, so the gateway is measured twice:
as shipped, and with the output step's provenance removed (benchmark-only swap of the internal
``OutputStep``) to isolate governance from provenance. Goal: <= 3% slower on the same work.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, emit, machine, quiet_logs, versions

CONFIGS: list[tuple[str, int]] = [
    ("ddpm", 1000),
    ("ddim", 50),
    ("ddim", 20),
    ("ddim", 10),
    ("ddim", 5),
    ("dpm++", 20),
    ("dpm++", 10),
    ("dpm++", 5),
    ("euler", 20),
    ("euler", 10),
]
SIZE = 256
GUIDANCE = 2.0


def backend_call(digit: int, n: int, scheduler: str, steps: int, seed: int) -> Any:
    from gateway.backends.base import BackendCall
    from gateway.types import ImageRequest

    req = ImageRequest(prompt=f"a handwritten {digit}", n=n, width=SIZE, height=SIZE, seed=seed,
                       steps=steps, scheduler=scheduler, guidance_scale=GUIDANCE)  # fmt: skip
    return BackendCall(req, "tiny-digits", {}, 600.0, "bench")


def quality(backend: Any, scheduler: str, steps: int, per_digit: int) -> dict[str, Any]:
    from gateway.models.quality import class_consistency

    images: list[bytes] = []
    targets: list[int] = []
    wall = 0.0
    for digit in range(10):
        call = backend_call(digit, per_digit, scheduler, steps, seed=1000 + digit)
        t0 = time.perf_counter()
        res = backend.generate(call)
        wall += time.perf_counter() - t0
        images += res.images
        targets += [digit] * len(res.images)
    print(f"  {scheduler} {steps}: {len(images)} images in {wall:.1f} s", file=sys.stderr, flush=True)
    return {
        "scheduler": scheduler,
        "steps": steps,
        "images": len(images),
        "wall_s": wall,
        "images_per_s": len(images) / wall,
        "class_consistency": class_consistency(images, targets),
    }


def gateway_vs_direct(backend: Any, rounds: int, n: int) -> dict[str, Any]:
    from gateway import Gateway
    from gateway.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", policies=(REPO / "policies/default.yaml",))
        gw_full = Gateway(settings)
        gw_bare = Gateway(settings.model_copy(update={"home": Path(tmp) / "home2"}))
        core = gw_bare._core  # benchmark-only: the same gateway without watermark/C2PA on local outputs
        core.outputs = dataclasses.replace(core.outputs, provenance=None)

        def via(gw: Any, digit: int, seed: int) -> Any:
            return gw.generate(f"a handwritten {digit}", provider="local", model="tiny-digits", n=n,
                               width=SIZE, height=SIZE, seed=seed, steps=20, scheduler="ddim",
                               guidance_scale=GUIDANCE)  # fmt: skip

        runs = {
            "direct": lambda d, s: backend.generate(backend_call(d, n, "ddim", 20, s)),
            "gateway (no provenance)": lambda d, s: via(gw_bare, d, s),
            "gateway (as shipped: watermark + C2PA)": lambda d, s: via(gw_full, d, s),
        }
        for fn in runs.values():  # warm: model loaded in each gateway's own backend, keys created
            fn(0, 1)
        samples: dict[str, list[float]] = {k: [] for k in runs}
        added: dict[str, list[float]] = {k: [] for k in runs if k != "direct"}
        names = list(runs)
        for i in range(rounds):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                res = runs[name](i % 10, 100 + i)
                wall = time.perf_counter() - t0
                samples[name].append(wall)
                if name in added:  # the gateway's own time: the call's wall minus its backend attempt
                    added[name].append(wall - res.attempts[-1].latency_s)
            print(f"  round {i}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in samples.items()),
                  file=sys.stderr, flush=True)  # fmt: skip
        gw_full.close()
        gw_bare.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    # Paired: each round's gateway time over the same round's direct time, then the median ratio. Load
    # from other processes shifts both members of a pair alike, so this is steadier than med/med.
    paired = {
        k: (statistics.median(g / d for g, d in zip(v, samples["direct"], strict=True)) - 1) * 100
        for k, v in samples.items()
        if k != "direct"
    }
    added_med = {k: statistics.median(v) for k, v in added.items()}
    return {
        "work": f"DDIM 20 steps, n={n}, {SIZE}x{SIZE}, guidance {GUIDANCE}",
        "rounds": rounds,
        "median_s": med,
        "added_s": added_med,
        "added_pct": {k: v / med["direct"] * 100 for k, v in added_med.items()},
        "slower_pct": paired,
        "slower_pct_of_medians": {k: (v / med["direct"] - 1) * 100 for k, v in med.items() if k != "direct"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 images per digit, no DDPM-1000, 4 rounds")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds of gateway vs direct")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    quiet_logs()
    import json

    import torch

    from gateway.backends.local import LocalBackend, resolve_model_dir

    per_digit = 2 if args.quick else 10
    configs = [c for c in CONFIGS if not (args.quick and c[1] >= 1000)]
    model_dir = resolve_model_dir("tiny-digits")
    result: dict[str, Any] = {
        "bench": "local_quality",
        "machine": machine(),
        "versions": versions("diffusion-gateway", "torch", "diffusers", "scikit-learn"),
        "torch_threads": torch.get_num_threads(),
        "model_training": json.loads((model_dir / "training.json").read_text()),
        "per_digit": per_digit,
    }
    backend = LocalBackend()
    backend.generate(backend_call(0, 1, "ddim", 5, 0))  # load once, outside the timings
    result["quality"] = [quality(backend, s, k, per_digit) for s, k in configs]
    try:
        # n=8: the default policy pack's request limit (max_images 8) applies to the gateway path.
        result["gateway_vs_direct"] = gateway_vs_direct(backend, 4 if args.quick else args.rounds, 8)
        slower = result["gateway_vs_direct"]["added_pct"]["gateway (no provenance)"]
        result["goals"] = {"gateway<=3%_slower": slower <= 3.0}
    except Exception as exc:  # keep the (long) quality table even if the comparison breaks
        result["gateway_vs_direct_error"] = f"{type(exc).__name__}: {exc}"
    backend.close()
    emit(result, args.json)


if __name__ == "__main__":
    main()
