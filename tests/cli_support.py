"""The ``gateway`` command as a user runs it: a real subprocess, for the serve and dashboard tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

GATEWAY = [sys.executable, "-c", "from gateway.cli import main; main()"]


@contextmanager
def gateway_process(
    *args: str, env: Mapping[str, str] | None = None, url: str, exit_code: int | None = 0
) -> Iterator[str]:
    """Run ``gateway ARGS`` (a command that prints the URL it listens on first) in ``env`` (default:
    this process's); yield the part of that line matching the regex ``url``; afterwards SIGTERM it
    and require ``exit_code`` (None: any; the dashboard leaves SIGTERM's default action in place)."""
    import re

    with subprocess.Popen(
        [*GATEWAY, *args],
        env=dict(os.environ if env is None else env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found = re.search(url, line)
            assert found is not None, (line, proc.stderr.read() if proc.poll() is not None else "")
            yield found.group(0)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        if exit_code is not None:
            assert code == exit_code, proc.stderr.read() if proc.stderr else code


def gateway_serve(*args: str, env: dict[str, str] | None = None) -> AbstractContextManager[str]:
    """``gateway serve --port 0 ARGS`` with ``env`` added to this process's; yields the base URL."""
    return gateway_process(
        "serve", "--port", "0", *args, env={**os.environ, **(env or {})}, url=r"http://127\.0\.0\.1:\d+/v1"
    )
