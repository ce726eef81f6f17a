"""The scrubber caches the secret list, and still sees a credential variable change on the next call."""

from __future__ import annotations

import pytest

from gateway.audit.redact import REDACTED, redact, redact_value, register_secret


def test_a_changed_variable_is_scrubbed_on_the_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "first-value-123")
    assert redact("x first-value-123 y") == f"x {REDACTED} y"
    monkeypatch.setenv("HF_TOKEN", "second-value-456")
    assert redact("x second-value-456 y") == f"x {REDACTED} y"
    assert redact("x first-value-123 y") == "x first-value-123 y"  # no longer a secret
    monkeypatch.delenv("HF_TOKEN")
    assert redact("x second-value-456 y") == "x second-value-456 y"


def test_a_registered_secret_is_scrubbed_at_once() -> None:
    assert redact_value({"note": "uses zz-registered-77"}) == {"note": "uses zz-registered-77"}
    register_secret("zz-registered-77")
    assert redact_value({"note": "uses zz-registered-77"}) == {"note": f"uses {REDACTED}"}


def test_a_string_remembered_as_clean_is_scrubbed_once_its_value_becomes_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert redact("uses zz-later-999") == "uses zz-later-999"  # clean now, and remembered as clean
    monkeypatch.setenv("AWS_SESSION_TOKEN", "zz-later-999")
    assert redact("uses zz-later-999") == f"uses {REDACTED}"
