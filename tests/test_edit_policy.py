"""Edit governance end to end on MockBackend routes: the input_image rule, classifiers on inputs,
routing by edit capability, edit pricing, provenance carried into the output, and the audit record.
A denied input costs nothing: no reservation, no backend call."""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from edit_support import catalog, edit_card, half_mask, jpeg, ledger_rows, plain_card, png

from gateway import AsyncGateway, Gateway, MockBackend
from gateway.config import Settings
from gateway.errors import InvalidRequestError, NoEligibleRoute, PolicyDenied
from gateway.policy import PolicySet, register_classifier, unregister_classifier

REQUIRE_C2PA = """
version: 1
rules:
  - id: inputs.signed
    kind: input_image
    require: c2pa
"""


def gateway(home: Path, policy: str | None = None, cards: Any = None, **settings: Any) -> Gateway:
    pol = PolicySet.from_text(policy) if policy else PolicySet.from_text("version: 1\nrules: []\n")
    return Gateway(Settings(home=home, **settings), policy=pol, catalog=cards or catalog(edit_card()),
                   backends={"a": MockBackend()})  # fmt: skip


def signed_input(home: Path) -> bytes:
    """An image the gateway itself produced: watermarked and C2PA-signed (development chain)."""
    with gateway(home) as gw:
        return gw.generate("a red square", seed=1).image.data


def test_unsigned_input_is_denied_under_require_c2pa_and_costs_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with gateway(home, REQUIRE_C2PA) as gw:
        backend = gw._core.backend("a")
        with pytest.raises(PolicyDenied) as err:
            gw.edit(png(), "make it blue", strength=0.5)
        assert err.value.rule_ids == ("inputs.signed",) and err.value.exit_code == 3
        assert "no valid C2PA manifest (found: absent)" in str(err.value)
        assert isinstance(backend, MockBackend) and backend.calls == []
        records = list(gw._core.audit.iter_records())
    assert ledger_rows(home) == 0  # nothing reserved
    denied = records[-1]
    assert denied["event"] == "denied" and denied["rule_ids"] == ["inputs.signed"]
    assert denied["edit_mode"] == "img2img" and denied["inputs"][0]["c2pa"] == "absent"
    assert denied["decision"]["inputs"][0]["sha256"] == denied["inputs"][0]["sha256"]


def test_signed_input_is_allowed_and_carried_as_an_ingredient(tmp_path: Path) -> None:
    home = tmp_path / "h"
    src = signed_input(home)
    with gateway(home, REQUIRE_C2PA) as gw:
        res = gw.edit(src, "make it blue", mask=half_mask((256, 256)), seed=3)
        rec = gw._core.audit.get(res.audit_seq or 0)
        report = gw._core.provenance.verify(res.image.data)
    found = res.decision.inputs[0]
    assert (found["c2pa"], found["watermark"], found["ai_generated"]) == ("valid", "ours", True)
    assert res.image.c2pa == "signed" and res.image.watermark == "embedded"
    assert report.c2pa.state == "valid"
    assert report.actions[:2] == ("c2pa.opened", "c2pa.edited")
    assert len(report.c2pa.ingredients) == 1  # the input's own manifest is kept inside ours
    assert report.c2pa.ingredients[0].generation is not None  # ... with its generation record
    assert rec is not None and rec["edit_mode"] == "inpaint"
    assert rec["inputs"][0]["sha256"] == found["sha256"] and rec["inputs"][0]["c2pa"] == "valid"
    import hashlib

    assert rec["mask_sha256"] == hashlib.sha256(half_mask((256, 256))).hexdigest()


def test_require_trusted_needs_a_configured_anchor(tmp_path: Path) -> None:
    home = tmp_path / "h"
    src = signed_input(home)
    rule = REQUIRE_C2PA.replace("require: c2pa", "require: trusted")
    with gateway(home, rule) as gw, pytest.raises(PolicyDenied, match="not signed by a trusted"):
        gw.edit(src, "make it blue")
    root = home / "keys" / "c2pa-root.pem"
    assert root.is_file()
    anchors = {"c2pa": {"trust_anchors": str(root)}}
    with gateway(home, rule, provenance=anchors) as gw:
        res = gw.edit(src, "make it blue")
    assert res.decision.inputs[0]["c2pa"] == "trusted"


def test_ai_generated_inputs_can_be_refused(tmp_path: Path) -> None:
    home = tmp_path / "h"
    src = signed_input(home)
    rule = "version: 1\nrules:\n  - {id: inputs.human, kind: input_image, allow_ai_generated: false}\n"
    with gateway(home, rule) as gw:
        with pytest.raises(PolicyDenied, match="AI-generated"):
            gw.edit(src, "make it blue")
        assert gw.edit(png(), "make it blue").decision.inputs[0]["ai_generated"] is False


@pytest.mark.parametrize(
    ("fields", "kwargs", "reason"),
    [
        ("max_width: 32", {}, "width 64 exceeds 32"),
        ("max_pixels: 1000", {}, "exceeds 1000 pixels"),
        ("max_bytes: 10", {}, "limit 10"),
        ("formats: [jpeg]", {}, "is image/png, allowed"),
        ("max_inputs: 1", {"extra": True}, "2 input images exceed 1"),
        ("modes: [img2img]", {"mask": True}, "mode 'inpaint' is not one of"),
    ],
)
def test_input_limits(tmp_path: Path, fields: str, kwargs: dict[str, Any], reason: str) -> None:
    rule = f"version: 1\nrules:\n  - {{id: inputs.limits, kind: input_image, {fields}}}\n"
    images = [png(), jpeg()] if kwargs.get("extra") else png()
    mask = half_mask() if kwargs.get("mask") else None
    with gateway(tmp_path / "h", rule) as gw, pytest.raises(PolicyDenied, match=reason):
        gw.edit(images, "x", mask=mask)
    assert ledger_rows(tmp_path / "h") == 0


def test_generations_are_not_affected_by_input_rules(tmp_path: Path) -> None:
    with gateway(tmp_path / "h", REQUIRE_C2PA) as gw:
        assert gw.generate("a boat").decision.inputs == ()


def test_inputs_go_through_the_configured_image_classifiers(tmp_path: Path) -> None:
    class RedFlag:
        def scores(self, images: list[bytes]) -> list[float]:
            from PIL import Image

            return [1.0 if Image.open(io.BytesIO(d)).convert("RGB").getpixel((0, 0)) == (255, 0, 0) else 0.0
                    for d in images]  # fmt: skip

    register_classifier("red-flag", "image", RedFlag)
    try:
        rule = "version: 1\nrules:\n  - {id: out.red, kind: output_classifier, classifier: red-flag}\n"
        with gateway(tmp_path / "h", rule) as gw:
            with pytest.raises(PolicyDenied, match="input image 0") as err:
                gw.edit(png(color=(255, 0, 0)), "x")  # quarantine rule, but an input cannot be held back
            assert err.value.rule_ids == ("out.red",)
            backend = gw._core.backend("a")
            assert isinstance(backend, MockBackend) and backend.calls == []
            assert gw.edit(png(), "x").images
    finally:
        unregister_classifier("red-flag")
    assert ledger_rows(tmp_path / "h") == 1


def test_routing_drops_routes_that_cannot_edit_with_a_reason(tmp_path: Path) -> None:
    cards = catalog(plain_card("gen"), edit_card("edit", modes=("img2img",), formats=["png"]))
    with gateway(tmp_path / "h", cards=cards) as gw:
        plan = gw.explain("x", images=(png(),))
        reasons = {c.route.key: c.reason for c in plan.routes.candidates}
        assert reasons["a/gen"] == "does not edit images (no capabilities.edit on its card)"
        assert reasons["a/edit"] is None
        assert gw.explain("x", images=(jpeg(),)).routes.ranked == ()
        with pytest.raises(NoEligibleRoute, match="edit mode 'inpaint' not supported"):
            gw.edit(png(), "x", mask=half_mask())
        with pytest.raises(NoEligibleRoute, match=r"outside 16\.\.4096"):
            gw.edit(png((8, 8)), "x")
        assert gw.edit(png(), "x").model == "edit"


def test_edit_pricing_comes_from_the_card(tmp_path: Path) -> None:
    price = {"unit": "image", "per_image": [{"usd": "0.05"}], "source": "test", "as_of": "2026-11-01"}
    with gateway(tmp_path / "h", cards=catalog(edit_card(pricing=price))) as gw:
        assert gw.generate("x").cost_usd == Decimal("0.01")
        res = gw.edit(png(), "x", n=2)
    assert res.cost_usd == res.estimated_cost_usd == Decimal("0.10")


def test_bad_input_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    with gateway(tmp_path / "h") as gw, pytest.raises(InvalidRequestError, match=r"truncated|damaged"):
        gw.edit(png()[:-40], "x")


def test_async_edit(tmp_path: Path) -> None:
    async def run() -> Any:
        pol = PolicySet.from_text(REQUIRE_C2PA)
        async with AsyncGateway(Settings(home=tmp_path / "h"), policy=pol, catalog=catalog(edit_card()),
                                backends={"a": MockBackend()}) as gw:  # fmt: skip
            with pytest.raises(PolicyDenied):
                await gw.edit(png(), "x")
            pol2 = PolicySet.from_text("version: 1\nrules: []\n")
        async with AsyncGateway(Settings(home=tmp_path / "h"), policy=pol2, catalog=catalog(edit_card()),
                                backends={"a": MockBackend()}) as gw:  # fmt: skip
            return await gw.edit([png(), png()], "x", mode="img2img", strength=0.2)

    res = asyncio.run(run())
    assert res.images and len(res.decision.inputs) == 2
