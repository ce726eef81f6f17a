"""Brand style by LoRA: does an adapter trained on bold digits make tiny-digits draw bolder, and still right?

    python benchmarks/bench_lora_style.py                 # 300 images, 200 steps, 20 images per digit
    python benchmarks/bench_lora_style.py --quick         # 100 images, 60 steps, 5 per digit (smoke)

1. Dataset: scikit-learn's digits with strokes thickened (:mod:`gateway.finetune.digits_style`),
   ``--per-class`` images per digit, through ``gateway.finetune.manifest`` (hash, decode, digest) and
   the default training-data policy (CC-BY-4.0 is allowed).
2. Train: ``train_lora`` on tiny-digits (rank 8, the default targets, seed 0); wall time measured.
3. Generate through ``Gateway.generate`` (policy, routing to ``local/tiny-digits+NAME``, provenance)
   the same digits with the same seeds, with and without ``adapter=``: ``--per-digit`` images each.
4. Measure on each output box-downscaled to the model's native 16x16: ink mass (mean intensity, 0..1)
   and stroke area (share of pixels above 0.5); the same figures for the real and the bold training
   images put the shift in scale (style shift = how far the adapter moved the outputs from the base
   toward the bold set, 0 = no change, 1 = as bold as the training set). Class consistency: the
   judge of :mod:`gateway.models.quality` (a classifier fitted on the real digits) reads each output.

Done when: outputs are measurably bolder (ink and stroke area up, beyond run-to-run noise of the base)
and >= 90% still read as the digit asked for. Also checks the C2PA of an adapter output names the
adapter and the dataset digest.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, machine, quiet_logs, versions


def _stats(pngs: list[bytes]) -> dict[str, float]:
    import numpy as np
    from PIL import Image

    ink, area = [], []
    for p in pngs:
        a = np.asarray(Image.open(io.BytesIO(p)).convert("L").resize((16, 16), Image.Resampling.BOX)) / 255.0
        ink.append(float(a.mean()))
        area.append(float((a > 0.5).mean()))
    return {
        "ink_mass": statistics.fmean(ink),
        "stroke_area": statistics.fmean(area),
        "ink_sd": statistics.pstdev(ink),
    }


def _dataset_stats(strength: float, gain: float, n: int) -> dict[str, dict[str, float]]:
    from gateway.finetune.digits_style import bolden, digits16, png

    x, _ = digits16()
    return {
        "real": _stats([png(a) for a in x[:n]]),
        "bold": _stats([png(bolden(a, strength, gain)) for a in x[:n]]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--per-digit", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--strength", type=float, default=0.5)
    ap.add_argument("--gain", type=float, default=1.15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.per_class, args.steps, args.per_digit = 10, 60, 5
    quiet_logs()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from gateway import Gateway
    from gateway.config import Settings
    from gateway.finetune.digits_style import write_bold_digits
    from gateway.finetune.train import TrainConfig, train_lora
    from gateway.models.quality import class_consistency
    from gateway.policy import PolicySet
    from gateway.provenance import verify_image
    from gateway.provenance.keys import KeyStore, ProvenanceSettings

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        ds = write_bold_digits(
            Path(tmp) / "bold", per_class=args.per_class, strength=args.strength, gain=args.gain
        )
        t0 = time.perf_counter()
        res = train_lora(
            ds,
            TrainConfig(name="brand-bold", steps=args.steps, rank=args.rank, threads=args.threads),
            home=home,
            policy=PolicySet.default(),
            keys=KeyStore(home, ProvenanceSettings()),
            progress=True,
        )
        train_s = time.perf_counter() - t0
        os.environ["GATEWAY_HOME"] = str(home)
        out: dict[str, list[bytes]] = {"base": [], "adapter": []}
        targets: list[int] = []
        gen_s: dict[str, float] = {"base": 0.0, "adapter": 0.0}
        with Gateway(Settings.load(None, home=home)) as gw:
            for digit in range(10):
                targets += [digit] * args.per_digit
                for which, extra in (("base", {}), ("adapter", {"adapter": "brand-bold"})):
                    left, chunk = args.per_digit, 0
                    while left > 0:  # the default policy allows at most 8 images per call
                        n = min(8, left)
                        t1 = time.perf_counter()
                        r = gw.generate(
                            f"a handwritten {digit}", n=n, seed=1000 + 10 * digit + chunk, **extra
                        )
                        gen_s[which] += time.perf_counter() - t1
                        out[which] += [img.data for img in r.images]
                        left, chunk = left - n, chunk + 1
                    if which == "adapter" and digit == 0:
                        report = verify_image(r.images[0].data, home=home)
                        ft = report.c2pa.active.fine_tune if report.c2pa.active else None
        base, adapted = _stats(out["base"]), _stats(out["adapter"])
        data = _dataset_stats(args.strength, args.gain, 10 * args.per_class)
        span = data["bold"]["ink_mass"] - data["real"]["ink_mass"]
        result: dict[str, Any] = {
            "config": vars(args),
            "dataset": {"images": 10 * args.per_class, "digest": res.dataset_digest, **data},
            "train": {
                "seconds": round(train_s, 1),
                "steps": res.steps,
                "final_loss": round(res.final_loss, 5),
                "adapter_bytes": res.adapter_path.stat().st_size if res.adapter_path.exists() else None,
            },
            "outputs": {
                "per_digit": args.per_digit,
                "base": base,
                "adapter": adapted,
                "generate_seconds": {k: round(v, 2) for k, v in gen_s.items()},
            },
            "ink_mass_shift_pct": 100 * (adapted["ink_mass"] / base["ink_mass"] - 1),
            "stroke_area_shift_pct": 100 * (adapted["stroke_area"] / base["stroke_area"] - 1),
            "style_shift_toward_bold": (adapted["ink_mass"] - base["ink_mass"]) / span if span else None,
            "class_consistency": {
                "base": class_consistency(out["base"], targets),
                "adapter": class_consistency(out["adapter"], targets),
            },
            "c2pa_fine_tune": ft,
            "c2pa_names_adapter_and_digest": bool(
                ft and ft.get("adapter") == "brand-bold" and ft.get("dataset_digest") == res.dataset_digest
            ),
            "machine": machine(),
            "load_average": os.getloadavg(),
            "versions": versions("diffusion-gateway", "torch", "diffusers", "peft"),
        }
    cc = result["class_consistency"]
    result["done"] = bool(
        result["ink_mass_shift_pct"] > 0 and result["stroke_area_shift_pct"] > 0 and cc["adapter"] >= 0.9
    )
    print(
        f"train {result['train']['seconds']}s ({res.steps} steps, {10 * args.per_class} images); "
        f"ink mass {base['ink_mass']:.3f} -> {adapted['ink_mass']:.3f} "
        f"({result['ink_mass_shift_pct']:+.1f}%), "
        f"stroke area {base['stroke_area']:.3f} -> {adapted['stroke_area']:.3f} "
        f"({result['stroke_area_shift_pct']:+.1f}%), "
        f"style shift {result['style_shift_toward_bold']:.2f} of the "
        f"way to the bold set; class consistency base {cc['base']:.2f}, adapter {cc['adapter']:.2f}; "
        f"C2PA names adapter+digest: {result['c2pa_names_adapter_and_digest']}; done: {result['done']}"
    )
    emit(result, args.json)


if __name__ == "__main__":
    main()
