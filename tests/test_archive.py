"""The output archive on both stores: a local directory and S3 (moto's real S3-compatible server).

Byte-exact round trips, metadata, corruption detection, retention with audited deletions, SSE and
Object Lock settings passed through to S3, and the CLI returning every image the audit log names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_support import make, with_archive
from s3_support import S3Test, s3_env, s3_server  # noqa: F401 - fixtures

from gateway.archive import Archive, ArchiveError, LocalStore, NotArchived, open_archive
from gateway.archive.retention import prune
from gateway.archive.s3 import S3Store
from gateway.cli import main
from gateway.config import Settings
from gateway.errors import ConfigError, PolicyDenied, UsageError

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
BLOBS = [b"", b"x", os.urandom(70_000), bytes(range(256)) * 4096]  # empty, tiny, odd, 1 MiB


@pytest.fixture(params=["local", "s3"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield (tmp_path / "arch").as_uri()
        return
    s3: S3Test = request.getfixturevalue("s3_env")
    yield f"s3://{s3.bucket()}/gw/archive"


@pytest.fixture
def settings(tmp_path: Path, archive_url: str) -> Settings:
    return with_archive(Settings(home=tmp_path / "home"), url=archive_url)


def test_round_trip_is_byte_exact(settings: Settings) -> None:
    archive = open_archive(settings)
    assert archive is not None
    for i, blob in enumerate(BLOBS):
        sha = archive.put(blob, kind="output", mime="image/png", request_id=f"r{i}", team="t", now=NOW)
        assert sha == hashlib.sha256(blob).hexdigest()
        assert archive.get(sha) == blob and archive.has(sha)
    again = archive.put(BLOBS[2], kind="input", mime="image/png", request_id="r9", team="u",
                        now=NOW + dt.timedelta(days=1))  # fmt: skip
    meta = archive.head(again)
    assert meta is not None and meta.kind == "output" and meta.team == "t"  # first store's facts kept
    assert meta.request_ids == ("r2", "r9") and meta.size == len(BLOBS[2])
    assert meta.last_put_us > meta.stored_us  # a repeat keeps it alive for another window
    assert {o.sha256 for o in archive.objects()} == {hashlib.sha256(b).hexdigest() for b in BLOBS}
    with pytest.raises(NotArchived):
        archive.get("0" * 64)
    with pytest.raises(UsageError):
        archive.get("not-a-hash")
    archive.close()


def test_corrupt_objects_are_refused(settings: Settings) -> None:
    archive = open_archive(settings)
    assert archive is not None
    sha = archive.put(b"original", kind="output", mime="image/png", request_id="r", team="t", now=NOW)
    archive.store.write(f"objects/{sha}", b"tampered")
    with pytest.raises(ArchiveError, match="corrupt"):
        archive.get(sha)


def test_retention_deletes_expired_objects_and_audits_each(settings: Settings) -> None:
    s = with_archive(settings, retention_days=30)
    with make(s) as gw:
        archive = gw._core.keeper.archive
        assert archive is not None
        old = archive.put(b"old", kind="output", mime="image/png", request_id="r1", team="t",
                          now=NOW - dt.timedelta(days=31))  # fmt: skip
        kept = archive.put(b"new", kind="quarantined", mime="image/png", request_id="r2", team="t",
                           now=NOW - dt.timedelta(days=29))  # fmt: skip
        assert [o.sha256 for o in prune(archive, gw._core.audit, now=NOW, dry_run=True).deleted] == [old]
        assert archive.has(old)
        report = prune(archive, gw._core.audit, now=NOW, ledger=gw._core.ledger)
        assert [o.sha256 for o in report.deleted] == [old]
        assert not archive.has(old) and archive.head(old) is None and archive.has(kept)
        (rec,) = [r for r in gw._core.audit.iter_records() if r["event"] == "archive_deleted"]
        assert rec["sha256"] == old and rec["reason"] == "retention" and rec["retention_days"] == 30
        assert gw._core.audit.verify().ok


def test_every_audited_image_comes_back_byte_exact_from_the_cli(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with make(settings) as gw:
        results = [gw.generate("a boat", n=2, seed=i) for i in range(2)]
        audited = [sha for r in gw._core.audit.iter_records() if r["event"] == "request"
                   for sha in r["image_sha256s"]]  # fmt: skip
        records = [r for r in gw._core.audit.iter_records() if r["event"] == "request"]
    assert all(r["archive"] == settings.archive.url for r in records)
    returned = {i.sha256: i.data for r in results for i in r.images}
    assert sorted(audited) == sorted(returned)
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"home": str(settings.home), "archive": {"url": settings.archive.url}}))
    for sha in audited:
        out = tmp_path / f"{sha}.png"
        main(["archive", "get", sha, "--out", str(out), "--config", str(config), "--json"])
        assert out.read_bytes() == returned[sha]
        assert json.loads(capsys.readouterr().out)["sha256"] == sha
    with pytest.raises(SystemExit) as code:
        main(["archive", "get", "f" * 64, "--out", str(tmp_path / "x"), "--config", str(config)])
    assert code.value.code == 2


def test_s3_passes_encryption_and_object_lock_through(s3_env: S3Test) -> None:  # noqa: F811
    bucket = s3_env.bucket(object_lock=True)
    store = S3Store(f"s3://{bucket}/p", {"sse": {"ServerSideEncryption": "AES256"},
                                        "object_lock": {"mode": "GOVERNANCE", "days": 1}})  # fmt: skip
    archive = Archive(store)
    sha = archive.put(b"locked bytes", kind="output", mime="image/png", request_id="r", team="t", now=NOW)
    client = s3_env.client()
    try:
        head = client.head_object(Bucket=bucket, Key=f"p/objects/{sha}")
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ObjectLockMode"] == "GOVERNANCE" and "ObjectLockRetainUntilDate" in head
        assert archive.get(sha) == b"locked bytes"
    finally:
        client.close()
    with pytest.raises(ConfigError, match="unknown PutObject"):
        S3Store(f"s3://{bucket}/p", {"sse": {"ServerSideEncyption": "AES256"}})


def test_archive_off_needs_a_policy_that_allows_it(tmp_path: Path) -> None:
    off = with_archive(Settings(home=tmp_path / "h"), url="off")
    with pytest.raises(ConfigError, match="allow_off"):
        make(off)
    pol = tmp_path / "p.yaml"
    pol.write_text("version: 1\nrules:\n  - id: scratch-no-archive\n    kind: archive\n    allow_off: true\n"
                   "    when: {use_case: [scratch]}\n")  # fmt: skip
    with make(off.model_copy(update={"policies": (pol,)})) as gw:
        assert gw.generate("a boat", use_case="scratch").images
        with pytest.raises(PolicyDenied) as err:
            gw.generate("a boat", use_case="general")
        assert list(err.value.rule_ids) == ["archive.required"]


def test_local_store_layout_and_bad_urls(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a")
    archive = Archive(store)
    sha = archive.put(b"abc", kind="output", mime="image/png", request_id="r", team="t", now=NOW)
    assert (tmp_path / "a" / "objects" / sha[:2] / sha).read_bytes() == b"abc"
    bad: list[Any] = ["ftp://x/y", "file://host/dir", "s3:///nobucket"]
    for url in bad:
        with pytest.raises(ConfigError):
            open_archive(with_archive(Settings(home=tmp_path), url=url))


def test_quarantined_images_are_archived_and_audited_by_hash(tmp_path: Path) -> None:
    pol = tmp_path / "wm.yaml"
    pol.write_text("version: 1\nrules:\n  - id: wm\n    kind: provenance\n    watermark_required: true\n"
                   "    on_missing: quarantine\n")  # fmt: skip
    s = Settings(home=tmp_path / "home", policies=(pol,))
    with make(s) as gw:
        # 128 px is too small for the watermark: the image is held back, but kept in the archive
        res = gw.generate("a boat", width=128, height=128, n=2)
        assert not res.images and len(res.quarantined) == 2
        archive = gw._core.keeper.archive
        assert archive is not None
        for q in res.quarantined:
            meta = archive.head(q["sha256"])
            assert (
                meta is not None
                and meta.kind == "quarantined"
                and meta.extra["rule_id"] == "provenance.required"
            )
            assert hashlib.sha256(archive.get(q["sha256"])).hexdigest() == q["sha256"]
        recs = [r for r in gw._core.audit.iter_records() if r["event"] == "quarantined"]
        assert sorted(r["sha256"] for r in recs) == sorted(q["sha256"] for q in res.quarantined)


def test_dashboard_record_page_shows_thumbnails_from_the_archive(tmp_path: Path) -> None:
    from gateway.dashboard import create_app, open_sources
    from gateway.dashboard.app import Request

    s = Settings(home=tmp_path / "home")
    with make(s) as gw:
        res = gw.generate("a boat", n=2, seed=1)
    src = open_sources(s.resolved_ledger_url, s.resolved_audit_url, checkpoint_dir=s.home / "checkpoints")
    src.archive = open_archive(s)
    app = create_app(src)

    def get(path: str) -> Any:
        return app.handle(Request("GET", path, {}, {"host": "127.0.0.1:8765"}))

    try:
        page = get(f"/audit/{res.audit_seq}")
        assert page.status == 200
        html = page.body.decode()
        for img in res.images:
            assert f'<img src="/archive/{img.sha256}"' in html
            served = get(f"/archive/{img.sha256}")
            assert served.status == 200 and served.body == img.data and served.content_type == "image/png"
        headers = dict(app._headers(page))
        assert b"img-src 'self' data:" in headers[b"content-security-policy"]  # same origin only
        assert get("/archive/" + "0" * 64).status == 404
    finally:
        src.close()


def test_a_failing_remote_archive_spools_paid_outputs_locally(
    s3_env: S3Test,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = f"t-missing-{os.getpid()}"  # no such bucket (yet): every S3 call fails
    s = with_archive(Settings(home=tmp_path / "home"), url=f"s3://{missing}/a")
    with make(s) as gw:
        res = gw.generate("a boat", seed=1, idempotency_key="k")
        rec = gw._core.audit.get(res.audit_seq)  # type: ignore[arg-type]
        assert rec is not None and rec["archive_spooled"] is True and "NoSuchBucket" in rec["archive_error"]
        assert gw.generate("a boat", seed=1, idempotency_key="k").replayed  # replays from the spool
    spool = Archive(LocalStore(s.home / "archive-spool"))
    assert spool.get(res.images[0].sha256) == res.images[0].data
    client = s3_env.client()
    client.create_bucket(Bucket=missing)
    client.close()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        json.dumps({"home": str(s.home), "archive": {"url": s.archive.url, "retention_days": 30}})
    )
    main(["archive", "prune", "--config", str(config), "--json"])
    assert json.loads(capsys.readouterr().out)["spool_uploaded"] == 1
    archive = open_archive(s)
    assert archive is not None and archive.get(res.images[0].sha256) == res.images[0].data
    assert not spool.has(res.images[0].sha256)


def test_archive_verify_checks_every_image_the_audit_log_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = with_archive(Settings(home=tmp_path / "home"), retention_days=30)
    with make(s, clock=lambda: NOW) as gw:
        a = gw.generate("a boat", n=2, seed=1)
        b = gw.generate("a car", seed=2, idempotency_key="k")
        gw.generate("a car", seed=2, idempotency_key="k")  # the replay record names b's image again
        archive = gw._core.keeper.archive
        assert archive is not None
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"home": str(s.home), "archive": {"retention_days": 30}}))
    main(["archive", "verify", "--config", str(config), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["checked"] == 3
    with make(s) as gw:  # retention (audited) removes a's images: expected, not missing
        prune(archive, gw._core.audit, now=NOW + dt.timedelta(days=31))
    main(["archive", "verify", "--config", str(config), "--json"])
    assert json.loads(capsys.readouterr().out)["deleted_by_retention"] == 3
    archive.put(b.images[0].data, kind="output", mime="image/png", request_id="x", team="t", now=NOW)
    archive.store.write(f"objects/{b.images[0].sha256}", b"tampered")  # now corrupt
    with pytest.raises(SystemExit) as code:
        main(["archive", "verify", "--config", str(config)])
    assert code.value.code == 6
    assert a.images


def test_paid_outputs_of_a_failed_request_are_archived(tmp_path: Path) -> None:
    pol = tmp_path / "wm.yaml"
    pol.write_text("version: 1\nrules:\n  - id: wm\n    kind: provenance\n    watermark_required: true\n"
                   "    on_missing: deny\n")  # fmt: skip
    s = Settings(home=tmp_path / "home", policies=(pol,))
    with make(s) as gw:
        with pytest.raises(PolicyDenied):  # 128 px cannot carry the watermark: denied after the paid call
            gw.generate("a boat", width=128, height=128, n=2)
        (failed,) = [r for r in gw._core.audit.iter_records() if r["event"] == "denied"]
        archive = gw._core.keeper.archive
        assert archive is not None and failed["quarantine"]["archive"] == archive.url
        for f in failed["quarantine"]["files"]:
            meta = archive.head(f["sha256"])
            assert meta is not None and meta.kind == "quarantined" and "PolicyDenied" in meta.extra["reason"]
            assert hashlib.sha256(archive.get(f["sha256"])).hexdigest() == f["sha256"]
