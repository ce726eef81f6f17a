"""Headless Chromium on the server's /dashboard, behind the admin key.

The dashboard is mounted into the API server (same process, same stores): without the key it shows
only its token form; ``?token=<admin key>`` sets a session cookie scoped to /dashboard and drops the
token from the address bar; the figures are the ledger's, and every link stays under /dashboard.
API keys do not open it.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from dashboard_support import catalog
from server_support import NO_SLEEP, Served, serving, settings
from test_dashboard_browser import _need_browser, browser, metric, shots  # noqa: F401  (fixtures)

from gateway import MockBackend
from gateway.ledger import open_ledger

ADMIN = "admin-" + "k" * 32


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _need_browser()
    s = settings(tmp_path_factory.mktemp("srv") / "home")
    with serving(
        s, catalog=catalog(), backends={"alpha": MockBackend()}, retry=NO_SLEEP, admin_key=ADMIN
    ) as srv:
        secret = srv.keys.create("web", team="design")[1]
        srv.clients.append(c := openai.OpenAI(base_url=srv.v1, api_key=secret, max_retries=0))
        for i in range(6):
            c.images.generate(prompt=f"a red bicycle {i}", model="alpha/a-1", n=1 + i % 2)
        srv.api_secret = secret  # type: ignore[attr-defined]
        yield srv


@pytest.fixture(scope="module")
def server(served: Served) -> str:
    return served.base_url


def test_dashboard_behind_the_admin_key(browser: Any, served: Served, shots: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    d = browser
    d.get(served.base_url + "/dashboard/")
    assert "needs its token" in d.page_source
    d.get(served.base_url + f"/dashboard/?token={served.api_secret}")  # type: ignore[attr-defined]
    assert "wrong token" in d.page_source  # an API key is not the admin key
    d.get_log("browser")  # drop the two intended 401s; from here on nothing may fail
    d.get(served.base_url + f"/dashboard/?range=all&token={ADMIN}")
    url = urlsplit(d.current_url)
    assert url.path == "/dashboard/"
    assert "token" not in url.query
    s = served.state.gateway.settings
    with open_ledger(s.resolved_ledger_url) as led:
        totals = led.report(by=[])[0]
    assert Decimal(metric(d, '.kpi[data-metric="spent_usd"]')) == totals["spent_usd"] == Decimal("0.18")
    assert int(metric(d, '.kpi[data-metric="requests"]')) == 6
    links = [a.get_attribute("href") for a in d.find_elements(By.CSS_SELECTOR, "header a")]
    assert links and all(urlsplit(h).path.startswith("/dashboard/") for h in links), links
    d.find_element(By.LINK_TEXT, "Audit").click()
    assert urlsplit(d.current_url).path == "/dashboard/audit"
    first = d.find_element(By.CSS_SELECTOR, "#records a[data-seq]")
    seq = first.get_attribute("data-seq")
    first.click()
    assert urlsplit(d.current_url).path == f"/dashboard/audit/{seq}"
    assert d.find_element(By.ID, "chain").get_attribute("data-record-ok") == "true"
    d.save_screenshot(str(shots / "server-dashboard-record.png"))
    cookies = d.get_cookies()
    assert [c["path"] for c in cookies] == ["/dashboard"]
    assert all(ADMIN not in c["value"] for c in cookies)
    errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors
