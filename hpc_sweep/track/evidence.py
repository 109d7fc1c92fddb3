""""completed" needs evidence of training: exit 0 alone is not enough.

A command that exits 0 without training (DeepH-pack's public ``deeph-train`` stub, a wrong command, a trainer
printing its help) would otherwise count as a finished run, and its config would rank as if it had a result.
The poll decides states from the scheduler and the markers first, then reads the logs; this check runs after
that reading, on what it read: a ``completed`` config whose log shows no training becomes ``failed`` with the
reason :data:`hpc_sweep.programs.base.NO_TRAINING_LOG`. A checked completed config carries a reason that says how it
ended ("trained to epoch 7 of 7", "early stopping at epoch 12"): a completed config without a reason is one not
checked yet, so a poll killed between deciding and checking leaves it for the next poll.

What counts as evidence is the program's call (:meth:`hpc_sweep.programs.base.Program.training_evidence`):
DeepH and a generic trainer with log patterns need an epoch logged by this attempt, XequiNet also its own end
line (``Training Completed``, ``Early Stopping``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, NamedTuple, Optional

from hpc_sweep.state.states import ConfigState

if TYPE_CHECKING:
    from hpc_sweep.programs.base import Program
    from hpc_sweep.session import Session
    from hpc_sweep.track.poll import PollReport

NAMES_PER_READ = 500  # SQL parameters per query, well under SQLite's limit

class Unchecked(NamedTuple):
    """A completed config whose evidence is not checked yet, with what the last reading of its log stored."""

    name: str
    attempt: int
    p_attempt: Optional[int]       # the attempt the stored reading is of
    parser_state: Optional[str]
    logged: int                    # whether this attempt logged an epoch row


_UNCHECKED = f"""
SELECT c.name, c.attempt, p.attempt AS p_attempt, p.parser_state,
       EXISTS (SELECT 1 FROM epochs e WHERE e.config = c.name AND e.attempt = c.attempt) AS logged
FROM configs c LEFT JOIN progress p ON p.config = c.name
WHERE c.state = '{ConfigState.COMPLETED}' AND c.reason IS NULL AND c.attempt >= 1
"""


def check_completed(session: Session, report: PollReport) -> None:
    """Give every completed config not checked yet its verdict: failed without evidence, else the reason."""
    store = session.store
    verdicts = _verdicts(session, store.query(_UNCHECKED, row=Unchecked))
    lacking = [name for name, _, state, _ in verdicts if state == ConfigState.FAILED]
    if lacking:
        # Before failing a run, its log once more: a large poll's reading starts before the scheduler answers, so
        # what it read of a run that ended meanwhile may lack the last lines (a failure is rare: this is cheap).
        from hpc_sweep.track.progress import update_progress

        for start in range(0, len(lacking), NAMES_PER_READ):
            update_progress(session, report, names=lacking[start:start + NAMES_PER_READ])
        rows = [r for r in store.query(_UNCHECKED, row=Unchecked) if r.name in lacking]
        again = {v[0]: v for v in _verdicts(session, rows)}
        verdicts = [again.get(v[0], v) for v in verdicts]
    if not verdicts:
        return
    now = time.time()
    with store.transaction() as conn:
        conn.executemany("UPDATE configs SET state = ?, reason = ?, updated_at = ? WHERE name = ?",
                         [(state, reason, now, name) for name, _, state, reason in verdicts])
        conn.executemany("UPDATE attempts SET state = ?, reason = ? WHERE config = ? AND attempt = ?",
                         [(state, reason, name, attempt) for name, attempt, state, reason in verdicts])
    _tell(report, verdicts)


def _verdicts(session: Session, rows: list[Unchecked]) -> list:
    """(config, attempt, state, reason) per row of _UNCHECKED."""
    program = session.program
    verdicts = []
    for row in rows:
        summary = _summary(program, row) if row.p_attempt == row.attempt else None
        ok, reason = program.training_evidence(summary, bool(row.logged))
        verdicts.append((row.name, row.attempt, ConfigState.COMPLETED if ok else ConfigState.FAILED, reason))
    return verdicts


def _summary(program: Program, row: Unchecked):
    """The log summary of the attempt as this poll left it, from the parser's stored state."""
    if not row.parser_state:
        return None
    saved = json.loads(row.parser_state)
    return program.log_parser({}, saved["options"], saved["state"]).summary()


def _tell(report: PollReport, verdicts: list) -> None:
    """This poll's change lines say the verdict: 'running -> completed' becomes '-> failed (reason)'."""
    changes = {change[0]: n for n, change in enumerate(report.changes) if change[2] == ConfigState.COMPLETED}
    for name, _, state, reason in verdicts:
        at: Optional[int] = changes.get(name)
        if at is not None:
            report.changes[at] = (name, report.changes[at][1], state, reason)
        elif state != ConfigState.COMPLETED:  # decided by an earlier poll that did not get to check it
            report.changes.append((name, ConfigState.COMPLETED, state, reason))
