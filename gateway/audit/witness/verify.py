"""Fold the witness check into an :class:`AuditVerifyReport` (what ``gateway audit verify`` prints)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from ..verify import AuditVerifyReport
from .check import check_against_witnesses

if TYPE_CHECKING:
    from ..store import AuditLog


def with_witnesses(log: AuditLog, report: AuditVerifyReport) -> AuditVerifyReport:
    """The local verdict first (it is the more precise one), then every witness's."""
    assert log.witnesses is not None
    started = time.perf_counter()
    count = log.head()[0]
    leaves = (bytes.fromhex(h) for _, h, _ in log._scan(0))
    check = check_against_witnesses(
        leaves, count, log.witnesses.witnesses, log.origin, log.checkpoints.trusted_keys()
    )
    summary = tuple(f.to_dict() for f in check.findings)
    warnings = list(report.warnings)
    warnings += [f"witness {f.witness}: {f.warning}" for f in check.findings if f.warning]
    warnings += [f"witness {w.name}: {w.warning}" for w in log.witnesses.witnesses if w.warning]
    reachable = sum(1 for f in check.findings if not f.warning or f.problem)
    if reachable < log.witnesses.quorum:
        warnings.append(f"only {reachable} of the {log.witnesses.quorum} required witnesses could be read")
    elapsed = report.elapsed_s + time.perf_counter() - started
    first = check.first
    if not report.ok or first is None:
        return dataclasses.replace(report, witnesses=summary, warnings=tuple(warnings), elapsed_s=elapsed)
    return dataclasses.replace(
        report,
        ok=False,
        first_bad_seq=first.seq,
        problem=first.problem,  # type: ignore[arg-type]
        detail=first.detail,
        witnesses=summary,
        warnings=tuple(warnings),
        elapsed_s=elapsed,
    )
