"""status.json and status.md, rewritten by every poll from the state (the status object of
:mod:`hpc_sweep.results.status`), each replaced atomically.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from hpc_sweep.common.atomicio import write_atomic
from hpc_sweep.common.errors import RuntimeFailure

if TYPE_CHECKING:
    from hpc_sweep.session import Session


def snapshot_json(snapshot: dict) -> str:
    """Readable and fast: the header indented, one config per line (json's C encoder, not its indenting one)."""
    head = {k: v for k, v in snapshot.items() if k != "configs"}
    lines = json.dumps(head, indent=2)[:-2].rstrip("\n")
    records = snapshot["configs"]
    # One encoder call for all records, cut at the n-1 record boundaries; a string that holds the boundary's
    # spelling makes the count differ, and then each record is encoded on its own.
    together = json.dumps(records)[1:-1]
    if together.count("}, {") == max(len(records) - 1, 0):
        configs = together.replace("}, {", "},\n    {")
    else:
        configs = ",\n    ".join(json.dumps(c) for c in records)
    return f"{lines},\n  \"configs\": [\n    {configs}\n  ]\n}}\n"


def write_snapshots(session: Session) -> None:
    """status.json and status.md, each replaced atomically: a reader never sees half a file. Not fsynced: both
    are made again from the state by every poll, and a poll of 10,000 configs would wait for 4 MB to reach the
    disk."""
    from hpc_sweep.results.status import render, snapshot as take_snapshot

    snapshot = take_snapshot(session)
    for path, text in ((session.paths.status_json, snapshot_json(snapshot)),
                       (session.paths.status_md, render(snapshot, "markdown", session.spec.swept_keys))):
        try:
            write_atomic(path, text, fsync=False)
        except OSError as exc:
            raise RuntimeFailure(f"{path}: could not write the status snapshot ({exc.strerror or exc}); "
                                 "the previous one is kept") from None
