"""Dummy credentials for the loopback fakes: shaped like real ones so redaction tests mean something."""

FAKE_REPLICATE_TOKEN = "r8_FakeTokenForLoopbackTests0000"  # noqa: S105 - a dummy for the loopback fake
FAKE_AWS_KEY = "AKIAFAKEFAKEFAKEFAKE"
FAKE_AWS_SECRET = "fake-secret-access-key-for-loopback"  # noqa: S105 - a dummy for the loopback fake
