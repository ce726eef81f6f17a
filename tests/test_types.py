from __future__ import annotations

import subprocess
import sys

import pytest

import gateway
from gateway.errors import InvalidRequestError
from gateway.types import Context, GeneratedImage, ImageRequest

PUBLIC = [
    "AsyncGateway", "Attempt", "AuditWriteError", "Backend", "BackendCall", "BackendError", "BackendResult",
    "BudgetExceeded", "ConfigError", "ContentFiltered", "Context", "Decision", "Gateway", "GatewayError",
    "GeneratedImage", "GenerationResult", "ImageRequest", "InvalidRequestError", "MockBackend",
    "NoEligibleRoute", "Plan", "PolicyDenied", "ProvidersFailed", "RateLimited", "Settings", "Usage",
    "UsageError", "VerificationFailed", "__version__", "register_backend",
]  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert sorted(gateway.__all__) == sorted(PUBLIC)
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None


def test_import_gateway_does_not_import_heavy_modules() -> None:
    code = (
        "import sys, gateway, gateway.cli; "
        "heavy = {'torch', 'diffusers', 'boto3', 'replicate', 'c2pa', 'cv2', 'onnxruntime', 'sklearn'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "a 7", "n": 0}, "n"),
        ({"prompt": "a 7", "width": 10}, "width"),
        ({"prompt": "a 7", "height": 100000}, "height"),
        ({"prompt": "a 7", "scheduler": "warp-drive"}, "scheduler"),
        ({"prompt": "a 7", "seed": -1}, "seed"),
        ({"prompt": "a 7", "bogus": 1}, "bogus"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(options: dict[str, object], field: str) -> None:
    prompt = options.pop("prompt")
    with pytest.raises(InvalidRequestError, match=field):
        ImageRequest.build(str(prompt), **options)


def test_request_overrides_and_context_merge() -> None:
    base = ImageRequest.build("a 7", n=2)
    assert ImageRequest.build(base, seed=5).seed == 5
    assert ImageRequest.build(base) is base
    ctx = Context.build({"team": "design"}, user="ana", project=None)
    assert (ctx.team, ctx.user, ctx.project) == ("design", "ana", "default")
    with pytest.raises(InvalidRequestError, match="team"):
        Context.build(team="bad team!")


def test_generated_image_save_is_atomic_and_hashes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from gateway.backends.mock import solid_png

    data = solid_png(64, 48)
    img = GeneratedImage(data=data, width=64, height=48)
    path = img.save(tmp_path / "x.png")
    assert path.read_bytes() == data
    assert len(img.sha256) == 64
    assert img.pil().size == (64, 48)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp file left behind
