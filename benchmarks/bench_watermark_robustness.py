"""Robustness of watermark v2 against the web's real transformations (numbers go to docs/provenance.md).

    python benchmarks/bench_watermark_robustness.py            # full run (~1 h on 2 busy cores)
    python benchmarks/bench_watermark_robustness.py --quick    # CI-sized: 3 photos, 3 digits, few attacks
    ... [--fp-images N] [--json OUT.json] [--markdown OUT.md] [--no-fp] [--no-speed]

``--markdown`` writes the tables docs/provenance.md carries (TPR per attack, invisibility, false
positives, speed, each with the load average it ran at), so the page shows what this script printed.

Images
    photos: scikit-image's sample photographs (shipped in its wheel: astronaut, coffee, chelsea,
    rocket, camera, immunohistochemistry, hubble, retina) and scikit-learn's two (china, flower),
    at their native 300-1411 px, plus two upscaled to 1024 px (the size hosted models return);
    tiny-digits: real outputs of the shipped model (one per digit, 256x256, the size the gateway
    generates and marks them at), or simulated digits when torch is not installed.
Attacks
    Tier A and Tier B of the robustness goal, one deterministic instance each (random crop positions
    are seeded). "lossy round trip" is a proxy for a VAE round trip (no VAE weights ship offline):
    0.25x area downscale, bicubic upscale back, JPEG 60.
Metrics
    TPR per attack = images where `detect` found the v2 mark with the right nonce / images; an
    image v2 could not mark (its readback failed; the gateway then embeds v1) counts as a v2 miss
    everywhere, and "with v1 fallback" counts what the gateway's own mark (v2, else v1) gives.
    FPR = clean images detected / clean images (>= 1,000 by default), next to the
    analytic bound. PSNR / SSIM of the marked image, embed and detect CPU ms per megapixel on one
    core (thread CPU time, OpenCV and BLAS pinned to one thread).
"""

# ruff: noqa: E402 (the BLAS thread count must be set before numpy is imported)
from __future__ import annotations

import os

# One core means one BLAS thread too: numpy's small matrix products (the tile render) would otherwise
# start OpenBLAS workers whose spin-waiting doubles the process CPU time and inflates thread_time.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.provenance import watermark as W1
from gateway.provenance import watermark_v2 as V
from gateway.provenance._image import luma_of
from gateway.provenance.watermark_v2_detect import detect

Attack = Callable[[Image.Image], Image.Image]
KEY = W1.WatermarkKey(bytes(range(7, 39)))


# ----------------------------------------------------------------------------- attacks


def _codec(fmt: str, q: int) -> Attack:
    def run(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(buf, format=fmt, quality=q)
        out = Image.open(io.BytesIO(buf.getvalue()))
        out.load()
        return out

    return run


def _scale(fx: float, fy: float | None = None) -> Attack:
    def run(img: Image.Image) -> Image.Image:
        size = (max(8, round(img.width * fx)), max(8, round(img.height * (fy or fx))))
        return img.resize(size, Image.Resampling.BICUBIC if fx > 1 else Image.Resampling.LANCZOS)

    return run


def _crop(area: float, seed: int) -> Attack:
    def run(img: Image.Image) -> Image.Image:
        rng = np.random.default_rng(seed)
        side = area**0.5
        w, h = max(8, round(img.width * side)), max(8, round(img.height * side))
        x, y = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
        return img.crop((x, y, x + w, y + h))

    return run


def _rotate(deg: float) -> Attack:
    return lambda img: img.rotate(deg, resample=Image.Resampling.BICUBIC, expand=True)


def _enhance(kind: type[ImageEnhance._Enhance], f: float) -> Attack:
    return lambda img: kind(img).enhance(f)


def _noise(sigma: float) -> Attack:
    def run(img: Image.Image) -> Image.Image:
        a = np.asarray(img).astype(np.float64)
        a += np.random.default_rng(1).normal(0.0, sigma * 255.0, a.shape)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))

    return run


def _chain(*steps: Attack) -> Attack:
    def run(img: Image.Image) -> Image.Image:
        for s in steps:
            img = s(img)
        return img

    return run


TIER_A: dict[str, Attack] = {
    "none (PNG)": lambda img: img,
    "JPEG q80": _codec("JPEG", 80),
    "JPEG q50": _codec("JPEG", 50),
    "JPEG q30": _codec("JPEG", 30),
    "JPEG q20": _codec("JPEG", 20),
    "WebP q50": _codec("WEBP", 50),
    "WebP q20": _codec("WEBP", 20),
    "resize 0.3x": _scale(0.3),
    "resize 0.5x": _scale(0.5),
    "resize 0.75x": _scale(0.75),
    "resize 1.5x": _scale(1.5),
    "resize 3x": _scale(3.0),
    "aspect 0.8 (width)": _scale(0.8, 1.0),
    "aspect 1.2 (width)": _scale(1.2, 1.0),
    "crop 25% area (pos 1)": _crop(0.25, 1),
    "crop 25% area (pos 2)": _crop(0.25, 2),
    "crop 25% area (pos 3)": _crop(0.25, 3),
    "crop 50% area": _crop(0.5, 4),
    "rotate 90": _rotate(90),
    "rotate 180": _rotate(180),
    "rotate 270": _rotate(270),
    "rotate 3": _rotate(3),
    "rotate -10": _rotate(-10),
    "rotate 30": _rotate(30),
    "rotate -45": _rotate(-45),
    "flip horizontal": lambda img: img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flip vertical": lambda img: img.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "brightness 0.5": _enhance(ImageEnhance.Brightness, 0.5),
    "brightness 2.0": _enhance(ImageEnhance.Brightness, 2.0),
    "contrast 0.5": _enhance(ImageEnhance.Contrast, 0.5),
    "contrast 2.0": _enhance(ImageEnhance.Contrast, 2.0),
    "saturation 0.5": _enhance(ImageEnhance.Color, 0.5),
    "saturation 2.0": _enhance(ImageEnhance.Color, 2.0),
    "blur sigma 1": lambda img: img.filter(ImageFilter.GaussianBlur(1)),
    "blur sigma 2": lambda img: img.filter(ImageFilter.GaussianBlur(2)),
    "noise sigma 0.02": _noise(0.02),
    "noise sigma 0.05": _noise(0.05),
    "screenshot (0.6x + JPEG 80)": _chain(_scale(0.6), _codec("JPEG", 80)),
    "screenshot (1.25x + JPEG 80)": _chain(_scale(1.25), _codec("JPEG", 80)),
    "JPEG 80 + half crop + brightness 1.5": _chain(
        _codec("JPEG", 80), _crop(0.5, 5), _enhance(ImageEnhance.Brightness, 1.5)
    ),
}
TIER_B: dict[str, Attack] = {
    "crop 10% area": _crop(0.10, 6),
    "JPEG q10": _codec("JPEG", 10),
    "lossy round trip (0.25x area + up + JPEG 60)": _chain(_scale(0.5), _scale(2.0), _codec("JPEG", 60)),
}
QUICK = ("none (PNG)", "JPEG q50", "resize 0.5x", "rotate 30", "flip horizontal", "crop 25% area (pos 1)")


# ----------------------------------------------------------------------------- images


def photos(quick: bool) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = []
    try:
        import skimage.data as sd

        names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry",
                 "hubble_deep_field", "retina"]  # fmt: skip
        for n in names[:2] if quick else names:
            out.append((n, np.asarray(getattr(sd, n)())))
    except ImportError:
        pass
    from sklearn.datasets import load_sample_images

    for n, p in zip(("china", "flower"), load_sample_images().images, strict=True):
        out.append((n, np.asarray(p)))
    if quick:
        return out[:3]
    for n, a in list(out[:2]):
        img = Image.fromarray(a)
        f = 1024 / min(img.size)
        out.append((f"{n}@1024", np.asarray(img.resize((round(img.width * f), round(img.height * f)),
                                                       Image.Resampling.LANCZOS))))  # fmt: skip
    return out


def digits(count: int) -> list[tuple[str, np.ndarray]]:
    """Real tiny-digits outputs at 256x256 (what the gateway marks), or simulated ones without torch."""
    try:
        from gateway.backends.base import BackendCall
        from gateway.backends.local import LocalBackend
        from gateway.types import ImageRequest

        be = LocalBackend()
        out = []
        for d in range(count):
            req = ImageRequest(prompt=f"a handwritten {d}", n=1, seed=d, width=256, height=256, steps=10,
                               guidance_scale=2.0, scheduler="dpm++")  # fmt: skip
            data = be.generate(BackendCall(request=req, model="tiny-digits")).images[0]
            out.append((f"digit {d}", np.asarray(Image.open(io.BytesIO(data)))))
        return out
    except ImportError:  # pragma: no cover - torch missing: the simulated digits of bench_watermark
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from provenance_support import digit_image

        return [(f"sim digit {d}", np.asarray(digit_image(d))) for d in range(count)]


def clean_set(n: int, seed: int = 11) -> list[np.ndarray]:
    """Unmarked images of varied content and size: photo crops/resizes (some grey, some JPEG),
    noise of several kinds, gradients, geometric shapes, stripes and checkerboards, text-like
    blocks, flat fills, and unmarked digits."""
    rng = np.random.default_rng(seed)
    base = [a for _, a in photos(False)]
    try:  # textures and documents: the hardest content for a periodic-pattern detector
        import skimage.data as sd

        base += [np.asarray(getattr(sd, n)()) for n in ("grass", "gravel", "brick", "moon", "page", "coins")]
    except ImportError:
        pass
    out: list[np.ndarray] = []
    kinds = ["photo", "photo", "photo", "noise", "gradient", "shapes", "stripes", "flat"]
    while len(out) < n:
        kind = kinds[len(out) % len(kinds)]
        h, w = int(rng.integers(64, 769)), int(rng.integers(64, 769))
        if kind == "photo":
            p = base[int(rng.integers(len(base)))]
            ph, pw = p.shape[:2]
            ch, cw = int(rng.integers(min(64, ph), ph + 1)), int(rng.integers(min(64, pw), pw + 1))
            y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
            img = Image.fromarray(p[y0 : y0 + ch, x0 : x0 + cw])
            img = img.resize((w, h), Image.Resampling.BICUBIC)
            if rng.random() < 0.3:
                img = img.convert("L")
            if rng.random() < 0.3:
                img = _codec("JPEG", int(rng.integers(30, 95)))(img)
            a = np.asarray(img)
        elif kind == "noise":
            sigma = float(rng.uniform(2, 80))
            a = rng.normal(128, sigma, (h, w))
            if rng.random() < 0.5:
                import cv2

                a = cv2.GaussianBlur(a, (0, 0), float(rng.uniform(0.5, 6)))
        elif kind == "gradient":
            yy, xx = np.mgrid[0:h, 0:w]
            t = float(rng.uniform(0, np.pi))
            a = (np.cos(t) * xx + np.sin(t) * yy) / max(h, w) * 255 + rng.normal(0, 1, (h, w))
        elif kind == "shapes":
            from PIL import ImageDraw

            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
            dr = ImageDraw.Draw(img)
            for _ in range(int(rng.integers(3, 30))):
                x1, y1 = int(rng.integers(0, w)), int(rng.integers(0, h))
                box = (x1, y1, x1 + int(rng.integers(4, w)), y1 + int(rng.integers(4, h)))
                fill = tuple(int(v) for v in rng.integers(0, 256, 3))
                (dr.ellipse if rng.random() < 0.5 else dr.rectangle)(box, fill=fill)
            a = np.asarray(img)
        elif kind == "stripes":
            yy, xx = np.mgrid[0:h, 0:w]
            period = float(rng.uniform(2, 40))
            t = float(rng.uniform(0, np.pi))
            s = np.cos(2 * np.pi * (np.cos(t) * xx + np.sin(t) * yy) / period)
            a = 128 + 100 * (np.sign(s) if rng.random() < 0.5 else s)
        else:
            a = np.full((h, w), float(rng.integers(0, 256))) + rng.normal(0, 0.5, (h, w))
        out.append(np.clip(a, 0, 255).astype(np.uint8))
    return out


# ----------------------------------------------------------------------------- measurement


def _mode(a: np.ndarray) -> str:
    return "L" if a.ndim == 2 else ("RGBA" if a.shape[2] == 4 else "RGB")


def _found(a: np.ndarray, nonce: int) -> tuple[bool, int | None]:
    d = detect(luma_of(a, _mode(a)), [KEY])
    return (d.found and d.nonce == nonce), d.tag_errors


def _ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return None
    kw = {"channel_axis": 2} if a.ndim == 3 else {}
    return float(structural_similarity(a, b, data_range=255, **kw))


def robustness(
    sets: dict[str, list[tuple[str, np.ndarray]]], attacks: dict[str, Attack]
) -> dict[str, object]:
    """TPR of v2 per attack, and of what the gateway embeds (v2, or v1 where v2 does not read back)."""
    res: dict[str, object] = {}
    for set_name, images in sets.items():
        marked, quality = [], []
        for i, (name, a) in enumerate(images):
            a = a[..., :3] if a.ndim == 3 else a
            nonce = 0x1234567890ABCDEF ^ i
            emb = V.embed_pixels(a, _mode(a), KEY, nonce)
            ok = emb.readback_tag_errors is not None
            px, version = emb.pixels, 2
            if not ok:  # what Provenance.stamp does: fall back to v1
                px, version = W1.embed_pixels(a, _mode(a), KEY.payload(f"bench-{i}")).pixels, 1
            psnr = 10 * np.log10(255.0**2 / max(float(np.mean((px.astype(float) - a) ** 2)), 1e-12))
            ssim = _ssim(a, px)
            quality.append({"image": name, "size": list(a.shape[:2]), "version": version,
                            "psnr_db": round(float(psnr), 2),
                            "ssim": round(ssim, 4) if ssim is not None else None})  # fmt: skip
            marked.append((name, px, nonce, version))
            print(f"  [{set_name}] {name}: v{version} psnr={quality[-1]['psnr_db']}", file=sys.stderr)
        per_attack: dict[str, dict[str, object]] = {}
        for an, attack in attacks.items():
            hits = hits_any = 0
            misses = []
            for name, px, nonce, version in marked:
                att = np.asarray(attack(Image.fromarray(px)))
                if version == 2:
                    ok, _ = _found(att, nonce)
                else:
                    ok = False
                    found_v1 = W1.detect(luma_of(att, _mode(att)), [KEY]).found
                hits += ok
                hits_any += ok if version == 2 else found_v1
                if not ok:
                    misses.append(name)
            per_attack[an] = {"tpr": round(hits / len(marked), 3), "hits": hits, "n": len(marked),
                              "tpr_v2_or_v1_fallback": round(hits_any / len(marked), 3),
                              "misses": misses}  # fmt: skip
            print(f"  [{set_name}] {an}: {hits}/{len(marked)} (with v1 fallback {hits_any})", file=sys.stderr,
                  flush=True)  # fmt: skip
        res[set_name] = {"quality": quality, "attacks": per_attack}
    return res


def false_positives(n: int, seed: int = 11) -> dict[str, object]:
    imgs = clean_set(n, seed)
    hits, errors = 0, []
    t0 = time.process_time()
    for k, a in enumerate(imgs):
        d = detect(luma_of(a, _mode(a)), [KEY])
        hits += d.found
        if d.tag_errors is not None:
            errors.append(d.tag_errors)
        if k % 100 == 0:
            print(f"  [fp] {k}/{n} hits={hits}", file=sys.stderr, flush=True)
    return {
        "images": n,
        "seed": seed,
        "detected": hits,
        "min_tag_errors": min(errors) if errors else None,
        "median_tag_errors": float(np.median(errors)) if errors else None,
        "threshold": V.MAX_TAG_ERRORS,
        "bound_per_image": V.false_positive_bound(V.CANDIDATES, V.MAX_TAG_ERRORS),
        "cpu_s": round(time.process_time() - t0, 1),
    }


def speed(repeats: int = 3) -> dict[str, object]:
    """CPU ms per megapixel on one core, per photo resized to 1024x1024 (median of ``repeats``).

    Embedding costs more when the coarse cells do not read back (a second, finer attempt) and most
    when neither does (both attempts, then the caller's v1 fallback, not counted here); detection
    of a marked image stops at the first verified candidate, an unmarked one runs the whole search.
    """
    import cv2

    cv2.setNumThreads(1)
    per_image: dict[str, dict[str, object]] = {}
    for name, a in photos(False)[:6]:
        img = Image.fromarray(a[..., :3] if a.ndim == 3 else a).convert("RGB")
        px = np.asarray(img.resize((1024, 1024), Image.Resampling.LANCZOS))
        out: dict[str, list[float]] = {"embed": [], "detect_marked": [], "detect_unmarked": []}
        emb = V.embed_pixels(px, "RGB", KEY, 42)
        for _ in range(repeats):
            t = time.thread_time()
            emb = V.embed_pixels(px, "RGB", KEY, 42)
            out["embed"].append(time.thread_time() - t)
            for k, src in (("detect_marked", emb.pixels), ("detect_unmarked", px)):
                t = time.thread_time()
                detect(luma_of(src, "RGB"), [KEY])
                out[k].append(time.thread_time() - t)
        row: dict[str, object] = {k: round(1000 * float(np.median(v)) / 1.048576, 1) for k, v in out.items()}
        row["carries_v2"] = emb.readback_tag_errors is not None
        per_image[name] = row
        print(f"  [speed] {name}: {row} load={os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    summary: dict[str, object] = {
        f"{k}_median": float(np.median([float(str(r[k])) for r in per_image.values()]))
        for k in ("embed", "detect_marked", "detect_unmarked")
    }
    summary |= {f"{k}_max": max(float(str(r[k])) for r in per_image.values())
                for k in ("embed", "detect_marked", "detect_unmarked")}  # fmt: skip
    return {"unit": "CPU ms per megapixel (thread_time, OpenCV and BLAS 1 thread)", "per_image": per_image,
            "load_average_1min": round(os.getloadavg()[0], 2)} | summary  # fmt: skip


def _tpr(cell: dict[str, object]) -> str:
    return f"{float(str(cell['tpr'])):.2f} ({float(str(cell['tpr_v2_or_v1_fallback'])):.2f})"


def markdown(report: dict[str, object]) -> str:
    """The report as the Markdown tables of docs/provenance.md (nothing is edited by hand there)."""
    out: list[str] = []
    rob = report.get("robustness")
    if isinstance(rob, dict):
        sets = list(rob)
        out += ["| attack | " + " | ".join(f"{n}: v2 TPR (with v1 fallback)" for n in sets) + " |",
                "|---|" + "---|" * len(sets)]  # fmt: skip
        tier_b = set(report.get("tier_b", []))  # type: ignore[arg-type]
        attacks = list(rob[sets[0]]["attacks"])
        for an in attacks:
            if an in tier_b and (attacks.index(an) == 0 or attacks[attacks.index(an) - 1] not in tier_b):
                out.append("| **Tier B** |" + " |" * len(sets))
            out.append(f"| {an} | " + " | ".join(_tpr(rob[n]["attacks"][an]) for n in sets) + " |")
        out.append("")
        for n in sets:
            q = [r for r in rob[n]["quality"] if r["version"] == 2]
            psnr = [float(r["psnr_db"]) for r in q]
            ssim = [float(r["ssim"]) for r in q if r["ssim"] is not None]
            line = f"* {n}: {len(q)} of {len(rob[n]['quality'])} carry v2"
            if q:
                line += f"; PSNR {min(psnr):.2f}-{max(psnr):.2f} dB (mean {np.mean(psnr):.2f})"
            if ssim:
                line += f", SSIM {min(ssim):.4f}-{max(ssim):.4f} (mean {np.mean(ssim):.4f})"
            fb = [str(r["image"]) for r in rob[n]["quality"] if r["version"] != 2]
            out.append(line + (f"; v1 fallback: {', '.join(fb)}" if fb else ""))
        out.append(
            f"* load average (1 min) at the end of the robustness part: {report.get('load_robustness')}"
        )
        out.append("")
    fp = report.get("false_positives")
    if isinstance(fp, dict):
        out.append(f"False positives: **{fp['detected']} of {fp['images']}** clean images detected (seed "
                   f"{fp.get('seed')}); closest candidate {fp['min_tag_errors']} tag errors (median "
                   f"{fp['median_tag_errors']}) against a threshold of {fp['threshold']}; analytic bound "
                   f"per image {float(fp['bound_per_image']):.2e}; {fp['cpu_s']} s CPU.")  # fmt: skip
        out.append("")
    sp = report.get("speed_ms_per_mp_one_core")
    if isinstance(sp, dict):
        out += ["| photo at 1024x1024 | carries v2 | embed | detect (marked) | detect (unmarked) |",
                "|---|---|---|---|---|"]  # fmt: skip
        for name, r in sp["per_image"].items():
            out.append(f"| {name} | {'yes' if r['carries_v2'] else 'no'} | {r['embed']} | "
                       f"{r['detect_marked']} | {r['detect_unmarked']} |")  # fmt: skip
        out.append(f"| **median** | | {sp['embed_median']} | {sp['detect_marked_median']} | "
                   f"{sp['detect_unmarked_median']} |")  # fmt: skip
        out.append(
            f"| **max** | | {sp['embed_max']} | {sp['detect_marked_max']} | {sp['detect_unmarked_max']} |"
        )
        out.append("")
        out.append(f"{sp['unit']}; load average (1 min) {sp['load_average_1min']}.")
        out.append("")
    out.append(f"Wall time {report.get('wall_s')} s.")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fp-images", type=int, default=None)
    ap.add_argument("--no-fp", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-robust", action="store_true")
    ap.add_argument("--fp-seed", type=int, default=11, help="clean-set seed (split a long FP run)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="write the docs tables here")
    args = ap.parse_args()
    attacks = {**TIER_A, **TIER_B}
    if args.quick:
        attacks = {k: v for k, v in attacks.items() if k in QUICK}
    t0 = time.time()
    report: dict[str, object] = {"quick": args.quick, "tier_a": list(TIER_A), "tier_b": list(TIER_B)}
    if not args.no_robust:
        sets = {"photos": photos(args.quick), "tiny-digits (256x256)": digits(3 if args.quick else 10)}
        report["robustness"] = robustness(sets, attacks)
        report["load_robustness"] = round(os.getloadavg()[0], 2)
    if not args.no_fp:
        n = args.fp_images or (100 if args.quick else 1000)
        report["false_positives"] = false_positives(n, args.fp_seed)
    if not args.no_speed:
        report["speed_ms_per_mp_one_core"] = speed(1 if args.quick else 3)
    report["wall_s"] = round(time.time() - t0, 1)
    text = json.dumps(report, indent=1, sort_keys=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(report))
    print(text)


if __name__ == "__main__":
    main()
