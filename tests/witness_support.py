"""Real witness servers for the audit-witness tests: a PostgreSQL database with an INSERT-only role,
an S3-compatible server with Object Lock (moto's server), and an RFC 3161 TSA (OpenSSL's ``ts``)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from s3_support import S3Test


@dataclass
class PgWitness:
    url: str  # as the gateway's INSERT-only role
    admin_url: str  # as the witness database's owner
    role: str
    database: str


def pg_witness(base_url: str) -> Iterator[PgWitness]:
    """A fresh database owned by postgres, its table made by setup_sql, and an INSERT-only login role."""
    import psycopg
    from psycopg import sql

    from gateway.audit.witness.postgres import setup_sql

    tag = uuid.uuid4().hex[:10]
    db, role = f"gw_witness_{tag}", f"gw_witness_writer_{tag}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    head, _, _ = base_url.rpartition("/")
    admin_url = f"{head}/{db}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        conn.execute(setup_sql(role=role))  # type: ignore[arg-type]
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    scheme, _, rest = admin_url.partition("://")
    hostpart = rest.split("@", 1)[-1]
    try:
        yield PgWitness(f"{scheme}://{role}@{hostpart}", admin_url, role, db)
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/heads?retention_days=1"


def object_lock_bucket(s3: S3Test, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """An Object Lock bucket on the shared S3 test server (tests/s3_support.py); KMS on the same server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", s3.endpoint)
    return S3Server(s3.endpoint, s3.bucket(object_lock=True))


def _tsa_chain(folder: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    root_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "witness test root")])
    tsa_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "witness test TSA")])
    valid = {"not_valid_before": now - dt.timedelta(days=1), "not_valid_after": now + dt.timedelta(days=30)}
    root = (
        x509.CertificateBuilder(
            subject_name=root_name,
            issuer_name=root_name,
            public_key=root_key.public_key(),
            serial_number=1,
            **valid,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    tsa = (
        x509.CertificateBuilder(
            subject_name=tsa_name,
            issuer_name=root_name,
            public_key=tsa_key.public_key(),
            serial_number=2,
            **valid,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    (folder / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (folder / "tsa.pem").write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    (folder / "tsa.key").write_bytes(
        tsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (folder / "serial").write_text("01\n")
    (folder / "ts.cnf").write_text(
        "[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\n"
        f"serial = {folder / 'serial'}\ncrypto_device = builtin\nsigner_digest = sha256\n"
        "default_policy = 1.3.6.1.4.1.57264.2.1\nother_policies = 1.3.6.1.4.1.57264.2.2\n"
        "digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = no\ntsa_name = no\n"
        "ess_cert_id_chain = no\ness_cert_id_alg = sha256\n"
    )


@dataclass
class TSAServer:
    endpoint: str
    ca: Path
    requests: list[bytes]

    @property
    def url(self) -> str:
        return f"tsa+{self.endpoint}?ca={self.ca}"


def tsa_server(folder: Path) -> Iterator[TSAServer]:
    """A loopback RFC 3161 TSA: each POST is answered by ``openssl ts -reply`` with a test chain."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed for the local timestamping authority")
    folder.mkdir(parents=True, exist_ok=True)
    _tsa_chain(folder)
    seen: list[bytes] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                seen.append(body)
                name = folder / f"q{len(seen)}"
                name.with_suffix(".tsq").write_bytes(body)
                subprocess.run(
                    [
                        "openssl",
                        "ts",
                        "-reply",
                        "-config",
                        str(folder / "ts.cnf"),
                        "-queryfile",
                        str(name.with_suffix(".tsq")),
                        "-signer",
                        str(folder / "tsa.pem"),
                        "-inkey",
                        str(folder / "tsa.key"),
                        "-chain",
                        str(folder / "tsa.pem"),
                        "-out",
                        str(name.with_suffix(".tsr")),
                    ],
                    check=True,
                    capture_output=True,
                )
                reply = name.with_suffix(".tsr").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield TSAServer(f"http://127.0.0.1:{httpd.server_address[1]}/tsa", folder / "root.pem", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
