"""The OpenAI-compatible server, driven by the official ``openai`` client (sync and async).

Routes are MockBackends behind a small catalog (fast, deterministic); the same app is what
``gateway serve`` runs. What must hold: the client gets images and OpenAI's shapes; every error maps
to the documented status/code/headers and the client does not retry what cannot succeed; a key
fixes the context (and its budget), and its name is in every audit record; the traceparent is the
parent of our spans; the audit chain verifies after a concurrent run.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from dashboard_support import catalog
from PIL import Image
from server_support import NO_SLEEP, Served, serving, settings

from gateway import MockBackend
from gateway.audit import open_audit
from gateway.backends.base import BackendCall
from gateway.backends.mock import solid_png
from gateway.client import AsyncGateway
from gateway.errors import AuditWriteError, BackendUnavailable, ContentFiltered, GatewayError
from gateway.ledger import open_ledger
from gateway.server.errors import REPLIES, error_response


def _flaky(call: BackendCall) -> Any:
    raise BackendUnavailable("503 from upstream host 10.0.0.7 token r8_secretvalue", provider="gamma")


def _alpha(call: BackendCall) -> Any:
    if "forbidden-by-provider" in call.request.prompt:
        raise ContentFiltered("blocked by the provider's filter (category 7, request abc)", provider="alpha")
    return [solid_png(call.request.width or 64, call.request.height or 64)] * call.request.n


def _broken(call: BackendCall) -> Any:
    raise RuntimeError("internal detail /srv/secret/path")


GATE = threading.Event()


async def _slow(call: BackendCall) -> Any:
    """``... gate``: wait until the test opens the gate; ``... 120``: sleep that long."""
    last = call.request.prompt.split()[-1]
    if last == "gate":
        await asyncio.to_thread(GATE.wait, 60)
    else:
        await asyncio.sleep(float(last))
    return [solid_png(64, 64)] * call.request.n


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    backends = {"alpha": MockBackend(_alpha), "beta": MockBackend(_broken), "gamma": MockBackend(_flaky)}
    s = settings(tmp_path / "home", server={"aliases": {"gpt-image-1": "marketing", "art": "concept-art"}})
    with serving(s, catalog=catalog(), backends=backends, retry=NO_SLEEP, admin_key="") as srv:
        yield srv


def key(srv: Served, name: str, **kw: Any) -> str:
    kw.setdefault("team", "design")
    return srv.keys.create(name, **kw)[1]


def client(srv: Served, secret: str, **kw: Any) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    c = openai.OpenAI(base_url=srv.v1, api_key=secret, **kw)
    srv.clients.append(c)
    return c


def records(srv: Served) -> list[dict[str, Any]]:
    s = srv.state.gateway.settings
    with open_audit(s.resolved_audit_url, checkpoint_dir=s.home / "checkpoints") as log:
        return list(log.iter_records())


def test_generate_sync_returns_images_headers_and_audit(served: Served) -> None:
    secret = key(served, "design-app", project="web", use_cases=["concept-art", "general"])
    c = client(served, secret)
    raw = c.images.with_raw_response.generate(
        prompt="a red bicycle", model="alpha/a-1", n=2, size="64x64", user="u-42",
        extra_body={"team": "marketing", "style": "vivid", "moderation": "low"},  # claims are ignored
    )  # fmt: skip
    res = raw.parse()
    assert len(res.data) == 2
    assert res.created > 0
    img = Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json or "")))
    assert img.size == (64, 64)
    h = raw.headers
    assert h["x-gateway-route"] == "alpha/a-1"
    assert Decimal(h["x-gateway-cost-usd"]) == Decimal("0.04")
    rec = next(r for r in records(served) if r["seq"] == int(h["x-gateway-audit-seq"]))
    assert rec["event"] == "request"
    assert rec["request_id"] == h["x-request-id"]
    assert rec["team"] == "design"  # the key's team, not the body's claim
    assert rec["project"] == "web"
    assert rec["use_case"] == "concept-art"
    assert rec["key_name"] == "design-app"
    assert "key:design-app" in rec["tags"]
    assert "end-user:u-42" in rec["tags"]
    assert secret not in str(records(served))
    azure = httpx.post(
        served.v1 + "/images/generations",
        json={"prompt": "a red bicycle", "model": "a-1", "size": "64x64"},
        headers={"api-key": secret},
    )
    assert azure.status_code == 200
    assert len(azure.json()["data"]) == 1


def test_async_client_and_40_parallel_requests_then_the_chain_verifies(served: Served) -> None:
    secret = key(served, "batch")

    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=served.v1, api_key=secret, max_retries=0) as ac:
            calls = [
                ac.images.with_raw_response.generate(prompt=f"a bowl of lemons {i}", model="alpha/a-1")
                for i in range(40)
            ]
            return list(await asyncio.gather(*calls))

    raws = asyncio.run(run())
    assert all(len(r.parse().data) == 1 for r in raws)
    ids = {r.headers["x-request-id"] for r in raws}
    seqs = {int(r.headers["x-gateway-audit-seq"]) for r in raws}
    assert len(ids) == len(seqs) == 40
    s = served.state.gateway.settings
    with open_audit(s.resolved_audit_url, checkpoint_dir=s.home / "checkpoints") as log:
        assert log.verify(deep=True).ok
    with open_ledger(s.resolved_ledger_url) as led:
        row = led.report(by=["team"])[0]
        assert row["requests"] == 40
        assert row["spent_usd"] == Decimal("0.80")
        assert not led.verify()  # counters equal history


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict)
    return body


def test_every_error_maps_to_the_openai_envelope(served: Served) -> None:
    secret = key(served, "errs", use_cases=["general"])
    c = client(served, secret)
    # 401: missing, malformed, unknown key
    for bad in ("", "sk-not-ours", "gwk_000000000000_" + "x" * 43):
        raw = httpx.post(
            served.v1 + "/images/generations",
            json={"prompt": "x"},
            headers={"authorization": f"Bearer {bad}"} if bad else {},
        )
        assert raw.status_code == 401
        assert raw.json()["error"]["code"] == "invalid_api_key"
        assert raw.headers["x-request-id"]
    with pytest.raises(openai.AuthenticationError) as auth:
        client(served, "gwk_000000000000_" + "y" * 43).images.generate(prompt="x", model="alpha/a-1")
    assert auth.value.code == "invalid_api_key"
    # 400 policy denial with rule ids; recorded as denied
    with pytest.raises(openai.BadRequestError) as denied:
        c.images.generate(prompt="a paper boat", model="alpha/a-1")
    assert denied.value.code == "content_policy_violation"
    assert "no-boats" in denied.value.message
    assert _error(denied.value)["rule_ids"] == ["no-boats"]
    seq = int(denied.value.response.headers["x-gateway-audit-seq"])
    rec = next(r for r in records(served) if r["seq"] == seq)
    assert rec["event"] == "denied"
    assert rec["key_name"] == "errs"
    assert rec["request_id"] == denied.value.response.headers["x-request-id"]
    assert denied.value.response.headers["x-should-retry"] == "false"
    # 400 provider-side moderation: same code, the provider's text stays out
    with pytest.raises(openai.BadRequestError) as moderated:
        c.images.generate(prompt="a forbidden-by-provider bicycle", model="alpha/a-1")
    assert moderated.value.code == "content_policy_violation"
    assert "category 7" not in moderated.value.message
    # 400 invalid requests: values, size, model, response_format, body
    cases: list[tuple[dict[str, Any], str | None, str | None]] = [
        ({"n": 99}, "invalid_value", None),
        ({"size": "big"}, None, "size"),
        ({"model": "dall-e-9"}, "model_not_found", "model"),
        ({"response_format": "url"}, None, "response_format"),
    ]
    for extra, code, param in cases:
        with pytest.raises(openai.BadRequestError) as bad_req:
            c.images.generate(prompt="a red bicycle", **{"model": "alpha/a-1", **extra})
        if code:
            assert bad_req.value.code == code, extra
        if param:
            assert bad_req.value.param == param, extra
    assert httpx.post(
        served.v1 + "/images/generations", content=b"{not json", headers={"authorization": f"Bearer {secret}"}
    ).status_code == 400  # fmt: skip
    # 403: a use case the key may not use (through an alias)
    with pytest.raises(openai.PermissionDeniedError):
        c.images.generate(prompt="a red bicycle", model="gpt-image-1")
    # 502: every route failed; the provider's text (hosts, tokens) does not leak
    with pytest.raises(openai.InternalServerError) as failed:
        c.images.generate(prompt="a red bicycle", model="gamma/g-lite")
    assert failed.value.status_code == 502
    assert failed.value.code == "providers_failed"
    assert "10.0.0.7" not in str(failed.value.body)
    assert "r8_" not in str(failed.value.body)
    # 503: nothing can serve it (too large for every card); retrying cannot help
    with pytest.raises(openai.InternalServerError) as none:
        c.images.generate(prompt="a red bicycle", size="2048x2048")  # type: ignore[arg-type]
    assert none.value.status_code == 503
    assert none.value.response.headers["x-should-retry"] == "false"
    # 500: an unexpected error is generic
    with pytest.raises(openai.InternalServerError) as internal:
        c.images.generate(prompt="a red bicycle", model="beta/b-xl")
    assert internal.value.status_code == 500
    assert "/srv/secret" not in str(internal.value.body)
    # 404 / 405 from the router, same envelope
    assert httpx.get(served.v1 + "/nope").json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(served.v1 + "/images/generations").status_code == 405


def test_every_error_class_has_an_envelope_and_generic_ones_hide_their_text() -> None:
    import json

    for cls, reply in REPLIES.items():
        exc = cls.__new__(cls)
        Exception.__init__(exc, "secret detail /srv/x")
        for attr, value in (("rule_ids", ()), ("budget_ids", ()), ("attempts", ()), ("retry_after", None)):
            setattr(exc, attr, value)
        resp = error_response(exc)
        body = json.loads(bytes(resp.body))["error"]
        assert resp.status_code == reply.status, cls
        assert set(body) >= {"message", "type", "param", "code"}, cls
        if reply.message is not None and cls.__name__ not in ("PolicyDenied", "ProvidersFailed"):
            assert "secret detail" not in body["message"], cls
    audit = error_response(AuditWriteError("disk full at /var/lib/x"))
    assert audit.status_code == 503
    assert b"/var/lib" not in bytes(audit.body)
    assert error_response(GatewayError("??")).status_code == 500


def test_budget_refusal_is_a_429_the_client_does_not_retry_and_is_recorded_once(served: Served) -> None:
    secret = key(served, "capped", budget_usd=Decimal("0.05"), budget_period="day")
    c = client(served, secret, max_retries=3)  # would retry a plain 429 three times
    for _ in range(2):
        c.images.generate(prompt="a red bicycle", model="alpha/a-1")  # $0.02 each
    with pytest.raises(openai.RateLimitError) as refused:
        c.images.generate(prompt="a red bicycle", model="alpha/a-1")
    err = refused.value
    assert err.code == "budget_exceeded"
    assert err.response.headers["x-should-retry"] == "false"
    assert _error(err)["limit_ids"] == ["key:capped"]
    rid = err.response.headers["x-request-id"]
    refusals = [r for r in records(served) if r["event"] == "budget_refused"]
    assert [r["request_id"] for r in refusals] == [rid]  # once: the client did not retry
    s = served.state.gateway.settings
    with open_ledger(s.resolved_ledger_url) as led:
        totals = led.report(by=[])[0]
        assert totals["refused"] == 1
        assert totals["spent_usd"] == Decimal("0.04")
    # another key of the same team still has the team's budget
    other = client(served, key(served, "uncapped"))
    assert other.images.generate(prompt="a red bicycle", model="alpha/a-1").data


def test_rate_limit_is_a_429_with_retry_after(served: Served) -> None:
    c = client(served, key(served, "throttled-app", team="throttled"))
    c.images.generate(prompt="a red bicycle", model="alpha/a-1")
    with pytest.raises(openai.RateLimitError) as limited:
        c.images.generate(prompt="a red bicycle", model="alpha/a-1")
    assert limited.value.code == "rate_limit_exceeded"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert "x-should-retry" not in limited.value.response.headers


def test_keys_scope_models_use_cases_and_revocation(served: Served) -> None:
    design = key(served, "d", use_cases=["concept-art"])
    marketing = key(served, "m", team="marketing", use_cases=["marketing"])
    seen = {k: {m.id for m in client(served, k).models.list().data} for k in (design, marketing)}
    assert {"alpha/a-1", "gamma/g-lite", "art"} <= seen[design]
    assert "gpt-image-1" not in seen[design]
    assert seen[marketing] == {"alpha/a-1", "gpt-image-1"}  # the policy allows marketing alpha only
    m = client(served, marketing)
    res = m.images.with_raw_response.generate(prompt="a red bicycle", model="gpt-image-1")
    rec = next(r for r in records(served) if r["seq"] == int(res.headers["x-gateway-audit-seq"]))
    assert (rec["team"], rec["use_case"], rec["provider"]) == ("marketing", "marketing", "alpha")
    with pytest.raises(openai.InternalServerError) as blocked:
        m.images.generate(prompt="a red bicycle", model="gamma/g-lite")
    assert blocked.value.status_code == 503  # no route the marketing policy allows
    with pytest.raises(openai.PermissionDeniedError):
        client(served, design).images.generate(prompt="a red bicycle", model="gpt-image-1")
    served.keys.revoke("d")
    served.keys._cache.clear()
    with pytest.raises(openai.AuthenticationError):
        client(served, design).images.generate(prompt="a red bicycle", model="alpha/a-1")


def test_idempotency_key_header_replays_instead_of_paying_twice(served: Served) -> None:
    c = client(served, key(served, "idem"))
    calls = len(served.state.gateway._core.backend("alpha").calls)  # type: ignore[attr-defined]
    first, again = (
        c.images.with_raw_response.generate(
            prompt="a red bicycle", model="alpha/a-1", extra_headers={"Idempotency-Key": "order-1234"}
        )
        for _ in range(2)
    )
    assert len(served.state.gateway._core.backend("alpha").calls) == calls + 1  # type: ignore[attr-defined]
    assert again.headers.get("x-gateway-replayed") == "true"
    assert first.parse().data[0].b64_json == again.parse().data[0].b64_json
    s = served.state.gateway.settings
    with open_ledger(s.resolved_ledger_url) as led:
        assert led.report(by=[])[0]["spent_usd"] == Decimal("0.02")


def test_quality_and_size_reach_the_request(served: Served) -> None:
    from gateway.types import ImageRequest

    c = client(served, key(served, "q"))
    c.images.generate(prompt="a red bicycle", model="alpha/a-1", size="128x64", quality="auto", n=2)
    call = served.state.gateway._core.backend("alpha").calls[-1]  # type: ignore[attr-defined]
    assert (call.request.width, call.request.height, call.request.n) == (128, 64, 2)
    if "quality" in ImageRequest.model_fields:  # the gateway routes on quality: it is passed on
        with pytest.raises(openai.InternalServerError) as unmet:
            c.images.generate(prompt="a red bicycle", model="alpha/a-1", quality="high")
        assert unmet.value.code == "no_eligible_route"  # the test cards offer no quality choice


def test_traceparent_becomes_the_parent_of_our_spans(served: Served) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    c = client(served, key(served, "traced"))
    raw = c.images.with_raw_response.generate(
        prompt="a red bicycle",
        model="alpha/a-1",
        extra_headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    rec = next(r for r in records(served) if r["seq"] == int(raw.headers["x-gateway-audit-seq"]))
    assert rec["trace_id"] == trace_id


def test_health_ready_and_metrics(served: Served) -> None:
    assert httpx.get(served.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(served.base_url + "/readyz")
    assert ready.status_code == 200
    assert ready.headers["x-request-id"]
    client(served, key(served, "metered")).images.generate(prompt="a red bicycle", model="alpha/a-1")
    text = httpx.get(served.base_url + "/metrics").text
    assert "gateway_images_generated_total" in text
    assert 'gateway_server_requests_total{http_request_method="POST",http_response_status_code="200"' in text
    assert "http_server_request_duration" in text
    assert httpx.get(served.base_url + "/dashboard/").status_code == 404  # no admin key: no dashboard


def _edit_catalog() -> Any:
    """The test catalog's alpha route, able to edit (only built where the gateway edits)."""
    from dashboard_support import _model

    from gateway.catalog import Catalog, ModelCard, ProviderCard

    card = _model("a-1", "0.02").model_dump(mode="json", exclude_none=True)
    card["capabilities"]["edit"] = {"modes": ["img2img", "inpaint", "outpaint", "variation"], "max_inputs": 2}
    return Catalog([ProviderCard(provider="alpha", name="alpha", models=(ModelCard.model_validate(card),))])


def test_edits_follow_the_gateway(served: Served, tmp_path: Path) -> None:
    png = solid_png(64, 64)
    if not hasattr(AsyncGateway, "edit"):
        c = client(served, key(served, "editor"))
        with pytest.raises(openai.InternalServerError) as missing:
            c.images.edit(image=("in.png", png, "image/png"), prompt="make it red", model="alpha/a-1")
        assert missing.value.status_code == 501
        assert missing.value.response.headers["x-should-retry"] == "false"
        return
    s = settings(tmp_path / "edit-home")
    with serving(
        s, catalog=_edit_catalog(), backends={"alpha": MockBackend()}, retry=NO_SLEEP, admin_key=""
    ) as srv:
        c = client(srv, key(srv, "editor"))
        raw = c.images.with_raw_response.edit(
            image=[("a.png", png, "image/png"), ("b.png", png, "image/png")],
            mask=("m.png", png, "image/png"),
            prompt="make it red",
            model="alpha/a-1",
            extra_body={"mode": "inpaint"},
        )
        assert raw.parse().data
        call = srv.state.gateway._core.backend("alpha").calls[-1]  # type: ignore[attr-defined]
        assert len(call.request.images) == 2
        assert call.request.mask == png
        rec = next(r for r in records(srv) if r["seq"] == int(raw.headers["x-gateway-audit-seq"]))
        assert rec["key_name"] == "editor"
        with pytest.raises(openai.BadRequestError):
            c.images.edit(
                image=("x.png", b"not an image", "image/png"), prompt="make it red", model="alpha/a-1"
            )


def test_graceful_shutdown_finishes_in_flight_and_releases_cancelled(tmp_path: Path) -> None:
    s = settings(tmp_path / "home")
    slow = {"alpha": MockBackend(_slow)}
    outcome: list[Any] = []
    GATE.clear()
    with serving(s, graceful_s=5, catalog=catalog(), backends=slow, retry=NO_SLEEP, admin_key="") as srv:
        secret = key(srv, "slow")

        async def run() -> None:
            async with openai.AsyncOpenAI(base_url=srv.v1, api_key=secret, max_retries=0, timeout=120) as ac:
                calls = [
                    ac.images.generate(prompt=f"a red bicycle {last}", model="alpha/a-1")
                    for last in ("gate", 120)
                ]
                outcome.extend(await asyncio.gather(*calls, return_exceptions=True))

        t = threading.Thread(target=asyncio.run, args=(run(),))
        t.start()
        with open_ledger(s.resolved_ledger_url) as led:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # both calls in flight, each holding a reservation
                held = led._read(
                    lambda q: q("SELECT count(*) FROM ledger_requests WHERE status = 'reserved'", ())
                )
                if held[0][0] == 2:
                    break
                time.sleep(0.05)
        srv.server.should_exit = True  # what SIGTERM does
        time.sleep(0.3)
        GATE.set()  # the first call may finish now, inside the grace period; the other never will
        t.join(timeout=60)
    finished, cancelled = outcome
    assert not isinstance(finished, BaseException) and len(finished.data) == 1
    assert isinstance(cancelled, openai.APIConnectionError | openai.InternalServerError)
    with open_ledger(s.resolved_ledger_url) as led:
        rows = sorted(led._read(lambda q: q("SELECT status, reason FROM ledger_requests", ())))
    assert rows == [("released", "cancelled"), ("settled", None)]
