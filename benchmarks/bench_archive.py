"""Archive cost: what storing every returned image adds to a request, on a local directory and on S3.

    python benchmarks/bench_archive.py                # default sizes
    python benchmarks/bench_archive.py --quick --json out.json

Two measurements, each against a baseline taken in the same run:

1. ``put``: ``Archive.put`` of one PNG (object + metadata document) per store and image size, vs
   ``sha256`` of the same bytes (the floor every content-addressed write pays).
2. ``generate``: a full ``Gateway.generate`` (real policy, SQLite ledger and audit, watermark + C2PA,
   MockBackend returning one noise PNG) with the archive on a local directory and on S3, vs the same
   gateway with the archive switched off (a policy rule of kind ``archive`` allows that). The delta of
   the medians is the archive's added latency per image.

S3 is moto's ThreadedMotoServer on loopback (real boto3 HTTP + SigV4, no network latency): a real
bucket adds its round trips (two PUTs, one GET of the metadata document per new image).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, summary_ms

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def noise_png(side: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def start_s3() -> tuple[Any, str]:
    """moto's server in its own process (in-process it would compete with the gateway for the GIL)."""
    import socket
    import subprocess

    for k, v in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ[k] = v
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    import boto3

    client = boto3.client("s3")
    deadline = time.monotonic() + 120
    while True:
        try:
            client.create_bucket(Bucket="bench")
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)
    return proc, endpoint


def bench_put(stores: dict[str, Any], sizes: list[int], n: int) -> list[dict[str, Any]]:
    rows = []
    for side in sizes:
        blobs = [noise_png(side, i) for i in range(n)]
        floor = []
        for b in blobs:
            t0 = time.perf_counter()
            hashlib.sha256(b).hexdigest()
            floor.append(time.perf_counter() - t0)
        for name, archive in stores.items():
            warm = noise_png(64, side)
            archive.put(warm, kind="output", mime="image/png", request_id="w", team="t", now=NOW)
            samples = []
            for i, b in enumerate(blobs):
                t0 = time.perf_counter()
                archive.put(b, kind="output", mime="image/png", request_id=f"r{i}", team="t", now=NOW)
                samples.append(time.perf_counter() - t0)
            s = summary_ms(samples)
            rows.append({"store": name, "side": side, "bytes": len(blobs[0]), **s,
                         "sha256_p50_ms": summary_ms(floor)["p50_ms"]})  # fmt: skip
    return rows


def bench_generate(root: Path, urls: dict[str, str], n: int, side: int) -> dict[str, Any]:
    """One gateway per archive setting, called in turn, so all settings see the same machine load."""
    from contextlib import ExitStack

    from gateway import Gateway, MockBackend
    from gateway.backends.base import BackendCall
    from gateway.config import Settings

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from archive_support import NO_SLEEP, catalog

    pol = root / "allow-off.yaml"
    pol.write_text("version: 1\nrules:\n  - id: bench-off\n    kind: archive\n    allow_off: true\n")
    counter = iter(range(10**9))

    def fn(call: BackendCall) -> list[bytes]:
        return [noise_png(side, next(counter))]

    samples: dict[str, list[float]] = {name: [] for name in urls}
    with ExitStack() as stack:
        gws = {}
        for name, url in urls.items():
            s = Settings(home=root / f"home-{name}", policies=(pol,))
            s = s.model_copy(update={"archive": s.archive.model_copy(update={"url": url})})
            gw = stack.enter_context(
                Gateway(s, catalog=catalog(), backends={"a": MockBackend(fn)}, retry=NO_SLEEP)
            )
            gw.generate("warm up", width=side, height=side)
            gws[name] = gw
        for i in range(n):
            for name, gw in gws.items():
                t0 = time.perf_counter()
                gw.generate(f"a boat {i}", width=side, height=side)
                samples[name].append(time.perf_counter() - t0)
    out: dict[str, Any] = {name: summary_ms(v) for name, v in samples.items()}
    for name in urls:
        if name != "off":
            deltas = [a - b for a, b in zip(samples[name], samples["off"], strict=True)]
            out[name]["paired_delta_p50_ms"] = summary_ms(deltas)["p50_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    n_put, n_gen, sizes = (10, 8, [256, 1024]) if args.quick else (40, 30, [256, 512, 1024])
    from gateway.archive import Archive, LocalStore
    from gateway.archive.s3 import S3Store

    server, _endpoint = start_s3()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            stores = {"local": Archive(LocalStore(root / "arch")), "s3": Archive(S3Store("s3://bench/put"))}
            put = bench_put(stores, sizes, n_put)
            urls = {
                "off": "off",
                "local": (root / "garch").as_uri(),
                "s3": f"s3://bench/gen-{uuid.uuid4().hex[:6]}",
            }
            gen = bench_generate(root, urls, n_gen, 512)
    finally:
        server.kill()
        server.wait()
    added = {k: gen[k]["paired_delta_p50_ms"] for k in ("local", "s3")}
    ratio = {k: gen[k]["p50_ms"] / gen["off"]["p50_ms"] for k in ("local", "s3")}
    out = {"machine": machine(), "put": put, "generate_512px": gen, "added_p50_ms_per_image": added,
           "generate_ratio_vs_off": ratio}  # fmt: skip
    print("put (one image + metadata), p50 ms:")
    for r in put:
        print(f"  {r['store']:5s} {r['side']:>5d}px {r['bytes'] / 1024:8.0f} KiB  p50 {r['p50_ms']:7.2f}"
              f"  p90 {r['p90_ms']:7.2f}  (sha256 alone {r['sha256_p50_ms']:.2f})")  # fmt: skip
    print("generate, one 512 px image, p50 ms:")
    for k, v in gen.items():
        print(f"  archive {k:5s} p50 {v['p50_ms']:8.2f}  p90 {v['p90_ms']:8.2f}")
    for k in ("local", "s3"):
        print(f"  added by the {k} archive (median of paired deltas): {added[k]:+.2f} ms per image"
              f" (p50 x{ratio[k]:.3f} of archive off)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
