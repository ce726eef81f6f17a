"""Cost and audit dashboards: a local read-only web dashboard and a self-contained HTML report.

``gateway dashboard`` serves :class:`DashboardApp` (a dependency-free ASGI app; uvicorn from the
``dashboard`` extra runs it). ``gateway report --html FILE`` calls :func:`write_report_html`. Both read
the ledger and the audit log through read-only connections (see :mod:`gateway.dashboard.stores`) and
render server-side HTML with inline SVG charts: no script, no CDN, nothing fetched.
"""

from __future__ import annotations

from .app import DashboardApp, create_app, is_loopback
from .report import open_sources, render_report_html, write_report_html
from .views import Sources

__all__ = [
    "DashboardApp",
    "Sources",
    "create_app",
    "is_loopback",
    "open_sources",
    "render_report_html",
    "write_report_html",
]
