"""Governance overhead: the full Gateway against raw boto3 and LiteLLM, on one loopback fake Bedrock.

    python benchmarks/bench_overhead.py                 # 300 interleaved rounds, 512x512 Titan v2
    python benchmarks/bench_overhead.py --quick         # 40 rounds (smoke)
    python benchmarks/bench_overhead.py --profile       # + cProfile of the gateway path (top costs)

Three clients call the same FakeBedrock (Titan Image Generator v2 body, same size, same seed) in one
process, interleaved round-robin with a rotating start so none always goes first:

* **raw**: ``boto3`` ``invoke_model`` + ``json.loads`` + base64-decode of the images: the least code a
  user can write against Bedrock.
* **gateway**: ``Gateway.generate`` with the shipped default policy pack (no output classifiers),
  routing over the shipped provider cards, SQLite reservation + settlement, hash-chained SQLite audit
  record, an OpenTelemetry span (SDK tracer, no exporter), the image decoded and validated
  (``gateway.outputs.inspect_image``); remote watermark/C2PA off (``provenance.watermark_remote`` and
  ``c2pa_remote`` false), so no pixels are changed. The audit log is durable by default (SQLite
  ``synchronous=FULL``: an fsync per request).
* **gateway_no_archive**: the same with the output archive off (``archive: {url: off}``), to price
  the archive's object write and its fsync (on by default: every output is kept).
* **gateway_audit_normal**: the same with ``audit_url=sqlite:///...?synchronous=normal`` (WAL, no fsync
  per commit), to show what the durable audit costs on this disk.
* **gateway_audit_normal_no_otel**: the same again with no-op OpenTelemetry providers, to price the
  spans and metrics (attribute building and scrubbing still run: they happen before the API call).
* **litellm**: ``litellm.image_generation(model="bedrock/amazon.titan-image-generator-v2:0",
  aws_bedrock_runtime_endpoint=fake.url)``; skipped with a note when LiteLLM is not installed (it is
  not a dependency of the project: ``pip install litellm`` to include it).

* **fsync_floor** (not a client): one 4 KiB ``write`` + ``fdatasync`` on the same disk, interleaved
  like the clients: the least a sequential caller waits per request when every audit record is on disk
  before the result is returned.

Overhead = client percentile - raw percentile, for p50/p90/p99. The fake renders each PNG once and
serves cached bytes so its own CPU time does not drift between clients; each answer still carries
distinct bytes (a numbered PNG text chunk), as a real provider's do, so the archive stores a new
object per request.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import json
import os
import pstats
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    bedrock_env,
    cached_fake_bedrock,
    emit,
    machine,
    quiet_logs,
    summary_ms,
    version,
    versions,
)

MODEL = "amazon.titan-image-generator-v2:0"
PROMPT = "a lighthouse on a cliff at dusk, watercolour"
SEED = 1234


def titan_body(size: int) -> dict[str, Any]:
    return {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": PROMPT},
        "imageGenerationConfig": {"numberOfImages": 1, "width": size, "height": size, "seed": SEED},
    }


def make_raw(url: str, size: int) -> Callable[[], int]:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )

    def call() -> int:
        resp = client.invoke_model(
            modelId=MODEL,
            body=json.dumps(titan_body(size)).encode(),
            contentType="application/json",
            accept="application/json",
        )
        payload = json.loads(resp["body"].read())
        return len(base64.b64decode(payload["images"][0]))

    return call


def make_gateway(
    home: Path, size: int, audit_sync: str | None = None, tracing: bool = True, archive: bool = True
) -> tuple[Any, Callable[[], int]]:
    """The full Gateway; ``audit_sync`` overrides the audit log's SQLite ``synchronous`` (default FULL);
    ``tracing=False`` hands it no-op OpenTelemetry providers (to price the spans and metrics);
    ``archive=False`` switches the output archive off (to price its fsync'd writes)."""
    from gateway import Gateway
    from gateway.config import Settings

    components: dict[str, Any] = {}
    if not tracing:
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import NoOpTracerProvider

        from gateway.audit import Telemetry

        components["telemetry"] = Telemetry(NoOpTracerProvider(), NoOpMeterProvider())

    packs = [REPO / "policies/default.yaml"]
    if not archive:  # switching the archive off takes a policy that allows it (docs/archive.md)
        home.mkdir(parents=True, exist_ok=True)
        allow = home / "archive-off.yaml"
        allow.write_text(
            "version: 1\nname: bench-archive-off\nrules:\n"
            "  - {id: bench-archive-off, kind: archive, allow_off: true}\n"
        )
        packs.append(allow)
    settings = Settings(
        home=home,
        policies=tuple(packs),
        provenance={"watermark_remote": False, "c2pa_remote": False},
        audit_url=f"sqlite:///{home / 'audit.db'}?synchronous={audit_sync}" if audit_sync else None,
        **({} if archive else {"archive": {"url": "off"}}),
    )
    gw = Gateway(settings, **components)

    def call() -> int:
        res = gw.generate(PROMPT, provider="bedrock", model=MODEL, width=size, height=size, seed=SEED)
        return len(res.images[0].data)

    return gw, call


def make_litellm(url: str, size: int) -> Callable[[], int] | None:
    try:
        import litellm
    except ImportError:
        return None
    litellm.suppress_debug_info = True

    def call() -> int:
        r = litellm.image_generation(
            prompt=PROMPT,
            model=f"bedrock/{MODEL}",
            aws_bedrock_runtime_endpoint=url,
            aws_region_name="us-east-1",
            size=f"{size}x{size}",
            n=1,
        )
        return len(base64.b64decode(r.data[0].b64_json or ""))

    return call


def make_fsync_floor(folder: Path) -> Callable[[], int]:
    """One durable append of an audit-record-sized block (4 KiB, ``write`` + ``fdatasync``) to a file
    beside the gateway's stores: the least a sequential caller must wait for per request when every
    record is on disk before the result is returned. Interleaved with the clients, so it sees the same
    disk at the same moment; it is not a client and has no overhead row."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "fsync-floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"x" * 4096

    def call() -> int:
        os.write(fd, block)
        os.fdatasync(fd)
        return len(block)

    return call


NOT_CLIENTS = ("raw", "fsync_floor")  # baselines: no overhead row of their own


def interleave(
    clients: dict[str, Callable[[], int]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Round-robin: each round calls every client once, the start rotating by one each round.

    Returns wall samples per client, the process CPU seconds each client's calls used in total (the
    fake server runs in this process too, so its share is the same for every client and cancels out
    of the differences), and the kernel's share of that CPU (system time: file writes, fsync).
    """
    names = list(clients)
    out: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    kernel: dict[str, float] = dict.fromkeys(names, 0.0)
    perf = time.perf_counter

    def times() -> resource.struct_rusage:  # microsecond user/system split (os.times ticks at 10 ms)
        return resource.getrusage(resource.RUSAGE_SELF)

    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            fn = clients[name]
            c0, t0 = times(), perf()
            fn()
            out[name].append(perf() - t0)
            c1 = times()
            cpu[name] += (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
            kernel[name] += c1.ru_stime - c0.ru_stime
    return out, cpu, kernel


def time_fn(fn: Callable[[], object], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return summary_ms(samples)


def profile_gateway(call: Callable[[], int], n: int, top: int = 25) -> list[dict[str, Any]]:
    """cProfile over ``n`` gateway calls: the functions with the most own time (µs per call).

    cProfile inflates pure-Python code more than C code; read the list as a ranking, not as absolute
    costs (the un-profiled overhead is the figure of record).
    """
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        call()
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(file)}:{line}({func})",
                "calls_per_request": round(ncalls / n, 2),
                "own_us": round(tottime / n * 1e6, 1),
                "cum_us": round(cumtime / n * 1e6, 1),
            }
        )
    own = sorted(rows, key=lambda r: -r["own_us"])[:top]
    cum = sorted(
        (r for r in rows if "/gateway/" in r["function"] or r["function"].startswith("gateway/")),
        key=lambda r: -r["cum_us"],
    )[: top * 3]
    return [{"by": "own", "rows": own}, {"by": "cumulative (gateway functions)", "rows": cum}]


def _full_decode(data: bytes) -> None:
    """What inspect_image used to do for every PNG (inflate + unfilter every pixel), for comparison."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()


def _short(file: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--size", type=int, default=512, help="image side (a Titan v2 size: 512, 768, 1024)")
    ap.add_argument("--quick", action="store_true", help="40 rounds, 10 warm-up (smoke)")
    ap.add_argument("--profile", action="store_true", help="add a cProfile ranking of the gateway path")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.warmup = 40, 10
    quiet_logs()

    from gateway.outputs import inspect_image
    from gateway.testing import FAKE_AWS_KEY, FAKE_AWS_SECRET

    notes: list[str] = []
    result: dict[str, Any] = {
        "bench": "overhead",
        "machine": machine(),
        "versions": versions("diffusion-gateway", "boto3", "botocore", "litellm", "opentelemetry-sdk"),
        "size": args.size,
        "rounds": args.rounds,
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        cached_fake_bedrock(credentials={FAKE_AWS_KEY: FAKE_AWS_SECRET}) as fake,
        bedrock_env(fake.url),
    ):
        t0 = time.perf_counter()
        lite = make_litellm(fake.url, args.size)
        result["litellm_import_s"] = round(time.perf_counter() - t0, 2) if lite else None
        gw, gw_call = make_gateway(Path(tmp) / "home", args.size)
        gw2, gw2_call = make_gateway(Path(tmp) / "home2", args.size, audit_sync="normal")
        gw3, gw3_call = make_gateway(Path(tmp) / "home3", args.size, audit_sync="normal", tracing=False)
        gw4, gw4_call = make_gateway(Path(tmp) / "home4", args.size, archive=False)
        clients: dict[str, Callable[[], int]] = {
            "raw": make_raw(fake.url, args.size),
            "gateway": gw_call,
            "gateway_no_archive": gw4_call,
            "gateway_audit_normal": gw2_call,
            "gateway_audit_normal_no_otel": gw3_call,
            "fsync_floor": make_fsync_floor(Path(tmp) / "floor"),
        }
        if lite is None:
            notes.append("LiteLLM not installed: its column is skipped (pip install litellm to include it).")
        else:
            clients["litellm"] = lite
        sizes = {name: fn() for name, fn in clients.items()}  # first call: clients built, models loaded
        result["image_bytes"] = sizes
        interleave(clients, args.warmup)
        gc.collect()
        samples, cpu, kernel = interleave(clients, args.rounds)
        res = {name: summary_ms(s) for name, s in samples.items()}
        result["latency"] = res
        result["cpu_ms_per_call"] = {name: c / args.rounds * 1e3 for name, c in cpu.items()}
        result["kernel_cpu_ms_per_call"] = {name: c / args.rounds * 1e3 for name, c in kernel.items()}
        over: dict[str, dict[str, float]] = {}
        for name in clients:
            if name not in NOT_CLIENTS:
                over[name] = {q: res[name][f"{q}_ms"] - res["raw"][f"{q}_ms"] for q in ("p50", "p90", "p99")}
        result["overhead_ms"] = over
        cpu_ms = result["cpu_ms_per_call"]
        result["cpu_overhead_ms"] = {
            name: cpu_ms[name] - cpu_ms["raw"] for name in clients if name not in NOT_CLIENTS
        }
        if "litellm" in over:
            result["ratio_to_litellm"] = {
                q: (over["gateway"][q] / over["litellm"][q]) if over["litellm"][q] > 0 else None
                for q in ("p50", "p90", "p99")
            }
            lite_cpu = result["cpu_overhead_ms"]["litellm"]
            result["cpu_ratio_to_litellm"] = (
                result["cpu_overhead_ms"]["gateway"] / lite_cpu if lite_cpu > 0 else None
            )

        # What the gateway does that the raw call does not, measured alone (same objects, same moment).
        png = fake._png(args.size, args.size, SEED, None)
        raw_png = base64.b64decode(png)
        result["inspect_image"] = time_fn(lambda: inspect_image(raw_png, "bedrock"), 300)
        result["full_decode"] = time_fn(lambda: _full_decode(raw_png), 100)
        result["explain"] = time_fn(
            lambda: gw.explain(PROMPT, provider="bedrock", model=MODEL, width=args.size, height=args.size),
            300,
        )
        if args.profile:
            result["profile"] = profile_gateway(gw_call, max(50, args.rounds // 3))
        for g in (gw, gw2, gw3, gw4):
            g.close()
    p50 = over["gateway"]["p50"]
    goals = {"overhead_p50_ms<=0.5": p50 <= 0.5}
    if "litellm" in over:
        goals["overhead_p50<=litellm/3"] = p50 <= over["litellm"]["p50"] / 3
        cpu_ratio = result.get("cpu_ratio_to_litellm")
        goals["cpu_overhead<=litellm/3"] = cpu_ratio is not None and cpu_ratio <= 1 / 3
    result["goals"] = goals
    result["notes"] = notes
    result["litellm_version"] = version("litellm")
    emit(result, args.json)


if __name__ == "__main__":
    main()
