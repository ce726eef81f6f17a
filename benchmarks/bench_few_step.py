"""Inference cost against quality: training-free solvers, the undistilled teacher under LCM, the student.

    python benchmarks/bench_few_step.py                  # 50 images per digit (500 per row)
    python benchmarks/bench_few_step.py --quick          # 5 per digit, no DDPM-1000 (smoke)
    python benchmarks/bench_few_step.py --json PATH
    python benchmarks/bench_few_step.py --only "student" --reuse EARLIER.json   # re-run some rows only

Every row draws the same digits from the same seeds (seed 1000 + 100*digit + batch, n=10 per call,
guidance 2.0 for the teacher, 256x256 PNG as the cards' default) through ``LocalBackend.generate``.
Quality, judged by :mod:`gateway.models.quality` (a classifier fitted on the real digits only):
class consistency, and the Fréchet distance to the 1,797 real digits on the judge's features (PCA-16;
lower is better). Class consistency comes with a 95 % Wilson interval (one image in 500 is 0.002,
so the interval says how far a row's figure could move on other seeds). DDPM 1000 runs on fewer
images (``--ddpm-per-digit``), which the table labels: its FD is noisier there.

Speed, three ways: *backend images/s* (the billed time: denoising + 256x256 upscale + PNG); *denoising
images/s* (only the UNet + scheduler loop, batch 100 at 16x16, the same weights, median of
``--repeats``): the number the distillation changes; and *end to end* (``Gateway.generate`` of one
image as ``gateway generate`` does it, with policy, ledger, watermark and C2PA; median of
``--e2e-rounds`` interleaved calls). Cost per 1,000 images = backend seconds per image x 1,000 x the
local card's device rate. Ratios are taken within this run, so load from other processes moves both
sides of a ratio alike.

``--only`` runs the rows whose label contains one of the given strings; ``--reuse`` copies the other
rows from an earlier result (quality is a function of the seeds and the weights, so it carries; each
carried row is marked ``carried_from`` and keeps its own images count, timing and load average).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import REPO, emit, machine, quiet_logs, versions

TEACHER, STUDENT = "tiny-digits", "tiny-digits-lcm"
# (label, model, scheduler, steps): the scheduler None = the student's own (LCM, guidance baked in).
ROWS: list[tuple[str, str, str | None, int]] = [
    ("DDPM 1000", TEACHER, "ddpm", 1000),
    ("DDIM 50", TEACHER, "ddim", 50),
    ("DDIM 20", TEACHER, "ddim", 20),
    ("DDIM 10", TEACHER, "ddim", 10),
    ("DPM++ 10 (tiny-digits default)", TEACHER, "dpm++", 10),
    ("DPM++ 5", TEACHER, "dpm++", 5),
    ("teacher under LCM, 4 steps (undistilled)", TEACHER, "lcm", 4),
    ("teacher under LCM, 2 steps (undistilled)", TEACHER, "lcm", 2),
    ("teacher under LCM, 1 step (undistilled)", TEACHER, "lcm", 1),
    ("student 8 steps", STUDENT, None, 8),
    ("student 4 steps", STUDENT, None, 4),
    ("student 2 steps", STUDENT, None, 2),
    ("student 1 step", STUDENT, None, 1),
]
SIZE, GUIDANCE, BATCH = 256, 2.0, 10


def backend_call(model: str, digit: int, n: int, scheduler: str | None, steps: int, seed: int) -> Any:
    from gateway.backends.base import BackendCall
    from gateway.types import ImageRequest

    guidance = GUIDANCE if model == TEACHER else None
    req = ImageRequest(prompt=f"a handwritten {digit}", n=n, width=SIZE, height=SIZE, seed=seed,
                       steps=steps, scheduler=scheduler, guidance_scale=guidance)  # fmt: skip
    return BackendCall(req, model, {}, 3600.0, "bench")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (sound near 0 and 1, unlike p +- 2 SE)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def quality_row(backend: Any, label: str, model: str, scheduler: str | None, steps: int,
                per_digit: int) -> dict[str, Any]:  # fmt: skip
    from gateway.models.quality import class_consistency, frechet_distance

    images: list[bytes] = []
    targets: list[int] = []
    wall = 0.0
    for digit in range(10):
        for b in range(0, per_digit, BATCH):
            n = min(BATCH, per_digit - b)
            call = backend_call(model, digit, n, scheduler, steps, seed=1000 + 100 * digit + b)
            t0 = time.perf_counter()
            res = backend.generate(call)
            wall += time.perf_counter() - t0
            images += res.images
            targets += [digit] * len(res.images)
    cc = class_consistency(images, targets)
    row = {
        "label": label, "model": model, "scheduler": scheduler or "lcm", "steps": steps,
        "images": len(images), "backend_s": wall, "backend_images_per_s": len(images) / wall,
        "class_consistency": cc,
        "cc_ci95": wilson_interval(round(cc * len(images)), len(images)),
        # A 16x16 covariance needs a few hundred images; below 100 the FD is mostly sampling noise.
        "fd": frechet_distance(images) if len(images) >= 100 else None,
    }  # fmt: skip
    print(f"  {label}: {len(images)} images {wall:.1f}s cc {row['class_consistency']:.3f} fd {row['fd']}",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


def denoise_loop(kind: str, steps: int, repeats: int) -> float:
    """Images/s of the bare sampling loop (batch 100, 16x16): teacher DPM++ with CFG, or the student."""
    import torch
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, LCMScheduler, UNet2DModel

    from gateway.backends.local import resolve_model_dir

    path = resolve_model_dir(TEACHER if kind == "teacher" else STUDENT)
    unet = UNet2DModel.from_pretrained(path / "unet", local_files_only=True, low_cpu_mem_usage=False).eval()
    labels = torch.arange(100) % 10
    times: list[float] = []
    for _ in range(repeats):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((100, 1, 16, 16), generator=gen)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if kind == "teacher":
                cfg = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True).config
                sched: Any = DPMSolverMultistepScheduler.from_config(cfg)
                sched.set_timesteps(steps)
                both = torch.cat([labels, torch.full_like(labels, 10)])
                for t in sched.timesteps:
                    eps_c, eps_u = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
                    x = sched.step(eps_u + GUIDANCE * (eps_c - eps_u), t, x).prev_sample
            else:
                sched = LCMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
                sched.set_timesteps(steps)
                for t in sched.timesteps:
                    x = sched.step(unet(x, t, class_labels=labels).sample, t, x, generator=gen).prev_sample
        times.append(time.perf_counter() - t0)
    return 100 / statistics.median(times)


def end_to_end(rounds: int) -> dict[str, Any]:
    """``Gateway.generate`` of one 256x256 image: tiny-digits' default vs the student at 2 steps."""
    from gateway import Gateway
    from gateway.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(Settings(home=Path(tmp) / "home", policies=(REPO / "policies/default.yaml",)))
        runs = {
            "tiny-digits (dpm++ 10, default)": {"model": TEACHER},
            "tiny-digits-lcm (2 steps)": {"model": STUDENT, "steps": 2},
        }
        for kw in runs.values():
            gw.generate("a handwritten 7", provider="local", seed=1, **kw)  # warm: load the model
        samples: dict[str, list[float]] = {k: [] for k in runs}
        names = list(runs)
        for i in range(rounds):
            for name in names[i % 2 :] + names[: i % 2]:
                t0 = time.perf_counter()
                gw.generate("a handwritten 7", provider="local", seed=100 + i, **runs[name])
                samples[name].append(time.perf_counter() - t0)
        gw.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"rounds": rounds, "median_s": med, "speedup": med[names[0]] / med[names[1]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 images per digit, no DDPM-1000, 3 repeats")
    ap.add_argument("--per-digit", type=int, default=50)
    ap.add_argument("--ddpm-per-digit", type=int, default=2, help="DDPM 1000 is ~70x DPM++ 10's time")
    ap.add_argument("--no-ddpm", action="store_true", help="skip DDPM 1000 (minutes of CPU on a loaded box)")
    ap.add_argument("--repeats", type=int, default=5, help="denoising-loop timings (median)")
    ap.add_argument("--e2e-rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 on a shared CPU: 2 threads spin-wait under load)")  # fmt: skip
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="run only rows whose label contains TEXT (repeatable)")  # fmt: skip
    ap.add_argument("--reuse", metavar="PATH", help="carry the rows not re-run from this earlier result")
    args = ap.parse_args()
    quiet_logs()
    import json

    import torch

    torch.set_num_threads(args.threads)

    from gateway.backends.local import LocalBackend, resolve_model_dir
    from gateway.catalog import Catalog

    per_digit = 5 if args.quick else args.per_digit
    repeats = 2 if args.quick else args.repeats
    card = {r.model: r.card for r in Catalog.default() if r.provider == "local"}
    rate = {m: c.pricing.usd_per_hour or Decimal(0) for m, c in card.items()}
    result: dict[str, Any] = {
        "bench": "few_step",
        "machine": machine(),
        "versions": versions("diffusion-gateway", "torch", "diffusers", "scikit-learn"),
        "torch_threads": torch.get_num_threads(),
        "student_training": json.loads((resolve_model_dir(STUDENT) / "training.json").read_text()),
        "per_digit": per_digit,
        "ddpm_per_digit": args.ddpm_per_digit,
        "repeats": repeats,
        "usd_per_hour": {m: str(v) for m, v in rate.items()},
    }
    backend = LocalBackend()
    for model in (TEACHER, STUDENT):  # load once, outside the timings
        backend.generate(backend_call(model, 0, 1, "ddim" if model == TEACHER else None, 2, 0))
    earlier: dict[str, Any] = {}
    if args.reuse:
        prev = json.loads(Path(args.reuse).read_text())
        earlier = {r["label"]: r for r in prev["rows"]}
        result["load_average_of_carried_rows"] = prev.get("machine", {}).get("loadavg")
    rows = []
    for label, model, sched, steps in ROWS:
        if steps >= 1000 and (args.quick or args.no_ddpm):
            continue
        pd = args.ddpm_per_digit if steps >= 1000 else per_digit
        label = label + (f" ({pd * 10} images)" if steps >= 1000 else "")
        if args.only and not any(t in label for t in args.only):
            if (old := earlier.get(label)) is not None:  # its own images count and timing go with it
                rows.append({**old, "carried_from": args.reuse})
            continue
        row = quality_row(backend, label, model, sched, steps, pd)
        per_image_s = row["backend_s"] / row["images"]
        row["usd_per_1000_images"] = float(Decimal(str(per_image_s * 1000 / 3600)) * rate[model])
        rows.append(row)
    backend.close()
    result["rows"] = rows
    teacher_ips = denoise_loop("teacher", 10, repeats)
    result["denoise_images_per_s"] = {"dpm++ 10 (teacher, CFG)": teacher_ips}
    for steps in (1, 2, 4, 8):
        result["denoise_images_per_s"][f"student {steps}"] = denoise_loop("student", steps, repeats)
    result["denoise_speedup_2_vs_dpm10"] = result["denoise_images_per_s"]["student 2"] / teacher_ips
    result["end_to_end"] = end_to_end(4 if args.quick else args.e2e_rounds)
    by = {(r["model"], r["scheduler"], r["steps"]): r for r in rows}
    ref = by.get((TEACHER, "dpm++", 10))
    s1, s2, t1 = by.get((STUDENT, "lcm", 1)), by.get((STUDENT, "lcm", 2)), by.get((TEACHER, "lcm", 1))
    result["targets"] = {
        "student_2_denoise>=4x_dpm10": result["denoise_speedup_2_vs_dpm10"] >= 4.0,
        "end_to_end_2_steps>=2x_default": result["end_to_end"]["speedup"] >= 2.0,
    }
    if ref is not None and s1 is not None and s2 is not None and t1 is not None:
        result["targets"].update({
            "student_1_cc>=0.97": s1["class_consistency"] >= 0.97,
            "student_1_fd<=1.25x_dpm10": s1["fd"] <= 1.25 * ref["fd"],
            "student_2_cc>=0.98": s2["class_consistency"] >= 0.98,
            "student_2_fd<=1.10x_dpm10": s2["fd"] <= 1.10 * ref["fd"],
            "student_1_beats_teacher_lcm_1": (
                s1["fd"] < t1["fd"] and s1["class_consistency"] >= t1["class_consistency"]
            ),
        })  # fmt: skip
    if ref is not None:
        result["fd_ratio_vs_dpm10"] = {r["label"]: r["fd"] / ref["fd"] for r in rows if r["fd"] is not None}
    emit(result, args.json)


if __name__ == "__main__":
    main()
