"""The on-disk cache of converted models (dequantized GGUF weights, converted tokenizers).

An entry is keyed by a hash of everything that decides its content: the source file's
resolved path, size and modification time, the kind of entry and ``CACHE_VERSION`` (bump
it when a conversion changes). Entries are written to a temporary name beside their final
one and moved into place with one rename, so a reader sees a whole entry or none; a reader
that finds an entry it cannot use rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import uuid
from typing import Callable

CACHE_VERSION = 1


def default_cache_dir() -> pathlib.Path:
    """``~/.cache/eventkernel``: where converted models go unless a caller names a folder."""
    return pathlib.Path.home() / ".cache" / "eventkernel"


def cache_key(source: pathlib.Path, kind: str) -> str:
    """A hash of the source file's identity (path, size, mtime), ``kind`` and the version."""
    source = source.resolve()
    stat = source.stat()
    ident = json.dumps([CACHE_VERSION, kind, str(source), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def cache_path(cache_dir: str | os.PathLike | None, source: pathlib.Path, kind: str,
               suffix: str = "") -> pathlib.Path:
    """Where the ``kind`` entry of ``source`` lives under ``cache_dir`` (None: the default)."""
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None \
        else default_cache_dir()
    return root / kind / f"{source.stem}-{cache_key(source, kind)}{suffix}"


def write_atomically(target: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    """Call ``write(temporary path)`` (a file or a folder), then move it to ``target``.

    Another process writing the same entry at the same time is harmless: both write whole
    entries and the last rename wins. A failed write leaves nothing behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        if tmp.is_dir():
            remove(target)
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.is_dir():   # lost a race to another writer: theirs is whole
                    raise
        else:
            os.replace(tmp, target)
    finally:
        remove(tmp)


def remove(path: pathlib.Path) -> None:
    """Delete a cache file or folder if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)
