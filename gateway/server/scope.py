"""What ties one HTTP call to the gateway's evidence, without the core knowing about HTTP.

The server wraps two components it hands to :class:`~gateway.client.AsyncGateway` (composition, not
flags in the core):

* :class:`KeyPolicy` adds the calling key's own budget to the policy's decision, so the ledger
  reserves against it atomically with every other budget in scope;
* :class:`ObservedAudit` stamps the key's name on every audit record and notes the request id and
  audit seq the gateway produced, which become the response headers (also on refusals).

Both read the current call from a context variable that the endpoint sets; asyncio copies it into
every task and worker thread the gateway starts for that call, so concurrent calls never mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .keys import ApiKey

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..policy import PolicySet
    from ..types import Context, Decision, ImageRequest


@dataclass
class CallInfo:
    """One HTTP call's key, and what the gateway recorded for it."""

    key: ApiKey
    request_id: str | None = None
    audit_seq: int | None = None
    route: str | None = None
    records: list[str] = field(default_factory=list)


current: ContextVar[CallInfo | None] = ContextVar("gateway_server_call", default=None)


class KeyPolicy:
    """The configured policy, plus the calling key's budget in every decision."""

    def __init__(self, inner: PolicySet) -> None:
        self._inner = inner

    def evaluate(self, request: ImageRequest, context: Context, *args: Any, **kwargs: Any) -> Decision:
        decision = self._inner.evaluate(request, context, *args, **kwargs)  # edits pass input findings
        call = current.get()
        budget = call.key.budget() if call is not None else None
        if budget is None or not decision.allowed:
            return decision
        return replace(decision, budgets=(*decision.budgets, budget))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ObservedAudit:
    """The audit log, writing the key's name into each record and noting seqs for the response."""

    def __init__(self, inner: AuditLog) -> None:
        self._inner = inner

    @property
    def blocking_io(self) -> bool:
        return bool(self._inner.blocking_io)

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        call = current.get()
        if call is None:
            return self._inner.append_many(records)
        stamped = [{**r, "key_name": call.key.name} for r in records]
        return _observed(call, stamped, self._inner.append_many(stamped))

    async def aappend_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """The async shell's group-committed append, stamped and observed as :meth:`append_many`."""
        call = current.get()
        if call is None:
            return await self._inner.aappend_many(records)
        stamped = [{**r, "key_name": call.key.name} for r in records]
        return _observed(call, stamped, await self._inner.aappend_many(stamped))

    def append(self, record: Mapping[str, Any]) -> int:
        return self.append_many([record])[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _observed(call: CallInfo, stamped: list[dict[str, Any]], seqs: list[int]) -> list[int]:
    if stamped:
        last = stamped[-1]
        call.request_id = str(last.get("request_id") or call.request_id or "")
        call.audit_seq = seqs[-1]
        call.records.extend(str(r.get("event")) for r in stamped)
        routes = [r["route_key"] for r in stamped if r.get("route_key")]
        if routes:
            call.route = str(routes[-1])
    return seqs


__all__ = ["CallInfo", "KeyPolicy", "ObservedAudit", "current"]
