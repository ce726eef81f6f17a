"""``python -m gateway.testing replicate|bedrock --port N``: run a fake until Ctrl-C.

Prints the environment variables that point the real clients (and ``gateway generate``) at it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .bedrock import FakeBedrock
from .replicate import FakeReplicate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.testing", description=__doc__)
    parser.add_argument("service", choices=("replicate", "bedrock"))
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

    if args.service == "replicate":
        fake: FakeReplicate | FakeBedrock = FakeReplicate(
            token=args.token, pending_polls=args.pending_polls, host=args.host, port=args.port
        )
        hint = "export REPLICATE_BASE_URL={url} REPLICATE_API_TOKEN={token}"
    else:
        fake = FakeBedrock(
            regions=tuple(args.region or ("us-east-1", "us-west-2")), host=args.host, port=args.port
        )
        hint = (
            "export AWS_ENDPOINT_URL_BEDROCK_RUNTIME={url} AWS_ACCESS_KEY_ID=testing "
            "AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1; unset AWS_BEARER_TOKEN_BEDROCK"
        )
    for spec in args.fault:
        name, _, times = spec.partition(":")
        fake.inject(name, int(times or 1))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with fake:
        print(f"fake {args.service} listening on {fake.url}", flush=True)
        print(hint.format(url=fake.url, token=args.token or "r8_fake"), flush=True)
        stop.wait()
    print(f"served {len(fake.requests)} request(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
