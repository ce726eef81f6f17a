"""YAML loading: FILE:LINE errors for people, no traceback for anything."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._yaml import load_model, load_yaml
from gateway.config import Settings
from gateway.errors import ConfigError


def test_duplicate_keys_are_refused_with_their_line() -> None:
    with pytest.raises(ConfigError, match=r"^f.yaml:3: duplicate key 'a'"):
        load_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")


def test_merge_keys_may_be_overridden_explicitly() -> None:
    data, _ = load_yaml("base: &r {id: a, x: 1}\nother: {<<: *r, id: b}\n", "f.yaml")
    assert data["other"] == {"id": "b", "x": 1}


def test_alias_bombs_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 7):
        bomb += f"{'abcdefgh'[i]}: &{'abcdefgh'[i]} [" + ", ".join([f"*{'abcdefgh'[i - 1]}"] * 9) + "]\n"
    with pytest.raises(ConfigError, match="expands past"):
        load_yaml(bomb, "bomb.yaml")


def test_control_characters_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^c.yaml:1:"):
        load_yaml("a: \x1f\n", "c.yaml")


def test_settings_errors_name_the_field_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "gateway.yaml"
    p.write_text("timeout_s: 10\nretry:\n  max_attempts: 99\n")
    with pytest.raises(ConfigError, match=r"gateway.yaml:3: retry.max_attempts"):
        Settings.load(p)
    with pytest.raises(ConfigError, match="empty"):
        load_model(Settings, p, text="")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_data_or_a_config_error(text: str) -> None:
    try:
        load_model(Settings, "fuzz.yaml", text=text)
    except ConfigError as exc:
        message = str(exc)
    else:
        message = "fuzz.yaml: loaded"
    assert message.startswith("fuzz.yaml:")
