"""Read only what a log gained since the last poll, and the last lines of a file.

A cursor is a small JSON-serialisable dict kept per log between polls::

    {"path", "dev", "ino", "offset", "size", "mtime", "head"}

``offset`` is where the next complete line starts, ``size`` the end of the bytes examined; ``head``
("<n>:<hash>") fingerprints the file's first n ≤ 64 bytes, so a file truncated and rewritten past the old offset
between two polls is still noticed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Union

HEAD_BYTES = 64
TAIL_BLOCK = 8192

PathLike = Union[str, Path]


def read_new(path: PathLike, cursor: Optional[dict] = None,
             max_bytes: Optional[int] = None) -> tuple[str, Optional[dict]]:
    """New complete lines of ``path`` since ``cursor`` and the cursor to pass next time.

    A partial last line waits for the next call. When the same path now holds a different or shorter file the
    read starts again from byte 0 and the returned cursor has ``"reset": True``: the caller must then drop what
    it parsed before. A cursor for another path (a resumed DeepH run writes a new folder) starts at 0 without
    ``reset``. A missing file returns ``("", cursor)`` unchanged. ``max_bytes`` bounds one call's read.
    """
    if cursor and cursor.get("path") == str(path):
        try:
            stat = os.stat(path)
        except OSError:  # deleted or rotated away: nothing new, and no reset (the last call's reset was handled)
            return "", _without_reset(cursor)
        if _unchanged(cursor, stat):
            return "", _without_reset(cursor)
    try:
        fd = os.open(path, os.O_RDONLY)  # os-level: a first poll opens 10,000 logs
    except OSError:
        return "", _without_reset(cursor) if cursor else cursor
    try:
        return _read(fd, str(path), cursor, max_bytes)
    except OSError:
        return "", _without_reset(cursor) if cursor else cursor
    finally:
        os.close(fd)


def _unchanged(cursor: dict, stat: os.stat_result) -> bool:
    return (cursor.get("dev"), cursor.get("ino"), cursor.get("size"), cursor.get("mtime")) == \
        (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _without_reset(cursor: dict) -> dict:
    if "reset" not in cursor:
        return cursor
    return {k: v for k, v in cursor.items() if k != "reset"}


def _read(fd: int, path: str, cursor: Optional[dict], max_bytes: Optional[int]) -> tuple[str, dict]:
    stat = os.fstat(fd)  # the file actually opened, in case it was replaced since os.stat
    offset, reset = 0, False
    if cursor and cursor.get("path") == path:
        first = os.pread(fd, HEAD_BYTES, 0)
        if _same_file(cursor, stat, first):
            offset = cursor["offset"]
        else:
            reset = True
    wanted = stat.st_size - offset
    data = _pread_all(fd, wanted if max_bytes is None else min(wanted, max_bytes), offset)
    if offset == 0:
        first = data[:HEAD_BYTES]  # one read for a file read from its start (a first poll reads 10,000)
    cut = data.rfind(b"\n") + 1
    if cut == 0 and max_bytes is not None and len(data) >= max_bytes:
        cut = len(data)  # one line longer than max_bytes: hand it over in pieces rather than stall forever
    # "size" is the end of the bytes examined, so a read cut short by max_bytes is not mistaken for "no news".
    new_cursor = {"path": path, "dev": stat.st_dev, "ino": stat.st_ino, "offset": offset + cut,
                  "size": offset + len(data), "mtime": stat.st_mtime_ns, "head": _head(first)}
    if reset:
        new_cursor["reset"] = True
    text = data[:cut].decode("utf-8", errors="replace")
    if cut and not text.endswith("\n"):
        text += "\n"
    return text, new_cursor


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes from ``offset``, or fewer at the end of the file (pread may return less than asked)."""
    chunks, got = [], 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _same_file(cursor: dict, stat: os.stat_result, first: bytes) -> bool:
    if (cursor.get("dev"), cursor.get("ino")) != (stat.st_dev, stat.st_ino):
        return False
    if stat.st_size < cursor.get("offset", 0):
        return False  # truncated
    head = cursor.get("head")
    if not head:
        return True
    length = int(head.split(":", 1)[0])
    return _head(first[:length]) == head


def _head(first: bytes) -> str:
    return f"{len(first)}:{hashlib.sha1(first).hexdigest()[:16]}"


def tail_lines(path: PathLike, n: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``n`` lines of ``path`` (the last one may be unfinished), reading at most ``max_bytes`` from the
    end; [] for a missing file."""
    if n <= 0:
        return []
    try:
        handle = open(path, "rb")
    except OSError:
        return []
    with handle:
        end = handle.seek(0, os.SEEK_END)
        start, data = end, b""
        # n complete lines need n+1 newlines in view (the oldest line is cut unless the file starts there).
        while start > 0 and data.count(b"\n") <= n and end - start < max_bytes:
            step = min(TAIL_BLOCK, start, max_bytes - (end - start))
            start -= step
            handle.seek(start)
            data = handle.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]
    return lines[-n:]
