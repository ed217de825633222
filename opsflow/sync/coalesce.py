"""Coalescing rules of the sync queue: the queue keeps the last intent per path, not history.

The rules are pure (no database): the sensor applies them to its in-memory buffer between
flushes, and the durable queue applies them to the pending rows a flush touches. Each rule
is a local rewrite that leaves the queue equivalent to the events it replaced, so applying
the coalesced queue to the target gives the same tree as replaying every event:

- send then send = one send; delete then send = send; send then delete = delete;
- a chain of moves is one move; a move of a path with a pending send is the move (which
  tolerates a missing source) plus a send of the new path;
- a move of a file that never reached the target (an editor's swap file: `source_unsent`,
  set by the sensor and checked by the queue against its records) is a send of the new path;
- a directory move is one move of its prefix; pending work under the old prefix is rewritten
  to the new one and put after the move;
- a directory delete drops pending sends and deletes under it.

An entry under a live lease is in flight: it is never changed or dropped, and a new intent
simply goes after it. A changed entry is dropped and appended anew, so that the order of the
queue (its ids) stays the order in which the changes must reach the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import count

SEND, DELETE, MOVE = "send", "delete", "move"


@dataclass(frozen=True)
class Intent:
    """One change to mirror: send a file, delete a file or folder, move a file or folder."""

    kind: str
    path: str
    dest_path: str | None = None
    is_dir: bool = False
    not_before: datetime | None = None  # a send waits for the file to be quiet until then
    # A move whose source the sensor saw created and no drain had sent (the queue checks its
    # records before it believes it); never stored.
    source_unsent: bool = False


@dataclass
class Entry:
    intent: Intent
    row_id: int | None = None  # the queue row it came from, if any
    locked: bool = False  # claimed by a live drain: in flight, left alone


def under(path: str, prefix: str) -> bool:
    """Whether `path` is strictly inside the folder `prefix`."""
    return path.startswith(prefix + "/")


def rebase(path: str, old: str, new: str) -> str:
    return new + path[len(old):]


class Coalescer:
    """An ordered set of pending entries to which intents are added under the rules above."""

    def __init__(self, entries: Iterable[Entry] = (), *, unsent_moves: bool = False) -> None:
        """`unsent_moves`: whether a move marked `source_unsent` may become a send (the
        queue, which checked the mark; the sensor's buffer keeps the move and its mark)."""
        self.unsent_moves = unsent_moves
        self._seq = count()
        self._entries: dict[int, Entry] = {}
        self._by_path: dict[str, set[int]] = {}
        self.dropped_rows: list[int] = []  # row ids of entries that were removed or rewritten
        for entry in entries:
            self._put(entry)

    # --- bookkeeping ---------------------------------------------------------------------

    def _put(self, entry: Entry) -> None:
        key = next(self._seq)
        self._entries[key] = entry
        for path in self._paths(entry.intent):
            self._by_path.setdefault(path, set()).add(key)

    @staticmethod
    def _paths(intent: Intent) -> tuple[str, ...]:
        return (intent.path,) if intent.dest_path is None else (intent.path, intent.dest_path)

    def _drop(self, key: int) -> Entry:
        entry = self._entries.pop(key)
        for path in self._paths(entry.intent):
            keys = self._by_path.get(path)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_path[path]
        if entry.row_id is not None:
            self.dropped_rows.append(entry.row_id)
        return entry

    def _touching(self, path: str) -> list[tuple[int, Entry]]:
        """Entries naming `path` (as source or destination), in queue order."""
        return sorted((k, self._entries[k]) for k in self._by_path.get(path, ()))

    def _inside(self, prefix: str) -> list[tuple[int, Entry]]:
        """Entries naming `prefix` itself or anything under it, in queue order."""
        return [(k, e) for k, e in self._entries.items()
                if any(p == prefix or under(p, prefix) for p in self._paths(e.intent))]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def intents(self) -> list[Intent]:
        return [entry.intent for entry in self._entries.values()]

    def new_entries(self) -> list[Entry]:
        """Entries that are not yet rows, in the order they must be written."""
        return [entry for entry in self._entries.values() if entry.row_id is None]

    # --- the rules ------------------------------------------------------------------------

    def add(self, intent: Intent) -> None:
        if intent.kind == MOVE:
            if not intent.dest_path or intent.dest_path == intent.path:
                return
            if intent.is_dir:
                self._move_dir(intent)
            else:
                self._move_file(intent)
        elif intent.kind == DELETE and intent.is_dir:
            self._delete_dir(intent)
        elif intent.kind in (SEND, DELETE):
            self._replace_file(intent)
        else:
            raise ValueError(f"unknown sync action kind {intent.kind!r}")

    def _replace_file(self, intent: Intent) -> None:
        """send or delete of a file: earlier free sends and deletes of that file are moot."""
        for key, entry in self._touching(intent.path):
            old = entry.intent
            if (not entry.locked and old.kind in (SEND, DELETE) and not old.is_dir
                    and old.path == intent.path):
                self._drop(key)
        self._put(Entry(intent))

    def _move_file(self, intent: Intent) -> None:
        src, dst = intent.path, intent.dest_path
        assert dst is not None
        sends_of_src = [(k, e) for k, e in self._touching(src)
                        if e.intent.kind == SEND and e.intent.path == src]
        not_before = sends_of_src[-1][1].intent.not_before if sends_of_src else None
        for key, entry in sends_of_src:
            if not entry.locked:
                self._drop(key)
        if intent.source_unsent and self.unsent_moves and not self._touching(src):
            # Nothing of `src` is on the target or on its way there: nothing to move.
            self._replace_file(Intent(SEND, dst, not_before=not_before))
            return
        origin, unsent = src, intent.source_unsent
        chain = self._chain_into(src, is_dir=False)
        if chain is not None:
            first = self._drop(chain).intent
            origin, unsent = first.path, first.source_unsent
        # The move overwrites whatever waited to be written at the destination.
        for key, entry in self._touching(dst):
            old = entry.intent
            if (not entry.locked and old.kind in (SEND, DELETE) and not old.is_dir
                    and old.path == dst):
                self._drop(key)
        if origin != dst:
            self._put(Entry(replace(intent, path=origin, source_unsent=unsent)))
        if sends_of_src or origin == dst:
            # The source's new content never reached the target: send it under its new name.
            self._put(Entry(Intent(SEND, dst, not_before=not_before)))

    def _move_dir(self, intent: Intent) -> None:
        src, dst = intent.path, intent.dest_path
        assert dst is not None
        origin, after = src, -1
        chain = self._chain_into(src, is_dir=True)
        if chain is not None:
            origin, after = self._drop(chain).intent.path, chain
        rewritten: list[Intent] = []
        for key, entry in self._inside(src):
            old = entry.intent
            if entry.locked:
                if old.kind == SEND and under(old.path, src):
                    # In flight under the old name; it may find the file gone: send it again.
                    rewritten.append(Intent(SEND, rebase(old.path, src, dst)))
                continue
            if key < after:
                continue  # older than the move onto `src`: about what was there before
            new_path = rebase(old.path, src, dst) if under(old.path, src) else old.path
            new_dest = old.dest_path
            if new_dest is not None and under(new_dest, src):
                new_dest = rebase(new_dest, src, dst)
            if (new_path, new_dest) == (old.path, old.dest_path):
                continue  # names `src` itself: it happened before this move, it stays before
            self._drop(key)
            rewritten.append(replace(old, path=new_path, dest_path=new_dest))
        if origin != dst:
            self._put(Entry(replace(intent, path=origin)))
        for moved in rewritten:
            self._put(Entry(moved))

    def _delete_dir(self, intent: Intent) -> None:
        prefix = intent.path
        for key, entry in self._inside(prefix):
            old = entry.intent
            if entry.locked:
                continue
            inside_src = old.path == prefix or under(old.path, prefix)
            if old.kind in (SEND, DELETE) and inside_src:
                self._drop(key)
            elif old.kind == MOVE and inside_src and old.dest_path is not None and (
                    old.dest_path == prefix or under(old.dest_path, prefix)):
                self._drop(key)
        self._put(Entry(intent))

    def _chain_into(self, path: str, *, is_dir: bool) -> int | None:
        """The free move whose destination is `path`, if nothing in flight touched it since."""
        touching = self._touching(path)
        for key, entry in reversed(touching):
            old = entry.intent
            if entry.locked:
                return None
            if old.kind == MOVE and old.dest_path == path and old.is_dir == is_dir:
                return key
        return None


def coalesce(intents: Iterable[Intent]) -> list[Intent]:
    """The coalesced form of a sequence of intents (the sensor's in-memory buffer)."""
    coalescer = Coalescer()
    for intent in intents:
        coalescer.add(intent)
    return coalescer.intents()
