"""Page sections for the audit log: the verification banner, the record list, one record and its proofs.

A record's page shows where it sits in the chain and proves it: its bytes hash to its entry hash, its
previous hash is the entry hash before it, an RFC 6962 inclusion proof places it in the current tree,
and (once sealed) in the tree of the signed checkpoint that covers it. The prompt is shown only when
the record holds it, which happens only where policy chose to capture it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .html import badge, e, money, qs, table, when
from .pages import Links, chart_block, window_form
from .views import AuditListView, RecordView

EVENT_KIND = {
    "request": "ok",
    "attempt": "",
    "denied": "bad",
    "budget_refused": "warn",
    "failed": "bad",
    "quarantined": "warn",
}


def verify_banner(v: Any, links: Links) -> str:
    """The chain's verification as one line (ok, or the first bad record and what happened)."""
    if v.ok:
        sealed = (
            f", sealed to record {v.checkpoint_size} by {v.checkpoints} signed checkpoint(s)"
            if v.checkpoints
            else ""
        )
        warn = "".join(f'<div class="muted">{e(w)}</div>' for w in v.warnings)
        return (
            f'<div class="banner ok" id="verify" data-verified="true"><b>Chain verified</b>: {v.count} '
            f'records{e(sealed)}; Merkle root <span class="mono">{e(v.root)}</span>{warn}</div>'
        )
    where = ""
    if v.first_bad_seq is not None:
        where = f' at <a href="{links.record(v.first_bad_seq)}">record {v.first_bad_seq}</a>'
    return (
        f'<div class="banner bad" id="verify" data-verified="false"><b>Verification FAILED</b>: '
        f"{e(v.problem)}{where}: {e(v.detail)}</div>"
    )


def record_rows(rows: Sequence[Mapping[str, Any]], links: Links) -> str:
    headers = [
        ("#", "n"),
        ("time (UTC)", ""),
        ("event", ""),
        ("team", ""),
        ("use case", ""),
        ("route", ""),
        ("decision", ""),
        ("rule ids", ""),
        ("cost", "n"),
        ("watermark", ""),
        ("C2PA", ""),
    ]
    body = []
    for r in rows:
        dec = badge(r["decision"], "ok" if r["decision"] == "allow" else "bad")
        body.append(
            [
                f'<a href="{links.record(r["seq"])}" data-seq="{e(r["seq"])}">{e(r["seq"])}</a>',
                e(when(r["ts"])),
                badge(r["event"], EVENT_KIND.get(r["event"], "")),
                e(r["team"]),
                e(r["use_case"]),
                e(r["route"]),
                dec,
                e(", ".join(r["rule_ids"])),
                e(money(r["cost_usd"]) if r["cost_usd"] is not None else ""),
                e(r["watermark"]),
                e(r["c2pa"]),
            ]
        )
    return table(headers, body)


def quarantine_table(rows: Sequence[Mapping[str, Any]], links: Links) -> str:
    return table(
        [
            ("#", "n"),
            ("time (UTC)", ""),
            ("team", ""),
            ("use case", ""),
            ("route", ""),
            ("rule", ""),
            ("reason", ""),
            ("score", "n"),
        ],
        [
            [
                f'<a href="{links.record(r["seq"])}">{e(r["seq"])}</a>',
                e(when(r["ts"])),
                e(r["team"]),
                e(r["use_case"]),
                e(r["route"]),
                e(r.get("rule_id")),
                e(r.get("reason")),
                e(r.get("score")),
            ]
            for r in rows
        ],
    )


def audit_page(v: AuditListView, links: Links) -> str:
    choices = {k: v.facets.get(k, []) for k in ("event", "team", "use_case", "provider", "model")}
    extra = {**v.filters, "request_id": v.filters.get("request_id", "")}
    form = window_form(v.window, extra, choices)
    pager = ""
    if v.next_before is not None:
        params = {**v.window.params(), **v.filters, "before": v.next_before}
        pager = f'<p><a href="{e(links.path("/audit"))}{e(qs(params))}" rel="next">older records →</a></p>'
    shown = f"{len(v.rows)} of {v.total} matching record(s), newest first; the log holds {v.size}."
    return (
        f"<h1>Audit · {e(v.window.label())}</h1>{verify_banner(v.verify, links)}{form}"
        f'<section id="records"><h2>Records</h2><p class="muted">{e(shown)}</p>'
        f"{record_rows(v.rows, links)}{pager}</section>"
        f'<div class="grid2"><section>{chart_block("Policy denials by rule", v.denials, money_axis=False)}'
        '</section><section id="quarantined"><h2>Quarantined outputs</h2>'
        f"{quarantine_table(v.quarantined, links)}</section></div>"
    )


def _check(ok: bool, yes: str, no: str) -> str:
    return f'<span class="{"ok" if ok else "bad"}">{"✔ " + e(yes) if ok else "✘ " + e(no)}</span>'


def chain_position(v: RecordView, links: Links) -> str:
    r = v.record
    prev = f'<a href="{links.record(v.seq - 1)}">#{v.seq - 1}</a> ' if v.seq > 1 else "genesis "
    p = v.proof
    rows = [
        ("position", f"record {v.seq} of {v.size}"),
        ("time (UTC)", e(when(r.get("ts")))),
        ("previous hash", f'{prev}<span class="mono">{e(r.get("prev_hash"))}</span>'),
        ("entry hash", f'<span class="mono">{e(r.get("entry_hash"))}</span>'),
        ("stored bytes", _check(v.hash_ok, "hash to the entry hash", "do not hash to the entry hash")),
        (
            "chain link",
            _check(
                v.link_ok,
                f"previous hash is record {v.seq - 1}'s entry hash"
                if v.seq > 1
                else "first record chains to genesis",
                "previous hash does not match",
            ),
        ),
        (
            "Merkle inclusion",
            _check(
                p["ok"],
                f"proved in the tree of {p['size']} records ({len(p['path'])} hashes)",
                "inclusion proof failed",
            )
            + f'<div class="mono muted">root {e(p["root"])}</div>',
        ),
    ]
    if v.sealed is not None:
        s = v.sealed
        rows.append(
            (
                "signed checkpoint",
                _check(
                    s["ok"],
                    f"included in checkpoint of size {s['checkpoint_size']} signed "
                    f"{when(s['checkpoint_ts'])} (key {s['key_id']})",
                    f"NOT included in the signed checkpoint of size {s['checkpoint_size']}",
                ),
            )
        )
    else:
        rows.append(
            ("signed checkpoint", '<span class="warn">not sealed yet (after the last checkpoint)</span>')
        )
    body = "".join(f"<dt>{e(k)}</dt><dd>{val}</dd>" for k, val in rows)
    ok = v.hash_ok and v.link_ok and p["ok"] and (v.sealed is None or v.sealed["ok"])
    return f'<dl class="kv" id="chain" data-record-ok="{str(ok).lower()}">{body}</dl>'


_FIELDS = (
    "event",
    "request_id",
    "team",
    "project",
    "use_case",
    "user",
    "tags",
    "provider",
    "model",
    "route_key",
    "cost_usd",
    "estimated_cost_usd",
    "outcome",
    "error_type",
    "error",
    "latency_s",
    "retries",
    "n",
    "seed",
    "trace_id",
    "span_id",
    "prompt_sha256",
    "prompt_len",
    "rule_id",
    "reason",
    "score",
    "quarantined",
)


def record_fields(r: Mapping[str, Any]) -> str:
    rows = []
    for k in _FIELDS:
        if r.get(k) not in (None, "", []):
            val = r[k]
            shown = (
                money(val)
                if k.endswith("cost_usd")
                else ", ".join(map(str, val))
                if isinstance(val, list)
                else val
            )
            rows.append(f"<dt>{e(k)}</dt><dd>{e(shown)}</dd>")
    d = r.get("decision")
    if isinstance(d, dict):
        verdict = badge("allow" if d.get("allowed") else "deny", "ok" if d.get("allowed") else "bad")
        reasons = "; ".join(map(str, d.get("reasons") or []))
        rows.append(
            f"<dt>decision</dt><dd>{verdict} {e(', '.join(map(str, d.get('rule_ids') or [])))} "
            f'<span class="muted">{e(reasons)}</span></dd>'
        )
        if d.get("policy_hash"):
            rows.append(f'<dt>policy hash</dt><dd class="mono">{e(d["policy_hash"])}</dd>')
    return f'<dl class="kv">{"".join(rows)}</dl>'


def _thumb(sha: str, root: str = "") -> str:
    src = f"{root}/archive/{sha}"
    return f'<img src="{e(src)}" alt="image {e(sha[:12])}" width="96" height="96" loading="lazy">'


def images_table(r: Mapping[str, Any], thumbs: bool = False, root: str = "") -> str:
    """The record's images; on the live dashboard with a thumbnail each, served from the archive."""
    shas = r.get("image_sha256s") or []
    if not isinstance(shas, list) or not shas:
        return ""
    wm, c2 = r.get("watermark") or [], r.get("c2pa") or []

    def at(xs: Any, i: int) -> Any:
        return xs[i] if isinstance(xs, list) and i < len(xs) else ""

    rows = [
        [str(i), f'<span class="mono">{e(s)}</span>', e(at(wm, i)), e(at(c2, i))] for i, s in enumerate(shas)
    ]
    cols = [("#", "n"), ("sha256", ""), ("watermark", ""), ("C2PA", "")]
    if thumbs:
        rows = [[*row, _thumb(str(s), root)] for row, s in zip(rows, shas, strict=True)]
        cols.append(("image", ""))
    return "<h3>Images</h3>" + table(cols, rows)


def record_detail(v: RecordView, links: Links) -> str:
    """A record's fields, chain position and proofs; the prompt only where policy captured it."""
    r = v.record
    prompt = ""
    if isinstance(r.get("prompt"), str):
        prompt = (
            f'<section id="prompt"><h2>Prompt (captured by policy)</h2><pre>{e(r["prompt"])}</pre></section>'
        )
    related = ""
    if len(v.related) > 1:
        related = (
            f"<section><h2>Records of request {e(r.get('request_id'))}</h2>"
            f"{record_rows(v.related, links)}</section>"
        )
    raw = json.dumps({k: val for k, val in r.items()}, indent=2, sort_keys=True, ensure_ascii=False)
    images = images_table(r, links.thumbs, links.root)
    return (
        f"{verify_banner(v.verify, links)}"
        f'<div class="grid2"><section><h2>Chain position and proofs</h2>{chain_position(v, links)}</section>'
        f"<section><h2>Record</h2>{record_fields(r)}{images}</section></div>{prompt}{related}"
        f"<section><h2>As stored</h2><pre>{e(raw)}</pre></section>"
    )


def record_page(v: RecordView, links: Links) -> str:
    nav = []
    if v.seq > 1:
        nav.append(f'<a href="{links.record(v.seq - 1)}" rel="prev">← #{v.seq - 1}</a>')
    nav.append(f'<a href="{e(links.path("/audit"))}">all records</a>')
    if v.seq < v.size:
        nav.append(f'<a href="{links.record(v.seq + 1)}" rel="next">#{v.seq + 1} →</a>')
    return f"<h1>Audit record #{v.seq}</h1><p>{' · '.join(nav)}</p>{record_detail(v, links)}"


# --------------------------------------------------------------------------- providers


__all__ = ["EVENT_KIND", "audit_page", "record_detail", "record_page", "verify_banner"]
