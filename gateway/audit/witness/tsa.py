"""``tsa+https://...``: an RFC 3161 timestamping authority countersigns each head's time.

What a TSA proves: that this exact note (its SHA-256 is in the signed token) existed at the token's
``genTime``, signed by a third party whose certificate the auditor trusts. It does not store anything,
so the token is kept next to the checkpoints (``tsa/`` in the checkpoint folder) and verify checks
that every kept token still matches a head the local log reproduces. Pair it with a storage witness:
someone who deletes tokens removes the TSA's evidence, but cannot forge an old one.

URL: ``tsa+https://tsa.example/path`` (or ``tsa+http://`` for a local test TSA) with ``?ca=PEM`` (the
trust anchor tokens must chain to; without it only the message imprint is checked, with a warning).
Requests are sent with ``rfc3161-client``; the TSA sees only a hash, never the log.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..checkpoints import create_exclusive
from ..note import TreeHead, parse_note
from .base import Witness, WitnessedHead, WitnessError, origin_key


class WitnessEvidenceError(WitnessError):
    """Stored evidence that no longer checks out (a token for another note, a bad signature)."""


class TimestampWitness(Witness):
    scheme = "tsa+https"

    def __init__(self, url: str, state_dir: Path, *, timeout_s: float = 10.0) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        opts = dict(query)
        rest = urlencode([q for q in query if q[0] != "ca"])
        self.endpoint = urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[1], query=rest))
        self.ca_path = Path(opts["ca"]).expanduser() if "ca" in opts else None
        self.folder = state_dir / hashlib.sha256(self.endpoint.encode()).hexdigest()[:16]
        self.timeout_s = timeout_s

    @property
    def warning(self) -> str:  # type: ignore[override]
        if self.ca_path is None:
            return "no ?ca= trust anchor: timestamp tokens are checked for their imprint only"
        return ""

    def _roots(self) -> list[Any]:
        from cryptography import x509

        if self.ca_path is None:
            return []
        return x509.load_pem_x509_certificates(self.ca_path.read_bytes())

    def _verify(self, token: bytes, note: bytes) -> Any:
        from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response

        try:
            resp = decode_timestamp_response(token)
        except (ValueError, Exception) as exc:
            raise WitnessEvidenceError(f"undecodable timestamp token: {type(exc).__name__}") from None
        if resp.status not in (0, 1):
            raise WitnessEvidenceError(f"timestamp request refused (status {resp.status})")
        if resp.tst_info.message_imprint.message != hashlib.sha256(note).digest():
            raise WitnessEvidenceError("timestamp token is for another note")
        roots = self._roots()
        if roots:
            builder = VerifierBuilder()
            for root in roots:
                builder = builder.add_root_certificate(root)
            try:
                builder.build().verify_message(resp, note)
            except VerificationError as exc:
                raise WitnessEvidenceError(f"timestamp token does not verify: {exc}") from None
        return resp

    def _paths(self, origin: str, size: int) -> tuple[Path, Path]:
        base = self.folder / origin_key(origin) / f"{size:020d}"
        return base.with_suffix(".note"), base.with_suffix(".tsr")

    def submit(self, head: TreeHead, note: bytes) -> None:
        import httpx
        from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

        note_path, tsr_path = self._paths(head.origin, head.size)
        if note_path.exists():
            held = note_path.read_bytes()
            if held != note:
                self.check_same(head, held, self.name)
            return
        request = TimestampRequestBuilder().data(note).hash_algorithm(HashAlgorithm.SHA256).build()
        try:
            reply = httpx.post(
                self.endpoint,
                content=request.as_bytes(),
                headers={"Content-Type": "application/timestamp-query"},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            raise WitnessError(f"timestamp authority unreachable: {type(exc).__name__}") from None
        if reply.status_code != 200:
            raise WitnessError(f"timestamp authority answered HTTP {reply.status_code}")
        self._verify(reply.content, note)
        note_path.parent.mkdir(parents=True, exist_ok=True)
        create_exclusive(tsr_path, reply.content, mode=0o444)
        create_exclusive(note_path, note, mode=0o444)

    def heads(self, origin: str) -> list[WitnessedHead]:
        folder = self.folder / origin_key(origin)
        if not folder.exists():
            return []
        out = []
        for note_path in sorted(folder.glob("*.note")):
            tsr_path = note_path.with_suffix(".tsr")
            note = note_path.read_bytes()
            if not tsr_path.exists():
                raise WitnessEvidenceError(f"{note_path.name}: its timestamp token is missing")
            resp = self._verify(tsr_path.read_bytes(), note)
            when = resp.tst_info.gen_time.strftime("%Y-%m-%dT%H:%M:%SZ")
            parse_note(note)
            out.append(WitnessedHead.from_note(note, when, f"RFC 3161 token, genTime {when}"))
        return out
