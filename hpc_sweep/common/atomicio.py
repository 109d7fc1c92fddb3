"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Union

from hpc_sweep.common import faults


def write_atomic(path: Union[str, Path], data: Union[str, bytes], mode: int = 0o644, fsync: bool = True) -> None:
    """Temp file in the same folder (created with its final mode, less the umask), then rename.
    ``fsync=False`` for bulk files whose loss on power failure is repaired by running the command again
    (thousands of fsyncs would dominate ``generate``)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    faults.point("after_write")
