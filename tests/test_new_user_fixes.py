"""Small defects a new user hits first: settings overrides, chart ticks, README figures, card sources."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Settings
from gateway.dashboard import svg
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- item 4: settings overrides


def test_settings_overrides_are_validated_like_file_values(tmp_path: Path) -> None:
    s = Settings.load(None, home=str(tmp_path / "h"))
    assert isinstance(s.home, Path)
    assert s.home == tmp_path / "h"
    assert isinstance(Settings.load(None, policies=[str(tmp_path / "p.yaml")]).policies, tuple)


def test_settings_override_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="timeout_s"):
        Settings.load(None, timeout_s="soon")
    with pytest.raises(ConfigError, match="no_such_setting"):
        Settings.load(None, no_such_setting=1)


def test_gateway_accepts_settings_with_a_str_home(tmp_path: Path) -> None:
    from gateway import Gateway

    with Gateway(Settings.load(None, home=str(tmp_path / "h2"))) as gw:
        assert gw.settings.home == tmp_path / "h2"
    assert (tmp_path / "h2").is_dir()


# --------------------------------------------------------------------------- item 7: chart ticks


def _y_labels(chart: str) -> list[str]:
    return re.findall(r'class="ax">([^<]*)</text>', chart)


def test_cost_axis_ticks_have_no_float_noise() -> None:
    from gateway.dashboard.html import money

    chart = svg.stacked_bars(
        ["d1", "d2"], [("team", [Decimal("0.06"), Decimal("0.09")])], fmt=lambda v: money(v, short=True),
        title="cost",
    )  # fmt: skip
    labels = _y_labels(chart)[:5]
    assert labels == ["$0.00", "$0.025", "$0.05", "$0.075", "$0.1"], labels


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1e9"), places=6))
def test_ticks_are_short_exact_decimals(top: Decimal) -> None:
    ticks = svg.ticks(top)
    assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) == 5
    step = ticks[1] - ticks[0]
    assert all(b - a == step for a, b in itertools.pairwise(ticks))
    for t in ticks:
        # A nice number: at most 3 significant digits (1, 2, 2.5, 5 x 10^k divided by 4).
        assert len(t.normalize().as_tuple().digits) <= 4, t


def test_burndown_warning_line_is_exact() -> None:
    chart = svg.burndown(
        [(0.0, Decimal("0.01"))], limit=Decimal("0.1"), warn_at=0.75, projected=None, now_x=0.5,
        title="b", fmt=str, start_label="s", end_label="e",
    )  # fmt: skip
    assert "warn 0.075<" in chart


# --------------------------------------------------------------------------- item 6: README figures

_FIGURE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|µs|us|s)\b")


def test_readme_states_only_figures_the_benchmark_doc_shows() -> None:
    readme = (ROOT / "README.md").read_text()
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    assert "under a millisecond" not in readme
    shown = {(v, u.replace("us", "µs")) for v, u in _FIGURE.findall(bench)}
    near = [(m, readme[max(0, m.start() - 300) : m.end() + 300]) for m in _FIGURE.finditer(readme)]
    claims = [m for m, around in near if "overhead" in around]
    assert claims, "the README should state the measured overhead"
    for m in claims:
        assert (m.group(1), m.group(2).replace("us", "µs")) in shown, m.group(0)
    assert "docs/benchmarks.md" in readme


# --------------------------------------------------------------------------- item 5: card sources

# "Title — https://..." or "Title — gateway/... (shipped)" then optional notes; the date read is `as_of`.
_SOURCE = re.compile(
    r"^(?P<title>[^—]*\w[^—]*?) — (?P<where>https://[^\s;,()]+|gateway/[^\s;,()]+)(?P<note>.*)$"
)


def _sources(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        if "source" in node:
            found.append((path, node))
        for k, v in node.items():
            found.extend(_sources(v, f"{path}.{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found.extend(_sources(v, f"{path}[{i}]"))
    return found


@pytest.mark.parametrize("card", sorted((ROOT / "providers").glob("*.yaml")), ids=lambda p: p.name)
def test_every_card_source_names_a_public_document(card: Path) -> None:
    """Legal and finance review the cards: each fact cites a document they can open, not a project file."""
    entries = _sources(yaml.safe_load(card.read_text()))
    assert entries
    for where, node in entries:
        src = str(node["source"])
        assert "FACTS" not in src, f"{card.name}{where}: {src}"
        m = _SOURCE.match(src)
        assert m, f"{card.name}{where}: source must read 'Title — URL': {src!r}"
        if m.group("where").startswith("gateway/"):
            shipped = ROOT / m.group("where")
            assert shipped.exists(), f"{card.name}{where}: {m.group('where')} is not shipped"
        as_of = node.get("as_of")
        assert isinstance(as_of, dt.date), f"{card.name}{where}: as_of (the date read) missing"
