"""Shared helpers for the benchmark scripts: percentiles, machine facts, JSON output, a quiet fake Bedrock.

Every ``bench_*.py`` of this harness prints a readable summary and, with ``--json PATH``, writes its
numbers as JSON so ``run_all.py`` can render docs/benchmarks.md without parsing prose.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Variables that could route boto3 or LiteLLM to a real account; removed for every benchmark run.
_AWS_UNSET = (
    "AWS_BEARER_TOKEN_BEDROCK",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_DEFAULT_REGION",
)


def pct(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``samples``: a value that was actually observed."""
    s = sorted(samples)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean in milliseconds from samples in seconds."""
    return {
        "n": len(samples_s),
        "p50_ms": pct(samples_s, 50) * 1e3,
        "p90_ms": pct(samples_s, 90) * 1e3,
        "p99_ms": pct(samples_s, 99) * 1e3,
        "mean_ms": statistics.fmean(samples_s) * 1e3 if samples_s else float("nan"),
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(*dists: str) -> dict[str, str | None]:
    return {d: version(d) for d in dists}


def emit(result: dict[str, Any], json_path: str | None) -> None:
    """Write ``result`` as JSON to ``json_path`` (for run_all.py); always echo a compact copy to stdout."""
    result = {**result, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, default=str, indent=1))


@contextlib.contextmanager
def bedrock_env(url: str) -> Iterator[None]:
    """The standard AWS variables pointing at a loopback fake, with dummy keys; restored afterwards."""
    from gateway.testing import FAKE_AWS_KEY, FAKE_AWS_SECRET

    saved = dict(os.environ)
    for name in _AWS_UNSET:
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID=FAKE_AWS_KEY,
        AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET,
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME=url,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # LiteLLM would otherwise fetch its price map at import
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def cached_fake_bedrock(*, unique: bool = True, **kwargs: Any) -> Any:
    """A FakeBedrock that renders each (size, seed) PNG once.

    The stock fake draws and compresses a fresh PNG per request; that server-side CPU shares the same
    two cores with the client being measured and only adds noise. With ``unique`` (the default) every
    answer still carries distinct bytes, as a real provider's do: a numbered ``tEXt`` chunk goes
    before ``IEND`` (microseconds), so the gateway's archive writes a new object per image instead of
    finding the last one already stored.
    """
    import itertools
    import struct
    import zlib

    from gateway.testing import FakeBedrock
    from gateway.testing._http import Fault

    counter = itertools.count()

    def numbered(png: bytes) -> bytes:
        text = b"bench\x00" + str(next(counter)).encode()
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text
        chunk += struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF)
        return png[:-12] + chunk + png[-12:]  # IEND is the last 12 bytes

    class CachedFakeBedrock(FakeBedrock):
        _cache: ClassVar[dict[tuple[int, int, int], str]] = {}

        def _png(self, w: int, h: int, seed: int, fault: Fault | None) -> str:
            if fault is not None:
                return super()._png(w, h, seed, fault)
            key = (w, h, seed)
            got = self._cache.get(key)
            if got is None:
                got = self._cache[key] = super()._png(w, h, seed, None)
            if not unique:
                return got
            return base64.b64encode(numbered(base64.b64decode(got))).decode()

    return CachedFakeBedrock(**kwargs)


def quiet_logs() -> None:
    """Silence library loggers (LiteLLM, botocore) so stdout stays the JSON summary."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    for name in ("LiteLLM", "litellm", "botocore", "urllib3", "httpx", "gateway"):
        logging.getLogger(name).setLevel(logging.ERROR)
