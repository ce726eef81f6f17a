"""Measure the watermark: robustness, speed and false positives (numbers go to docs/provenance.md).

    python benchmarks/bench_watermark.py            # everything (~3-5 min on 2 busy cores)
    python benchmarks/bench_watermark.py --only robust|speed|fp|compare [--fp-images N] [--json]

Robustness: 20 images at 256x256 (the default output size, the fewest copies of each bit):
8 crops of scikit-learn's two sample photos, 8 tiny-digits-like outputs (8x8 digits upscaled, grey,
mostly black, the hardest case), 4 synthetic (gradients, noise). Each is stamped with a fresh
request id, attacked, and verified. "bit acc" is the share of the 128 payload bits read correctly at
the geometry the detector settled on (aligned when nothing was found); "found" counts images where the
keyed tag verified, i.e. what `gateway verify` reports.

False positives: unmarked images (the two photos, random crops of them at several sizes, noise,
gradients, flat fills), verified against a random key in the default search; the minimum tag
errors seen is reported next to the threshold.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.provenance import watermark as W
from gateway.provenance._image import decode, luma_of
from gateway.provenance.thirdparty import detect_sdxl

Attack = Callable[[Image.Image], Image.Image]


def _codec(fmt: str, **kw: int) -> Attack:
    def run(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out = Image.open(io.BytesIO(buf.getvalue()))
        out.load()
        return out

    return run


def _resize_restore(f: float) -> Attack:
    def run(img: Image.Image) -> Image.Image:
        w, h = img.size
        small = img.resize((int(w * f), int(h * f)), Image.Resampling.BICUBIC)
        return small.resize((w, h), Image.Resampling.BICUBIC)

    return run


def _brightness(f: float) -> Attack:
    return lambda img: ImageEnhance.Brightness(img).enhance(f)


def _crop(left: int, top: int, right: int, bottom: int) -> Attack:
    return lambda img: img.crop((left, top, img.width - right, img.height - bottom))


ATTACKS: dict[str, Attack] = {
    "none (PNG)": lambda img: img,
    "JPEG q95": _codec("JPEG", quality=95),
    "JPEG q75": _codec("JPEG", quality=75),
    "JPEG q50": _codec("JPEG", quality=50),
    "WebP q80": _codec("WEBP", quality=80),
    "resize 0.5x + restore": _resize_restore(0.5),
    "resize 0.75x + restore": _resize_restore(0.75),
    "brightness x1.1": _brightness(1.1),
    "brightness x0.85": _brightness(0.85),
    "crop right/bottom 10%": _crop(0, 0, 26, 26),
    "crop 16 px each side": _crop(16, 16, 16, 16),
    "crop 13 px left, 21 top": _crop(13, 21, 0, 0),
    "JPEG q75 after crop 16 px": lambda img: _codec("JPEG", quality=75)(_crop(16, 16, 16, 16)(img)),
}


def robust_images(size: int = 256) -> list[tuple[str, Image.Image]]:
    from sklearn.datasets import load_digits, load_sample_images

    rng = np.random.default_rng(7)
    out: list[tuple[str, Image.Image]] = []
    for photo in load_sample_images().images:
        for _ in range(4):
            y = int(rng.integers(0, photo.shape[0] - size))
            x = int(rng.integers(0, photo.shape[1] - size))
            out.append(("photo", Image.fromarray(photo[y : y + size, x : x + size])))
    digits = load_digits().images
    for i in rng.choice(len(digits), 8, replace=False):
        g = Image.fromarray((digits[i] / 16 * 255).astype(np.uint8))
        g = g.resize((16, 16), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BICUBIC)
        out.append(("digits", g))
    xx = np.linspace(0, 255, size)
    out.append(("synthetic", Image.fromarray(np.tile(xx, (size, 1)).astype(np.uint8))))
    rgb = np.stack([np.tile(xx, (size, 1)), np.tile(xx[:, None], (1, size)), np.full((size, size), 90.0)], -1)
    out.append(("synthetic", Image.fromarray(rgb.astype(np.uint8))))
    out.append(("synthetic", Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))))
    out.append(
        ("synthetic", Image.fromarray(np.clip(rng.normal(128, 20, (size, size)), 0, 255).astype(np.uint8)))
    )
    return out


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bench_robust(size: int = 256) -> dict[str, object]:
    from gateway.provenance import Provenance, ProvenanceInfo

    pv = Provenance(Path(tempfile.mkdtemp()))
    key = pv.watermark_key(create=True)
    assert key is not None
    rows: dict[str, dict[str, list[float]]] = {a: {} for a in ATTACKS}
    psnr: dict[str, list[float]] = {}
    for n, (kind, img) in enumerate(robust_images(size)):
        info = ProvenanceInfo(f"bench-{n}", "bench", "bench", n, "0" * 64)
        st = pv.stamp(_png(img), info=info, watermark=True, c2pa=False)
        psnr.setdefault(kind, []).append(st.details["watermark"]["psnr_db"])
        marked = Image.open(io.BytesIO(st.data))
        bits = key.payload(info.request_id).bits
        for name, attack in ATTACKS.items():
            attacked = _png(attack(marked).convert(marked.mode))
            d = decode(attacked)
            y = luma_of(d.pixels, d.mode)
            det = W.detect(y, [key])
            thorough = det if det.found else W.detect(y, [key], thorough=True)
            acc = _accuracy_at(y, det.hypothesis or thorough.hypothesis or "aligned", bits)
            r = rows[name]
            r.setdefault(f"acc_{kind}", []).append(acc)
            r.setdefault("found", []).append(float(det.found))
            r.setdefault("found_thorough", []).append(float(thorough.found))
    table = {}
    for name, r in rows.items():
        table[name] = {k: (round(statistics.mean(v), 4), round(min(v), 4)) for k, v in r.items()}
    return {
        "size": size,
        "psnr_db": {k: round(statistics.mean(v), 2) for k, v in psnr.items()},
        "table": table,
    }


def _accuracy_at(y: np.ndarray, hypothesis: str, bits: np.ndarray) -> float:
    """Bit accuracy of all 128 payload bits under the detector's geometry label."""
    gain, shift, offset = 1.0, (0, 0), (0, 0)
    for part in hypothesis.split():
        key, _, val = part.partition("=")
        if key == "gain":
            gain = float(val)
        elif key in ("tile-shift", "offset"):
            a, b = (int(v) for v in val.strip("()").split(","))
            shift, offset = ((a, b), offset) if key == "tile-shift" else (shift, (a, b))
    s0 = W.block_s0(y, offset)
    read = (W.aggregate(W.soft_votes(s0, gain), shift) > 0).astype(np.uint8)
    return float(np.mean(read == bits))


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds: CPU time is the fairer figure on a shared, loaded machine."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _fmt(v: list[tuple[float, float]]) -> str:
    wall, cpu = statistics.median(w for w, _ in v), statistics.median(c for _, c in v)
    return f"{wall * 1000:.0f} ({cpu * 1000:.0f})"


def bench_speed(repeats: int = 9) -> dict[str, dict[str, str]]:
    from gateway.provenance import Provenance, ProvenanceInfo

    pv = Provenance(Path(tempfile.mkdtemp()))
    pv.stamp(
        _png(Image.new("RGB", (256, 256))),
        info=ProvenanceInfo("w", "b", "m", 0, ""),
        watermark=True,
        c2pa=True,
    )
    from sklearn.datasets import load_sample_images

    photo = Image.fromarray(load_sample_images().images[0])
    out = {}
    for size in (256, 512, 1024):
        data = _png(photo.resize((size, size), Image.Resampling.BICUBIC))
        runs: dict[str, list[tuple[float, float]]] = {}
        for i in range(repeats):
            info = ProvenanceInfo(f"speed-{size}-{i}", "bench", "bench", i, "0" * 64)
            embed = partial(pv.stamp, data, info=info, watermark=True, c2pa=False)
            embed_sign = partial(pv.stamp, data, info=info, watermark=True, c2pa=True)
            st = embed_sign()
            for name, fn in (
                ("embed", embed),
                ("embed_sign", embed_sign),
                ("verify_marked", partial(pv.verify, st.data)),
                ("verify_unmarked", partial(pv.verify, data)),
            ):
                runs.setdefault(name, []).append(_timed(fn))
        out[f"{size}x{size}"] = {k: _fmt(v) for k, v in runs.items()}
    return out


def fp_images(n: int) -> list[tuple[str, np.ndarray]]:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(11)
    photos = load_sample_images().images
    out: list[tuple[str, np.ndarray]] = [("photo", p) for p in photos]
    sizes = (256, 320, 384, 427)
    while len(out) < int(n * 0.6):
        p = photos[len(out) % 2]
        h = int(rng.choice(sizes))
        w = int(rng.choice((*sizes, 512, 640)))
        w = min(w, p.shape[1])
        y, x = int(rng.integers(0, p.shape[0] - h + 1)), int(rng.integers(0, p.shape[1] - w + 1))
        crop = p[y : y + h, x : x + w]
        if rng.random() < 0.3:
            crop = np.asarray(Image.fromarray(crop).convert("L"))
        out.append(("photo crop", crop))
    while len(out) < int(n * 0.8):
        s = int(rng.choice((256, 512)))
        kind = rng.integers(0, 3)
        if kind == 0:
            img = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
        elif kind == 1:
            img = np.clip(rng.normal(rng.uniform(40, 210), rng.uniform(2, 60), (s, s)), 0, 255).astype(
                np.uint8
            )
        else:
            img = np.clip(rng.normal(128, 30, (s // 8, s // 8, 3)), 0, 255).astype(np.uint8)
            img = np.asarray(Image.fromarray(img).resize((s, s), Image.Resampling.BICUBIC))
        out.append(("noise", img))
    while len(out) < n:
        s = int(rng.choice((256, 512)))
        yy, xx = np.mgrid[0:s, 0:s] / s
        a = rng.uniform(0, 2 * np.pi)
        g = np.cos(a) * xx + np.sin(a) * yy
        if rng.random() < 0.3:
            g = np.hypot(xx - rng.random(), yy - rng.random())
        g = (g - g.min()) / max(np.ptp(g), 1e-9)
        lo, hi = sorted(rng.uniform(0, 255, 2))
        img = (lo + (hi - lo) * g).astype(np.uint8)
        if rng.random() < 0.5:
            img = np.stack([img, img[::-1], np.full_like(img, int(rng.integers(0, 256)))], -1)
        out.append(("gradient", img))
    return out[:n]


def bench_fp(n: int) -> dict[str, object]:
    key = W.WatermarkKey(np.random.default_rng(5).bytes(32))
    found = 0
    sdxl = 0
    min_errors = W.TAG_BITS
    per_kind: dict[str, int] = {}
    errors: list[int] = []
    t = time.perf_counter()
    for kind, img in fp_images(n):
        mode = "L" if img.ndim == 2 else "RGB"
        d = W.detect(luma_of(img, mode), [key])
        found += d.found
        errors.append(d.tag_errors or W.TAG_BITS)
        min_errors = min(min_errors, d.tag_errors or W.TAG_BITS)
        per_kind[kind] = per_kind.get(kind, 0) + 1
        sdxl += detect_sdxl(img, mode).detected
    return {
        "images": n,
        "by_kind": per_kind,
        "false_positives": found,
        "sdxl_false_positives": sdxl,
        "min_tag_errors_seen": min_errors,
        "median_best_tag_errors": statistics.median(errors),
        "threshold_max_tag_errors": W.MAX_TAG_ERRORS_DEFAULT,
        "fp_bound_per_image": W.false_positive_bound(W.CANDIDATES_DEFAULT, W.MAX_TAG_ERRORS_DEFAULT),
        "seconds": round(time.perf_counter() - t, 1),
    }


def bench_compare() -> dict[str, object]:
    """invisible-watermark dwtDctSvd (chroma) at JPEG q75, 256x256, 48 bits: the method we did not pick."""
    t = time.perf_counter()
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    import_s = time.perf_counter() - t
    res: dict[str, list[float]] = {}
    bits = [int(b) for b in f"{0xB3EC907BB19E:048b}"]
    for kind, img in robust_images():
        rgb = np.asarray(img.convert("RGB"))[..., ::-1].copy()
        enc = WatermarkEncoder()
        enc.set_watermark("bits", bits)
        t = time.perf_counter()
        marked = enc.encode(rgb, "dwtDctSvd")
        res.setdefault("imwatermark_encode_ms", []).append((time.perf_counter() - t) * 1000)
        jpg = np.asarray(_codec("JPEG", quality=75)(Image.fromarray(marked[..., ::-1].copy())))[
            ..., ::-1
        ].copy()
        got = WatermarkDecoder("bits", 48).decode(jpg, "dwtDctSvd")
        res.setdefault(f"imwatermark_q75_acc_{kind}", []).append(
            float(np.mean(np.array(got) == np.array(bits)))
        )
    out: dict[str, object] = {k: round(statistics.mean(v), 3) for k, v in res.items()}
    out["imwatermark_import_s"] = round(import_s, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("robust", "speed", "fp", "compare"))
    ap.add_argument("--fp-images", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, object] = {}
    if args.only in (None, "robust"):
        results["robust"] = bench_robust()
    if args.only in (None, "speed"):
        results["speed"] = bench_speed()
    if args.only in (None, "fp"):
        results["fp"] = bench_fp(args.fp_images)
    if args.only == "compare":
        results["compare"] = bench_compare()
    if args.json:
        print(json.dumps(results))
    else:
        print(markdown(results))


def markdown(results: dict[str, object]) -> str:
    """The tables as they appear in docs/provenance.md."""
    lines: list[str] = []
    robust = results.get("robust")
    if isinstance(robust, dict):
        n = len(robust_images())
        lines += [
            f"Robustness at {robust['size']}x{robust['size']} (PSNR after embedding: "
            + ", ".join(f"{k} {v} dB" for k, v in robust["psnr_db"].items())
            + ")",
            "",
            "| attack | bit acc photo (mean / min) | bit acc digits | bit acc synthetic | found (default) "
            "| found (--thorough) |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in robust["table"].items():
            cells = [f"{r[k][0]:.3f} / {r[k][1]:.3f}" for k in ("acc_photo", "acc_digits", "acc_synthetic")]
            found = [f"{round(r[k][0] * n)}/{n}" for k in ("found", "found_thorough")]
            lines.append(f"| {name} | " + " | ".join(cells + found) + " |")
        lines.append("")
    speed = results.get("speed")
    if isinstance(speed, dict):
        lines += [
            "Median ms, wall (CPU), "
            + f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores",
            "",
            "| size | embed (decode+mark+PNG) | embed + C2PA sign | verify marked | verify unmarked |",
            "|---|---|---|---|---|",
        ]
        for size, r in speed.items():
            cells = " | ".join(r[k] for k in ("embed", "embed_sign", "verify_marked", "verify_unmarked"))
            lines.append(f"| {size} | {cells} |")
        lines.append("")
    for key in ("fp", "compare"):
        if key in results:
            lines.append(f"{key}: {json.dumps(results[key])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
