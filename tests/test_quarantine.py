"""Paid outputs are never discarded: any failure after the backend returned images quarantines them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import AsyncGateway, Gateway, MockBackend
from gateway.backends.base import BackendCall
from gateway.backends.mock import solid_png
from gateway.config import Settings
from gateway.errors import AuditWriteError, PolicyDenied
from gateway.policy import PolicySet
from gateway.policy.classifiers import register_classifier, unregister_classifier

PAID: list[bytes] = []


def paid_png(call: BackendCall) -> list[bytes]:
    out = [solid_png(256, 256, 100 + i) for i in range(call.request.n)]
    PAID[:] = out
    return out


class _Boom:
    def scores(self, images: list[bytes]) -> list[float]:
        return [0.99 for _ in images]


class _Held:
    """Flags the second image only (a light one)."""

    def scores(self, images: list[bytes]) -> list[float]:
        from PIL import Image

        return [0.9 if Image.open(io.BytesIO(b)).getpixel((0, 0))[0] > 100 else 0.0 for b in images]


@pytest.fixture
def classifiers() -> Iterator[None]:
    register_classifier("q-deny", "image", _Boom)
    register_classifier("q-held", "image", _Held)
    yield
    unregister_classifier("q-deny")
    unregister_classifier("q-held")


def _policy(tmp_path: Path, rule: str = "") -> PolicySet:
    p = tmp_path / "policy.yaml"
    p.write_text("version: 1\nrules:\n  - {id: limits, kind: limits, max_images: 4}\n" + rule)
    return PolicySet.load([p])


def _gateway(tmp_path: Path, policy: PolicySet, **kw: Any) -> Gateway:
    return Gateway(Settings.load(None, home=tmp_path / "home"), policy=policy,
                   backends={"local": MockBackend(paid_png)}, **kw)  # fmt: skip


def _break_watermark(monkeypatch: pytest.MonkeyPatch, gw: Gateway) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("watermark embedder crashed")

    monkeypatch.setattr("gateway.provenance.core.embed_pixels", boom)  # v1
    monkeypatch.setattr("gateway.provenance.core.Provenance._embed", boom)  # v2 (the default) and v1


def _break_c2pa(monkeypatch: pytest.MonkeyPatch, gw: Gateway) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise ModuleNotFoundError("No module named 'c2pa'", name="c2pa")

    monkeypatch.setattr("gateway.provenance.c2pa_sign.sign", boom)
    monkeypatch.setattr("gateway.provenance.c2pa_sign.sign_with_store", boom)  # what stamping calls


def _break_audit(monkeypatch: pytest.MonkeyPatch, gw: Gateway) -> None:
    def boom(*_a: Any, **_k: Any) -> Any:
        raise AuditWriteError("audit store is read-only")

    monkeypatch.setattr(gw._core.audit, "append_many", boom)


def _no_break(monkeypatch: pytest.MonkeyPatch, gw: Gateway) -> None:
    return None


OUTPUT_DENY = (
    "  - {id: deny-all, kind: output_classifier, classifier: q-deny, threshold: 0.5, action: deny}\n"
)

STEPS: dict[str, tuple[str, Callable[[pytest.MonkeyPatch, Gateway], None]]] = {
    "output-check": (OUTPUT_DENY, _no_break),
    "watermark": ("", _break_watermark),
    "c2pa": ("", _break_c2pa),
    "audit-write": ("", _break_audit),
}


def _audit_records(gw: Gateway) -> list[dict[str, Any]]:
    return list(gw._core.audit.iter_records())


@pytest.mark.parametrize("step", list(STEPS))
def test_a_failure_after_the_backend_call_quarantines_the_paid_outputs(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, classifiers: None
) -> None:
    rule, breaker = STEPS[step]
    with _gateway(tmp_path, _policy(tmp_path, rule)) as gw:
        breaker(monkeypatch, gw)
        with pytest.raises(Exception) as info:
            gw.generate("a handwritten 7", n=2)
        err = info.value
        if step == "output-check":
            assert isinstance(err, PolicyDenied)
        folder = tmp_path / "home" / "quarantine"
        (req,) = list(folder.iterdir())
        files = sorted(req.glob("*.png"))
        assert [f.read_bytes() for f in files] == PAID  # the raw provider bytes, all of them
        message = str(err) + str(getattr(err, "detail", ""))
        assert str(req) in message  # the error says where they are
        # The money was spent: the ledger settled it.
        (row,) = gw._core.ledger.report(by=["route"])
        assert row["settled"] == 1, row
        if step != "audit-write":  # the audit record names the files
            (failed,) = [r for r in _audit_records(gw) if r["event"] in ("failed", "denied")]
            names = {f["path"] for f in failed["quarantine"]["files"]}
            assert names == {str(f) for f in files}
            assert {f["sha256"] for f in failed["quarantine"]["files"]} == {
                hashlib.sha256(b).hexdigest() for b in PAID
            }


def test_images_held_by_a_classifier_are_kept_too(tmp_path: Path, classifiers: None) -> None:
    rule = "  - {id: held, kind: output_classifier, classifier: q-held, threshold: 0.5, action: quarantine}\n"
    with _gateway(tmp_path, _policy(tmp_path, rule)) as gw:
        res = gw.generate("a handwritten 7", n=2)
    assert len(res.images) == 1 and len(res.quarantined) == 1
    path = Path(res.quarantined[0]["path"])
    assert path.read_bytes() == PAID[1]


def test_async_shell_quarantines_as_well(tmp_path: Path, classifiers: None) -> None:
    import asyncio

    s = Settings.load(None, home=tmp_path / "home")

    async def main() -> None:
        backends = {"local": MockBackend(paid_png)}
        async with AsyncGateway(s, policy=_policy(tmp_path, OUTPUT_DENY), backends=backends) as gw:
            with pytest.raises(PolicyDenied, match="quarantine"):
                await gw.generate("a handwritten 7")

    asyncio.run(main())
    (req,) = list((tmp_path / "home" / "quarantine").iterdir())
    assert [p.read_bytes() for p in sorted(req.glob("*.png"))] == PAID
