"""``FakeReplicate``: the Replicate HTTP API on loopback, close enough for the official client.

Speaks the wire format the real service does: ``POST /v1/models/{owner}/{name}/predictions`` (official
models) and ``POST /v1/predictions`` with a ``version`` answer **201**; ``Prefer: wait`` returns the
finished prediction when it is ready (``pending_polls=0``), otherwise ``starting`` and the prediction
finishes after that many ``GET /v1/predictions/{id}``; ``POST .../cancel`` cancels; errors are RFC 7807
``application/problem+json``. Outputs are real PNGs served from ``/files/...`` on the same origin.

The API requires ``Authorization: Bearer ...`` (a specific token if ``token`` is set). File downloads
must carry **no** Authorization header: each one is recorded in ``file_auth_headers`` and, with
``strict_files`` (default), refused with 400 so a leaking client fails loudly.

Request kinds for ``inject(..., on=...)``: ``create``, ``poll``, ``cancel``, ``file``, ``any``. Defaults:
``truncated_image`` hits ``file``; every other fault hits ``create``. ``content_filtered`` and
``prediction_failed`` make the next created prediction end ``failed`` (``error=`` sets the text);
``malformed_json`` cuts the JSON body (``keep_id=False`` cuts it before the prediction id).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..backends._wire import ASPECT_SIZES_1MP
from ._http import FakeServer, Fault, RecordedRequest, Reply, Reset, png_bytes, truncate
from ._replicate_files import check_file_inputs, input_image_size

PROBLEM = "application/problem+json"
NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."
_MODEL_CREATE = re.compile(r"^/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions$")
_PRED = re.compile(r"^/v1/predictions/(?P<id>[a-z0-9]+)(?P<cancel>/cancel)?$")
_FILE = re.compile(r"^/files/(?P<id>[a-z0-9]+)/(?P<index>\d+)\.png$")


def problem(status: int, title: str, detail: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply.json(status, {"title": title, "detail": detail, "status": status}, headers, PROBLEM)


class FakeReplicate(FakeServer):
    """A loopback Replicate API. ``predictions`` holds every prediction's JSON by id."""

    FAULTS: ClassVar[frozenset[str]] = frozenset(
        {"rate_limit", "server_error", "unavailable", "slow", "reset", "malformed_json", "truncated_image",
         "content_filtered", "prediction_failed"}
    )  # fmt: skip
    DEFAULT_ON: ClassVar[Mapping[str, str]] = {"truncated_image": "file"}

    def __init__(
        self,
        *,
        token: str | None = None,
        pending_polls: int = 0,
        predict_time: float = 1.25,
        strict_files: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        run_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``run_seconds`` switches to timed runs: a prediction starts running at its first poll, finishes
        ``run_seconds`` later by ``clock`` (share the client's clock to run in virtual time) and reports
        the time it actually ran as ``metrics.predict_time``, also when it is cancelled midway."""
        super().__init__(host, port)
        self.run_seconds = run_seconds
        self.clock = clock
        self._running_since: dict[str, float] = {}
        self.token = token
        self.pending_polls = pending_polls
        self.predict_time = predict_time
        self.strict_files = strict_files
        self.predictions: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.file_auth_headers: list[
            str
        ] = []  # Authorization values seen on file downloads (should stay empty)
        self._polls_left: dict[str, int] = {}
        self._outcome: dict[str, Fault] = {}
        self._seeds: dict[str, int] = {}
        self._state = threading.Lock()

    # ------------------------------------------------------------------ routing

    def classify(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        path = urlsplit(path).path
        if method == "POST" and (path == "/v1/predictions" or _MODEL_CREATE.match(path)):
            return "create", {}
        m = _PRED.match(path)
        if m is not None:
            return ("cancel" if m["cancel"] else "poll"), {"id": m["id"]}
        if method == "GET" and _FILE.match(path):
            return "file", {"authorization": headers.get("authorization")}
        return "other", {}

    def handle(self, request: RecordedRequest, fault: Fault | None) -> Reply | Reset:
        if request.kind == "file":
            return self._file(request, fault)
        denied = self._auth(request.headers)
        if denied is not None:
            return denied
        if fault is not None and fault.name in ("rate_limit", "server_error", "unavailable"):
            return _error_fault(fault)
        path = urlsplit(request.path).path
        if request.kind == "create":
            reply = self._create(request, path, fault)
        elif request.kind in ("poll", "cancel"):
            reply = self._get_or_cancel(request.kind, request.info["id"])
        else:
            reply = problem(404, "Not found", "The requested resource could not be found.")
        if fault is not None and fault.name == "malformed_json" and reply.status < 300:
            keep = 0.6 if fault.params.get("keep_id", True) else 0.0
            return Reply(reply.status, truncate(reply.body, keep) if keep else b'{"oops": ', reply.headers)
        return reply

    def _auth(self, headers: Mapping[str, str]) -> Reply | None:
        value = headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token or (self.token is not None and token != self.token):
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None

    # ------------------------------------------------------------------ predictions

    def _create(self, request: RecordedRequest, path: str, fault: Fault | None) -> Reply:
        try:
            body = request.json()
        except ValueError:
            return problem(400, "Bad request", "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return problem(422, "Input validation failed", "input is required")
        m = _MODEL_CREATE.match(path)
        if m is not None:
            model, version = f"{m['owner']}/{m['name']}", "hidden"
        else:
            version = str(body.get("version") or "")
            if not version:
                return problem(422, "Input validation failed", "version is required")
            model = "community/model"
        inp: dict[str, Any] = body["input"]
        if not isinstance(inp.get("prompt"), str) or not inp["prompt"]:
            return problem(422, "Input validation failed", "- input.prompt: prompt is required")
        bad_file = check_file_inputs(inp)  # edits: data: URIs must hold a real image (_replicate_files.py)
        if bad_file is not None:
            return problem(422, "Input validation failed", bad_file)
        pid = secrets.token_hex(13)
        base = self.url
        now = dt.datetime.now(dt.UTC).isoformat()
        pred: dict[str, Any] = {
            "id": pid, "model": model, "version": version, "status": "starting", "input": inp,
            "output": None, "error": None, "logs": "", "metrics": {}, "created_at": now,
            "started_at": None, "completed_at": None,
            "urls": {"get": f"{base}/v1/predictions/{pid}", "cancel": f"{base}/v1/predictions/{pid}/cancel"},
        }  # fmt: skip
        with self._state:
            self.predictions[pid] = pred
            self._polls_left[pid] = self.pending_polls
            if fault is not None and fault.name in ("content_filtered", "prediction_failed"):
                self._outcome[pid] = fault
            timed = self.run_seconds is not None
            if "wait" in request.headers.get("prefer", "") and self.pending_polls == 0 and not timed:
                self._finish(pid)
            snapshot = dict(pred)
        return Reply.json(201, snapshot)

    def _get_or_cancel(self, kind: str, pid: str) -> Reply:
        with self._state:
            pred = self.predictions.get(pid)
            if pred is None:
                return problem(404, "Not found", "The requested resource could not be found.")
            if kind == "cancel":
                if pred["status"] not in ("succeeded", "failed", "canceled"):
                    pred["status"] = "canceled"
                    pred["completed_at"] = dt.datetime.now(dt.UTC).isoformat()
                    since = self._running_since.get(pid)
                    if since is not None:
                        pred["metrics"] = {"predict_time": self.clock() - since}
                self.cancelled.append(pid)
            elif pred["status"] in ("starting", "processing") and self.run_seconds is not None:
                self._timed_poll(pid, pred)
            elif pred["status"] in ("starting", "processing"):
                left = self._polls_left.get(pid, 0)
                if left <= 0:
                    self._finish(pid)
                else:
                    self._polls_left[pid] = left - 1
                    pred["status"] = "processing"
                    pred["started_at"] = pred["started_at"] or dt.datetime.now(dt.UTC).isoformat()
            snapshot = dict(pred)
        return Reply.json(200, snapshot)

    def _timed_poll(self, pid: str, pred: dict[str, Any]) -> None:
        assert self.run_seconds is not None
        since = self._running_since.setdefault(pid, self.clock())
        if pred["status"] == "starting":
            pred["status"] = "processing"
            pred["started_at"] = dt.datetime.now(dt.UTC).isoformat()
        if self.clock() - since >= self.run_seconds:
            self._finish(pid)

    def _finish(self, pid: str) -> None:
        """Complete a prediction (caller holds the state lock)."""
        pred = self.predictions[pid]
        inp = pred["input"]
        seed = inp.get("seed")
        seed = int(seed) if isinstance(seed, int) else secrets.randbelow(2**31)
        now = dt.datetime.now(dt.UTC).isoformat()
        ran = self.predict_time if self.run_seconds is None else self.run_seconds
        metrics = {"predict_time": ran, "total_time": ran + 0.2}
        pred.update(
            started_at=pred["started_at"] or now,
            completed_at=now,
            logs=f"Using seed: {seed}\n",
            metrics=metrics,
        )
        outcome = self._outcome.pop(pid, None)
        if outcome is not None:
            default = NSFW_ERROR if outcome.name == "content_filtered" else "CUDA error: out of memory"
            pred.update(status="failed", error=str(outcome.params.get("error", default)))
            return
        count = inp.get("num_outputs", 1)
        count = count if isinstance(count, int) and 1 <= count <= 16 else 1
        pred.update(status="succeeded", output=[f"{self.url}/files/{pid}/{i}.png" for i in range(count)])
        self._seeds[pid] = seed

    def _size(self, inp: Mapping[str, Any]) -> tuple[int, int]:
        edited = input_image_size(inp)
        if edited is not None:  # an edit answers at its input's size
            return edited
        w, h = inp.get("width"), inp.get("height")
        if isinstance(w, int) and isinstance(h, int):
            return w, h
        return ASPECT_SIZES_1MP.get(str(inp.get("aspect_ratio", "1:1")), (1024, 1024))

    # ------------------------------------------------------------------ files

    def _file(self, request: RecordedRequest, fault: Fault | None) -> Reply:
        auth = request.headers.get("authorization")
        if auth is not None:
            with self._state:
                self.file_auth_headers.append(auth)
            if self.strict_files:
                return problem(400, "Bad request", "file downloads must not carry an Authorization header")
        m = _FILE.match(urlsplit(request.path).path)
        assert m is not None
        with self._state:
            pred = self.predictions.get(m["id"])
            ok = pred is not None and pred["status"] == "succeeded" and int(m["index"]) < len(pred["output"])
            size = self._size(pred["input"]) if pred else (0, 0)
            seed = self._seeds.get(m["id"], 0) + int(m["index"])
        if not ok:
            return problem(404, "Not found", "No such file.")
        data = png_bytes(size[0], size[1], seed)
        if fault is not None and fault.name == "truncated_image":
            data = truncate(data)
        return Reply(200, data, {"Cache-Control": "private"}, "image/png")


def _error_fault(fault: Fault) -> Reply:
    if fault.name == "rate_limit":
        after = fault.params.get("retry_after", 1)
        return problem(
            429, "Too Many Requests", f"Request was throttled. Your rate limit resets in ~{after}s.",
            {"Retry-After": str(after)},
        )  # fmt: skip
    if fault.name == "unavailable":
        return problem(
            int(fault.params.get("status", 503)),
            "Service Unavailable",
            "The service is temporarily unavailable.",
        )
    return problem(
        int(fault.params.get("status", 500)), "Internal Server Error", "Something went wrong on our side."
    )
