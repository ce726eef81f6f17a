"""``python -m gateway.testing replicate|bedrock|openai|gemini --port N``: run a fake until Ctrl-C.

Prints the environment variables that point the real clients (and ``gateway generate``) at it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ._dummies import FAKE_AZURE_KEY, FAKE_GEMINI_KEY, FAKE_OPENAI_KEY
from ._http import FakeServer
from .bedrock import FakeBedrock
from .gemini import FakeGemini
from .openai import FakeOpenAI
from .replicate import FakeReplicate


def _replicate(args: Any) -> tuple[FakeServer, str]:
    fake = FakeReplicate(token=args.token, pending_polls=args.pending_polls, host=args.host, port=args.port)
    return fake, f"export REPLICATE_BASE_URL={{url}} REPLICATE_API_TOKEN={args.token or 'r8_fake'}"


def _bedrock(args: Any) -> tuple[FakeServer, str]:
    fake = FakeBedrock(
        regions=tuple(args.region or ("us-east-1", "us-west-2")), host=args.host, port=args.port
    )
    return fake, (
        "export AWS_ENDPOINT_URL_BEDROCK_RUNTIME={url} AWS_ACCESS_KEY_ID=testing "
        "AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1; unset AWS_BEARER_TOKEN_BEDROCK"
    )


def _openai(args: Any) -> tuple[FakeServer, str]:
    fake = FakeOpenAI(api_key=FAKE_OPENAI_KEY, azure_key=FAKE_AZURE_KEY, host=args.host, port=args.port)
    return fake, (
        f"export OPENAI_BASE_URL={{url}}/v1 OPENAI_API_KEY={FAKE_OPENAI_KEY}\n"
        f"export AZURE_OPENAI_ENDPOINT={{url}} AZURE_OPENAI_API_KEY={FAKE_AZURE_KEY} "
        "OPENAI_API_VERSION=2025-04-01-preview"
    )


def _gemini(args: Any) -> tuple[FakeServer, str]:
    fake = FakeGemini(api_key=FAKE_GEMINI_KEY, host=args.host, port=args.port)
    return fake, (
        f"export GOOGLE_GEMINI_BASE_URL={{url}} GEMINI_API_KEY={FAKE_GEMINI_KEY}; unset GOOGLE_API_KEY\n"
        "export GOOGLE_VERTEX_BASE_URL={url} GOOGLE_CLOUD_PROJECT=fake-project "
        "GOOGLE_CLOUD_LOCATION=us-central1"
    )


SERVICES: dict[str, Callable[[Any], tuple[FakeServer, str]]] = {
    "replicate": _replicate,
    "bedrock": _bedrock,
    "openai": _openai,
    "gemini": _gemini,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.testing", description=__doc__)
    parser.add_argument("service", choices=tuple(SERVICES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="replicate: the only Bearer token accepted")
    parser.add_argument(
        "--pending-polls", type=int, default=0, help="replicate: polls before a prediction ends"
    )
    parser.add_argument("--region", action="append", help="bedrock: accepted signing region (repeatable)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[:TIMES]",
        help="inject a fault at start (repeatable); more later with POST /__fake__/faults",
    )
    args = parser.parse_args(argv)
    fake, hint = SERVICES[args.service](args)
    for spec in args.fault:
        name, _, times = spec.partition(":")
        fake.inject(name, int(times or 1))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with fake:
        print(f"fake {args.service} listening on {fake.url}", flush=True)
        print(hint.format(url=fake.url), flush=True)
        stop.wait()
    print(f"served {len(fake.requests)} request(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
