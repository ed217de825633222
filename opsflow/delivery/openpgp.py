"""OpenPGP encryption to a receiver's key with the gpg binary, checked before any plaintext.

A throw-away keyring holds the one key, so nothing is left behind and no trust database of
the machine is consulted; no shell is involved. The key is imported and checked for a usable
encryption (sub)key first; only then is anything read or written, and the plaintext goes
into gpg through a pipe, so it never touches a disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

GPG = shutil.which("gpg") or "gpg"
# --with-colons validity letters of a key that must not be used: invalid, disabled,
# revoked, expired (gpg's doc/DETAILS).
UNUSABLE_VALIDITY = frozenset("idre")


class KeyUnusable(Exception):
    """The receiver's key cannot be used to encrypt: nothing must go out in plaintext."""


class EncryptionFailed(OSError):
    """gpg did not finish the encryption (a full disk, a killed gpg): the output is
    incomplete and discarded, and the work is tried again like any failed write."""


def _last_line(stderr: bytes, fallback: str) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else fallback


def encryption_fingerprint(listing: str) -> str | None:
    """The fingerprint of the first key in a `--with-colons` listing that can encrypt.

    The primary key's capability field holds the capabilities of the whole key in capitals
    ("E" when it or a valid subkey can encrypt); an expired or revoked key says so in its
    validity field.
    """
    usable = expect_fingerprint = False
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            usable = (fields[1] not in UNUSABLE_VALIDITY and len(fields) > 11
                      and "E" in fields[11])
            expect_fingerprint = True
        elif fields[0] == "fpr" and expect_fingerprint and len(fields) > 9:
            expect_fingerprint = False
            if usable:
                return fields[9]
    return None


@dataclass(frozen=True)
class Recipient:
    """One checked key in its own keyring: what can be encrypted to."""

    home: str
    fingerprint: str

    def _command(self, *extra: str) -> list[str]:
        return [GPG, "--batch", "--no-tty", "--quiet", "--homedir", self.home,
                "--trust-model", "always", "--yes", "--recipient", self.fingerprint, *extra]

    @contextmanager
    def encrypting_to(self, target: Path) -> Iterator[IO[bytes]]:
        """A pipe into gpg that writes the ciphertext to `target`: write the plaintext into
        it. EncryptionFailed (and `target` removed) if gpg does not finish."""
        process = subprocess.Popen(self._command("--output", str(target), "--encrypt"),
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        assert process.stdin is not None and process.stderr is not None
        try:
            yield process.stdin
            process.stdin.close()
            stderr = process.stderr.read()
            code = process.wait(timeout=600)
        except BaseException:
            process.kill()
            process.wait()
            target.unlink(missing_ok=True)
            raise
        finally:
            process.stderr.close()
        if code != 0:
            target.unlink(missing_ok=True)
            raise EncryptionFailed("encryption to the receiver's OpenPGP key failed: "
                                   + _last_line(stderr, f"gpg exit {code}"))

    def encrypt_text(self, text: str) -> str:
        """`text` encrypted and ASCII armored, for the body of a mail."""
        result = subprocess.run(self._command("--armor", "--encrypt"), input=text.encode(),
                                capture_output=True, timeout=60)
        if result.returncode != 0:
            raise EncryptionFailed("encryption to the receiver's OpenPGP key failed: "
                                   + _last_line(result.stderr, f"gpg exit {result.returncode}"))
        return result.stdout.decode("ascii")


@contextmanager
def recipient(public_key: str) -> Iterator[Recipient]:
    """The receiver's ASCII armored key imported into a keyring of its own and checked;
    KeyUnusable (before anything is encrypted) when it cannot encrypt."""
    with tempfile.TemporaryDirectory(prefix="opsflow-gpg-") as home:
        os.chmod(home, 0o700)
        base = [GPG, "--batch", "--no-tty", "--quiet", "--homedir", home]
        try:
            imported = subprocess.run([*base, "--import"], input=public_key.encode(),
                                      capture_output=True, timeout=60)
            listing = subprocess.run([*base, "--with-colons", "--list-keys"],
                                     capture_output=True, timeout=60, text=True)
            fingerprint = encryption_fingerprint(listing.stdout)
            if imported.returncode != 0 and fingerprint is None:
                raise KeyUnusable("the receiver's OpenPGP key is not usable: "
                                  + _last_line(imported.stderr, "no key found"))
            if fingerprint is None:
                raise KeyUnusable("the receiver's OpenPGP key is not usable: no valid key "
                                  "that can encrypt (expired, revoked or signing only)")
            yield Recipient(home, fingerprint)
        finally:
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"],
                           capture_output=True, timeout=30, check=False)


def check_key(public_key: str) -> str:
    """The fingerprint that `public_key` encrypts to; KeyUnusable if none."""
    with recipient(public_key) as to:
        return to.fingerprint
