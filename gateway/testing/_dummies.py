"""Dummy credentials for the loopback fakes: shaped like real ones so redaction tests mean something."""

FAKE_REPLICATE_TOKEN = "r8_FakeTokenForLoopbackTests0000"  # noqa: S105 - a dummy for the loopback fake
FAKE_AWS_KEY = "AKIAFAKEFAKEFAKEFAKE"
FAKE_AWS_SECRET = "fake-secret-access-key-for-loopback"  # noqa: S105 - a dummy for the loopback fake
FAKE_OPENAI_KEY = "sk-proj-FakeOpenAIKeyForLoopbackTests0000"
FAKE_AZURE_KEY = "fakeazurekey0123456789abcdef0123"
FAKE_GEMINI_KEY = "AIzaFakeGeminiKeyForLoopbackTests00000"
FAKE_GOOGLE_TOKEN = "ya29.FakeGoogleAccessTokenForLoopback"  # noqa: S105 - a dummy for the loopback fake
