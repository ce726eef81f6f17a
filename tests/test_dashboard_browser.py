"""The dashboard in a real browser: headless Debian Chromium driven through chromedriver (selenium).

Over a few hundred requests seeded through the real Gateway, the browser reads the totals off the page
and they must equal the ledger's; it filters the audit list, opens a record and sees its chain position
and the chain's verification; no console error is logged and no request leaves 127.0.0.1. Screenshots
go to $DASHBOARD_SCREENSHOTS (default: the test's temporary folder).

Without /usr/bin/chromium this skips loudly on a laptop and fails in CI (CI=true): .ci/browser installs it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from dashboard_support import Seeded, seed

from gateway.dashboard import create_app, open_sources
from gateway.dashboard.server import bind
from gateway.ledger import open_ledger

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1800",
)


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    try:
        import selenium  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        missing.append(f"python package {exc.name}")
    if not missing:
        return
    msg = f"BROWSER TEST NOT RUN: missing {', '.join(missing)} (run .ci/browser to install them)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    _need_browser()
    return seed(tmp_path_factory.mktemp("browser") / "home", n=300)


@pytest.fixture(scope="module")
def server(seeded: Seeded) -> Iterator[str]:
    """The dashboard on 127.0.0.1:<free port> in a thread (uvicorn); the socket listens before it returns,
    so the browser's first connection simply waits in the backlog: no polling, no sleeping."""
    import uvicorn

    src = open_sources(
        seeded.ledger_url,
        seeded.audit_url,
        checkpoint_dir=seeded.checkpoints,
        route_stats=seeded.home / "route_stats.json",
    )
    app = create_app(src, clock=lambda: seeded.end + dt.timedelta(seconds=1))
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(timeout=30)
    sock.close()
    src.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("DASHBOARD_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    os.environ["SE_AVOID_STATS"] = (
        "true"  # selenium-manager is never run (paths are explicit); belt and braces
    )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def metric(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).get_attribute("data-value"))


def test_dashboard_in_chromium(browser: Any, server: str, seeded: Seeded, shots: Path) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = browser
    d.get("about:blank")
    d.get_log("performance"), d.get_log("browser")  # drop Chromium's own start-up page from the logs
    # --- cost: the page's totals are the ledger's
    d.get(server + "/?range=all")
    with open_ledger(seeded.ledger_url) as led:
        totals = led.report(by=[])[0]
        teams = {r["team"]: r for r in led.report(by=["team"])}
    assert sum(seeded.outcomes.values()) == 300 and totals["requests"] >= 200
    assert Decimal(metric(d, '.kpi[data-metric="spent_usd"]')) == totals["spent_usd"] > 0
    for key in ("requests", "images", "refused"):
        assert int(metric(d, f'.kpi[data-metric="{key}"]')) == totals[key], key
    shown = d.find_element(By.CSS_SELECTOR, '.kpi[data-metric="spent_usd"] b').text
    assert Decimal(shown.replace("$", "").replace(",", "")) == totals["spent_usd"]  # what a person reads, too
    for row in d.find_elements(By.CSS_SELECTOR, "#spend-by-team tbody tr:not(.total)"):
        team = row.find_element(By.CSS_SELECTOR, "[data-key]").get_attribute("data-key")
        spent = row.find_element(By.CSS_SELECTOR, '[data-metric="spent_usd"]').get_attribute("data-value")
        assert Decimal(str(spent)) == teams[str(team)]["spent_usd"], team
    assert len(d.find_elements(By.CSS_SELECTOR, "#budgets .budget svg")) == 3
    d.save_screenshot(str(shots / "dashboard-cost.png"))

    # --- audit: filter through the form, then open a record's detail
    d.get(server + "/audit?range=all")
    banner = d.find_element(By.ID, "verify")
    assert banner.get_attribute("data-verified") == "true" and "Chain verified" in banner.text
    Select(d.find_element(By.NAME, "team")).select_by_visible_text("design")
    Select(d.find_element(By.NAME, "event")).select_by_visible_text("request")
    before = d.find_element(By.ID, "records")
    d.find_element(By.CSS_SELECTOR, "form.filters button").click()
    # the filtered page replaced the old one; mid-navigation Chromium may answer "node does not belong
    # to the document" instead of "stale element", so that answer means poll again
    WebDriverWait(d, 60, ignored_exceptions=(WebDriverException,)).until(staleness_of(before))
    rows = d.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    assert rows and all(r.find_elements(By.TAG_NAME, "td")[3].text == "design" for r in rows)
    d.save_screenshot(str(shots / "dashboard-audit.png"))
    link = rows[0].find_element(By.CSS_SELECTOR, "a[data-seq]")
    seq = int(str(link.get_attribute("data-seq")))
    link.click()
    assert urlsplit(d.current_url).path == f"/audit/{seq}"
    chain = d.find_element(By.ID, "chain")
    assert chain.get_attribute("data-record-ok") == "true"
    assert f"record {seq} of" in chain.text and "Merkle inclusion" in chain.text
    assert d.find_element(By.ID, "verify").get_attribute("data-verified") == "true"
    d.save_screenshot(str(shots / "dashboard-record.png"))

    d.get(server + "/providers?range=all")
    assert len(d.find_elements(By.CSS_SELECTOR, "#routes [data-route]")) == 3
    d.save_screenshot(str(shots / "dashboard-providers.png"))

    # --- nothing went wrong in the console, nothing left the machine
    errors = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    origin = urlsplit(server).netloc
    urls = set()
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.add(msg["params"]["request"]["url"])
    assert urls, "the performance log recorded no request at all"
    outside = {u for u in urls if not (u.startswith("data:") or urlsplit(u).netloc == origin)}
    assert not outside, outside


def test_offline_report_opens_without_a_network(
    browser: Any, server: str, shots: Path, tmp_path: Path
) -> None:
    """The downloaded report, opened from a file: it renders and asks for nothing at all."""
    from selenium.webdriver.common.by import By

    d = browser
    import httpx

    html = httpx.get(server + "/report.html?range=all", timeout=60).text
    path = tmp_path / "report.html"
    path.write_text(html)
    d.get_log("performance")  # drop what earlier pages logged
    d.get(path.as_uri())
    assert d.find_element(By.ID, "verify").get_attribute("data-verified") == "true"
    assert d.find_elements(By.CSS_SELECTOR, 'details[id^="rec-"]')
    d.save_screenshot(str(shots / "report.png"))
    fetched = set()
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            fetched.add(msg["params"]["request"]["url"])
    assert fetched <= {path.as_uri()}, fetched
    assert not [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_chromium_flags_exclude_the_network_helpers() -> None:
    """The flags that keep Chromium from phoning home are the ones the test launches with."""
    for flag in (
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        assert flag in FLAGS
    assert shutil.which("chromium") in (None, CHROMIUM) or os.path.exists(CHROMIUM)
