"""One copy of each expensive artefact per test run: tiny bases, real tokenizers, workspaces smoke.py has run in,
trained adapters and their exports. Content-keyed (the key is what the artefact is made from, hashed), built once
under a file lock that the xdist workers share, and written under a temporary name and renamed when whole, so a
build that fails leaves nothing a later test could take for finished.

What a test takes from here it must not change: a test that writes copies first (copy_of)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

ENV = "TUNEFORGE_TEST_CACHE"


def root() -> Path:
    """The run's cache folder, which conftest sets for every worker (one per pytest run, shared by its workers)."""
    return Path(os.environ[ENV])


def key_of(*parts) -> str:
    """A short hash of what an artefact is made from: strings, numbers, dicts, lists, and files or folders by content."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = (
                sorted(p for p in part.rglob("*") if p.is_file() and ".git" not in p.parts) if part.is_dir() else [part]
            )
            for file in files:
                digest.update(file.relative_to(part).as_posix().encode() if part.is_dir() else b"")
                digest.update(hashlib.sha256(file.read_bytes()).digest())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def cached(kind: str, key: str, build: Callable[[Path], None]) -> Path:
    """The folder ROOT/KIND-KEY, made by build(folder) the first time any worker asks for it."""
    final = root() / f"{kind}-{key}"
    if final.exists():
        return final
    root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if not final.exists():
            partial = root() / f".{kind}-{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(final)
    return final


def copy_of(source: Path, dest: Path) -> Path:
    """A private copy of a cached folder, for a test that writes into it."""
    shutil.copytree(source, dest, symlinks=True)
    return dest
