"""Planted OpenAI, Azure and Gemini keys never reach output, logs, spans, metrics, audit or errors.

The fakes echo a refused key back in their error message, as a careless provider might; a secret
pasted into a prompt must not surface either (only its hash is audited).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_support import in_memory_telemetry

from gateway import Gateway
from gateway.audit import get_logger
from gateway.backends.gemini import GeminiBackend
from gateway.backends.openai_images import AzureOpenAIBackend, OpenAIBackend
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.testing import FakeGemini, FakeOpenAI

OPENAI_KEY = "sk-proj-" + "Zq7Xv2Lm9Pw4" * 3
AZURE_KEY = "9f3c2b1a8e7d6c5b4a3928171615a0b1"
GEMINI_KEY = "AIzaSy" + "Kp3Lm8Qr2Tv6Wx9Yz1Ab4Cd7" + "Ef0Gh"
WRONG = ("sk-proj-" + "Wr0ngWr0ngWr0ng" * 2, "0000aaaa1111bbbb2222cccc3333dddd", "AIzaSy" + "Wr0ng" * 6)
PLANTED = (OPENAI_KEY, AZURE_KEY, GEMINI_KEY, *WRONG)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeOpenAI, FakeGemini]]:
    for name in ("GOOGLE_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "AZURE_OPENAI_AD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with FakeOpenAI(api_key=OPENAI_KEY, azure_key=AZURE_KEY) as oa, FakeGemini(api_key=GEMINI_KEY) as gm:
        env = {
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"{oa.url}/v1",
            "AZURE_OPENAI_ENDPOINT": oa.url,
            "AZURE_OPENAI_API_KEY": AZURE_KEY,
            "OPENAI_API_VERSION": "2025-04-01-preview",
            "GEMINI_API_KEY": GEMINI_KEY,
            "GOOGLE_GEMINI_BASE_URL": gm.url,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield oa, gm


def test_planted_keys_never_surface(
    fakes: tuple[FakeOpenAI, FakeGemini], log_stream: io.StringIO, tmp_path: Path
) -> None:
    telemetry, spans, reader = in_memory_telemetry()
    settings = Settings(home=tmp_path / "home")
    evidence: list[str] = []
    log = get_logger("app")
    routes = {
        "openai": "gpt-image-2",
        "azure-openai": "gpt-image-2",
        "google-gemini": "gemini-2.5-flash-image",
    }
    with Gateway(settings, telemetry=telemetry, sleep=lambda _s: None) as gw:
        for provider, model in routes.items():
            ok = gw.generate(f"a red bicycle {OPENAI_KEY}", provider=provider, model=model)
            evidence.append(json.dumps(ok.to_dict()))
        records = list(gw._core.audit.iter_records())
    # Wrong keys: every fake refuses them and echoes them back in its error text.
    wrong = {"openai": OpenAIBackend(api_key=WRONG[0]), "azure-openai": AzureOpenAIBackend(api_key=WRONG[1]),
             "google-gemini": GeminiBackend(api_key=WRONG[2])}  # fmt: skip
    with Gateway(settings, telemetry=telemetry, backends=wrong, sleep=lambda _s: None) as gw:
        for provider, model in routes.items():
            with pytest.raises(GatewayError) as err:
                gw.generate("a red bicycle", provider=provider, model=model)
            evidence += [
                str(err.value),
                repr(err.value),
                str(err.value.__cause__),
                str(err.value.__context__),
            ]
            log.error("generate failed", exc_info=err.value, provider=provider)
        records += list(gw._core.audit.iter_records())
        assert gw._core.audit.verify().ok
    assert sum(r["event"] == "request" for r in records) >= 3
    evidence.append(json.dumps(records))
    evidence += [s.to_json() for s in spans.get_finished_spans()]
    data = reader.get_metrics_data()
    assert data is not None
    evidence.append(data.to_json())
    evidence.append(log_stream.getvalue())
    for path in sorted(settings.home.rglob("*")):
        if path.is_file():
            evidence.append(path.read_bytes().decode("latin-1"))
    text = "\n".join(evidence)
    assert "generate_content gpt-image-2" in text  # the search did see the spans
    assert "Incorrect API key provided" in text  # ... and the providers' refusals
    for secret in PLANTED:
        assert secret not in text, f"planted secret {secret[:8]}... leaked"
