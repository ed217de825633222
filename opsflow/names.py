"""Relative paths as the record store keeps them, for names that are not UTF-8 too.

A name in opsflow is what Python's os functions give: a str whose undecodable bytes are lone
surrogates (`os.fsdecode(b"caf\\xe9")` is 'caf\\udce9'). SQLite and PostgreSQL text refuse
surrogates, so the queue stores each path as two columns: `text`, the name itself when it is
UTF-8 (the common case: stored as it is, no extra bytes) or else a display form with each odd
byte written `\\xNN`; and `raw`, NULL for UTF-8 names, else the exact bytes. The display form
is deterministic and keeps folder prefixes (`a/b` shows as shown(a) + "/" + shown(b)), so
lookups and prefix matches run on the text column; a UTF-8 name that happens to spell
`\\xNN` may match too, which only loads a row more: the exact names decide.
"""

from __future__ import annotations


def is_utf8(path: str) -> bool:
    """Whether `path` holds no surrogate escapes (ASCII first: the fast, common case)."""
    if path.isascii():
        return True
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def raw_bytes(path: str) -> bytes:
    """The exact bytes of the name on the local file system."""
    return path.encode("utf-8", "surrogateescape")


def shown(path: str) -> str:
    """`path` as text any store, log or artifact takes: odd bytes written as `\\xNN`."""
    if is_utf8(path):
        return path
    return raw_bytes(path).decode("utf-8", "backslashreplace")


def stored(path: str | None) -> tuple[str | None, bytes | None]:
    """(text column, bytes column) of `path`: the bytes only when it is not UTF-8."""
    if path is None or is_utf8(path):
        return path, None
    return shown(path), raw_bytes(path)


def loaded(text: str | None, raw: bytes | None) -> str | None:
    """The exact name back from its two columns."""
    if raw is None:
        return text
    return raw.decode("utf-8", "surrogateescape")


def quoted(path: str) -> str:
    """`path` quoted for a log line or `opsflow sync status`: repr of the name, or of its
    bytes when it is not UTF-8 (b'caf\\xe9.txt': exact, and no lone surrogates)."""
    return repr(path) if is_utf8(path) else repr(raw_bytes(path))
