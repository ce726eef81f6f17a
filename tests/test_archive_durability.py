"""The local archive's durability contract after the fsync moved beside the audit append.

Objects are fsynced (file and folder) before the result that names them is returned; the wait
overlaps the audit log's own fsync. Metadata is an index written without fsync, rebuilt from the audit
log by ``gateway archive verify`` when a power loss took it. A failed fsync fails the request, is
audited once, and keeps the paid outputs.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from archive_support import catalog, ledger_rows, make, with_archive

from gateway import AsyncGateway, MockBackend
from gateway.archive import ArchiveError, LocalStore
from gateway.cli import main
from gateway.config import Settings


def _settings(tmp_path: Path) -> Settings:
    return with_archive(Settings(home=tmp_path / "home"), url=(tmp_path / "arch").as_uri())


def test_every_returned_object_is_synced_before_the_result_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real_sync = LocalStore.sync

    def recording_sync(self: LocalStore, keys: Iterable[str]) -> None:
        keys = list(keys)
        real_sync(self, keys)
        synced.extend(self._path(k) for k in keys)

    monkeypatch.setattr(LocalStore, "sync", recording_sync)
    with make(_settings(tmp_path)) as gw:
        result = gw.generate("a boat", n=2, seed=3)
        # Recorded by the time generate returned: the sync finished before the result was handed out.
        assert {p.name for p in synced} == {i.sha256 for i in result.images}
        archive = gw._core.keeper.archive
        assert archive is not None
        for img in result.images:
            assert archive.get(img.sha256) == img.data
            meta = archive.head(img.sha256)
            assert meta is not None and meta.request_ids == (result.request_id,)


def test_a_failed_fsync_fails_the_request_audits_it_once_and_keeps_the_paid_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_disk(self: LocalStore, keys: Iterable[str]) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(LocalStore, "sync", broken_disk)
    with make(_settings(tmp_path)) as gw:
        with pytest.raises(ArchiveError, match="could not make objects durable: Input/output error"):
            gw.generate("a boat", seed=4)
        records = list(gw._core.audit.iter_records())
        (done,) = [r for r in records if r["event"] == "request"]
        (failed,) = [r for r in records if r["event"] == "failed"]
        assert failed["request_id"] == done["request_id"] and failed["error_type"] == "ArchiveError"
        assert [r["event"] for r in records].count("request") == 1  # the first record is not repeated
        assert failed["quarantine"]["files"]  # paid for: kept, named in the failure record
        rows = {rid: status for rid, status, _micros in ledger_rows(gw)}
    assert rows[done["request_id"]] == "settled"  # the provider was paid: the ledger says so


def test_the_async_shell_waits_for_the_sync_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_disk(self: LocalStore, keys: Iterable[str]) -> None:
        raise OSError(errno.EIO, "Input/output error")

    async def go() -> None:
        s = _settings(tmp_path)
        async with AsyncGateway(s, catalog=catalog(), backends={"a": MockBackend()}) as gw:
            ok = await gw.generate("a boat", seed=5)
            archive = gw._core.keeper.archive
            assert archive is not None and archive.get(ok.images[0].sha256) == ok.images[0].data
            monkeypatch.setattr(LocalStore, "sync", broken_disk)
            with pytest.raises(ArchiveError):
                await gw.generate("a car", seed=6)

    asyncio.run(go())


def test_archive_verify_rebuilds_metadata_a_power_loss_took(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _settings(tmp_path)
    with make(s) as gw:
        result = gw.generate("a boat", seed=7)
        archive = gw._core.keeper.archive
        assert archive is not None
    sha = result.images[0].sha256
    meta_file = tmp_path / "arch" / "meta" / sha[:2] / f"{sha}.json"
    meta_file.unlink()  # what an unsynced index entry looks like after a power loss
    assert archive.head(sha) is None and archive.get(sha) == result.images[0].data
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"home": str(s.home), "archive": {"url": s.archive.url}}))
    main(["archive", "verify", "--config", str(config), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["reindexed"] == 1
    meta = archive.head(sha)
    assert meta is not None and meta.request_ids == (result.request_id,) and meta.kind == "output"
    assert meta.team == "default" and meta.mime == "image/png"
    main(["archive", "verify", "--config", str(config), "--json"])
    assert json.loads(capsys.readouterr().out)["reindexed"] == 0  # once rebuilt, nothing to do
