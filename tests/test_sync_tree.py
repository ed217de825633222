"""Include/exclude globs of a mapping, rsync style."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsflow.sync.tree import MappingSettings, glob_matches
from opsflow.transports.temp_names import temp_name


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("*.tmp", "a.tmp", True),
    ("*.tmp", "deep/down/a.tmp", True),  # no slash: a name at any depth
    ("*.tmp", "a.tmp.txt", False),
    (".git", ".git/objects/ab", True),  # inside an excluded folder
    ("build/*.o", "build/x.o", True),
    ("build/*.o", "src/build/x.o", False),  # with a slash: from the top
    ("build/*.o", "build/sub/x.o", False),  # * stays inside one name
    ("build/**/*.o", "build/sub/deeper/x.o", True),
    ("build/**/*.o", "build/x.o", True),
    ("photos", "photos/2025/a.jpg", True),
    ("photo?.jpg", "photo1.jpg", True),
    ("[ab].txt", "b.txt", True),
    ("[!ab].txt", "b.txt", False),
    ("a+b (1).txt", "a+b (1).txt", True),  # regex characters are plain
    ("/top.txt", "top.txt", True),  # a leading slash anchors, as in .gitignore
    ("/top.txt", "a/top.txt", False),
    ("*.tmp", "line\nbreak.tmp", True),
])
def test_glob_matches(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


def test_include_then_exclude(tmp_path: Path) -> None:
    settings = MappingSettings(name="m", local_root=tmp_path, include=("*.jpg", "docs/**"),
                               exclude=("*-draft.*", ".cache"))
    assert settings.wants("a/b.jpg")
    assert settings.wants("docs/readme.md")
    assert not settings.wants("a/b.png")
    assert not settings.wants("a/b-draft.jpg")
    assert not settings.wants(".cache/x.jpg")
    assert not settings.wants("a/" + temp_name())  # a transport's upload in flight
    assert settings.wants("docs/.opsflow-partial-notes")  # a user's file with that prefix


def test_exclude_reincludes_with_a_bang_as_gitignore_does(tmp_path: Path) -> None:
    settings = MappingSettings(name="m", local_root=tmp_path, exclude=("*.log", "!keep.log"))
    assert not settings.wants("a/run.log")
    assert settings.wants("a/keep.log")
