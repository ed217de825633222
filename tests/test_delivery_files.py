"""File delivery: checked packages, OpenPGP encryption, a transport push, and the markers."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from opsflow.delivery import seed, tips
from opsflow.delivery.packages import DeliveryPolicy, deliver_batch
from opsflow.delivery.records import Delivery, Receiver, ReceiverTip
from opsflow.store import session_scope, sessions, utcnow
from opsflow.transports.local import LocalTransport


def make_submission(url: str, folder: Path, files: dict[str, bytes], receivers: int = 1,
                    key: str | None = None) -> int:
    """A finalized submission with stored files and its tips; returns the submission id."""
    with session_scope(url) as session:
        people = seed.add_receivers(session, receivers)
        if key:
            session.get(Receiver, people[0]).pgp_public_key = key
        [submission] = seed.add_submissions(session, 1, people)
        for name, data in files.items():
            path = folder / f"{submission}-{name.replace('/', '_')}"
            path.write_bytes(data)
            seed.add_file(session, submission, path, name)
    with sessions(url)() as session:
        tips.create_tips(session, claimer="t")
    return submission


def tip_rows(url: str) -> list[ReceiverTip]:
    with sessions(url)() as session:
        return list(session.scalars(select(ReceiverTip).order_by(ReceiverTip.id)))


def deliver(url: str, folder: Path, transport=None, **kw):  # type: ignore[no-untyped-def]
    with sessions(url)() as session:
        return deliver_batch(session, folder=folder, transport=transport, claimer="d", **kw)


def test_package_is_checked_then_available_then_pushed(store_url: str, tmp_path: Path) -> None:
    files = {"a.txt": b"first file", "b.bin": os.urandom(3000)}
    make_submission(store_url, tmp_path, {**files, "../../escape.txt": b"x"}, receivers=2)
    files["escape.txt"] = b"x"  # a name from an upload cannot leave the unpacked folder
    report = deliver(store_url, tmp_path / "packages")
    assert report.available == 2 and report.performed == 0
    first = tip_rows(store_url)[0]
    assert first.delivery == Delivery.AVAILABLE
    package = Path(first.package_path)
    assert hashlib.sha256(package.read_bytes()).hexdigest() == first.package_sha256
    with zipfile.ZipFile(package) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == files
    assert not list(package.parent.glob(".partial-*"))

    target = tmp_path / "target"
    report = deliver(store_url, tmp_path / "packages", LocalTransport(target))
    assert report.performed == 2
    for tip in tip_rows(store_url):
        assert tip.delivery == Delivery.PERFORMED and tip.delivered_at is not None
        pushed = target / f"receiver-{tip.receiver_id}" / f"tip-{tip.id}.zip"
        assert hashlib.sha256(pushed.read_bytes()).hexdigest() == tip.package_sha256
    assert deliver(store_url, tmp_path / "packages", LocalTransport(target)).claimed == 0


def test_a_file_that_no_longer_matches_its_sha256_is_not_delivered(store_url: str,
                                                                  tmp_path: Path) -> None:
    submission = make_submission(store_url, tmp_path, {"a.txt": b"good", "b.txt": b"original"})
    (tmp_path / f"{submission}-b.txt").write_bytes(b"tampered")
    target = tmp_path / "target"
    report = deliver(store_url, tmp_path / "packages", LocalTransport(target))
    assert report.unable == 1 and report.performed == 0
    [tip] = tip_rows(store_url)
    assert tip.delivery == Delivery.UNABLE
    assert "'b.txt' does not match its record" in tip.delivery_error
    assert tip.package_path is None
    assert not list((tmp_path / "packages").iterdir()) and not list(target.rglob("*.zip"))


def test_a_submission_without_files_has_no_data(store_url: str, tmp_path: Path) -> None:
    make_submission(store_url, tmp_path, {})
    with sessions(store_url)() as session:  # a tip made before its files were known
        session.execute(ReceiverTip.__table__.update().values(delivery=Delivery.NOT_YET))
        session.commit()
    assert deliver(store_url, tmp_path / "packages").no_data == 1
    assert [t.delivery for t in tip_rows(store_url)] == [Delivery.NO_DATA]


def test_a_failing_target_is_retried_with_backoff_then_unable(store_url: str,
                                                             tmp_path: Path) -> None:
    make_submission(store_url, tmp_path, {"a.txt": b"data"})
    [tip] = tip_rows(store_url)
    target = tmp_path / "target"
    target.mkdir()
    (target / f"receiver-{tip.receiver_id}").write_text("a file where a folder must go")
    policy = DeliveryPolicy(max_attempts=2, backoff_base=timedelta(minutes=5))
    t0 = utcnow()
    report = deliver(store_url, tmp_path / "packages", LocalTransport(target), policy=policy,
                     now=t0)
    assert report.retried == 1
    [tip] = tip_rows(store_url)
    assert tip.delivery == Delivery.AVAILABLE and tip.delivery_attempts == 1
    assert tip.next_delivery_at == t0 + timedelta(minutes=5)
    assert deliver(store_url, tmp_path / "packages", LocalTransport(target), policy=policy,
                   now=t0 + timedelta(minutes=1)).claimed == 0
    report = deliver(store_url, tmp_path / "packages", LocalTransport(target), policy=policy,
                     now=t0 + timedelta(minutes=6))
    [tip] = tip_rows(store_url)
    assert tip.delivery == Delivery.UNABLE and "gave up after 2 attempts" in tip.delivery_error


@pytest.fixture(scope="module")
def receiver_key(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real OpenPGP key pair in a keyring of its own: (armored public key, keyring)."""
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home)]
    subprocess.run([*gpg, "--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key",
                    "Receiver <receiver@example.org>", "future-default", "default", "never"],
                   check=True, capture_output=True)
    public = subprocess.run([*gpg, "--armor", "--export", "receiver@example.org"], check=True,
                            capture_output=True, text=True).stdout
    yield public, home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, check=False)


def test_package_is_encrypted_to_the_receivers_key(store_url: str, tmp_path: Path,
                                                  receiver_key) -> None:
    public, home = receiver_key
    files = {"report.pdf": b"%PDF secret contents"}
    make_submission(store_url, tmp_path, files, key=public)
    assert deliver(store_url, tmp_path / "packages").available == 1
    [tip] = tip_rows(store_url)
    package = Path(tip.package_path)
    assert package.name.endswith(".zip.pgp")
    assert b"secret contents" not in package.read_bytes()
    plain = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--decrypt",
                            str(package)], check=True, capture_output=True).stdout
    with zipfile.ZipFile(io.BytesIO(plain)) as zf:
        assert zf.read("report.pdf") == files["report.pdf"]


def test_a_broken_key_is_not_delivered_and_the_tip_says_why(store_url: str,
                                                            tmp_path: Path) -> None:
    make_submission(store_url, tmp_path, {"a.txt": b"x"}, key="not a key")
    assert deliver(store_url, tmp_path / "packages").unable == 1
    [tip] = tip_rows(store_url)
    assert tip.delivery == Delivery.UNABLE
    assert "OpenPGP key is not usable" in tip.delivery_error
