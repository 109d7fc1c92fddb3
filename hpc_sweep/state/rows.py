"""The rows the store returns, one NamedTuple per table: attribute access (``row.state``), built from SQLite's
tuples with ``_make`` (a poll of a 10,000-config sweep reads every table: cheaper than dicts). Their fields are
the table's columns, and the store selects them by name (:func:`columns`), so an older database whose added
columns sit at the end of its tables reads the same.

A config's ``params`` are decoded once, when the row is read. ``row._asdict()`` gives a plain dict (the notebook
API hands those out).
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class ConfigRow(NamedTuple):
    """One generated config and where it stands (its current attempt's state)."""

    name: str
    idx: int
    params: dict                  # decoded from the stored JSON
    params_key: str
    path: str
    digest: str
    device: Optional[str]
    gpus: int
    shape: str
    state: str                    # a ConfigState value
    attempt: int                  # 0 until its first submission
    reason: Optional[str]
    in_definition: int
    next_mode: Optional[str]      # how its next attempt starts: "resume", "fresh" or None
    walltime_s: Optional[int]
    log_context: Optional[str]    # JSON: the program's log options and location
    updated_at: Optional[float]


class SubmissionRow(NamedTuple):
    """One submission (one call of the submit command, usually an array)."""

    name: str                     # the unique job name
    shape: str
    script: str
    map: str
    scheduler_id: Optional[str]
    status: str                   # a SubmissionStatus value
    ntasks: int
    created_at: float
    submitted_at: Optional[float]
    note: Optional[str]


class AttemptRow(NamedTuple):
    """One (config, attempt): where it ran and how it ended."""

    config: str
    attempt: int
    submission: Optional[str]
    task_index: Optional[int]
    job_id: Optional[str]
    state: str                    # a ConfigState value, or SUBMITTING
    reason: Optional[str]
    run_config: Optional[str]
    submitted_at: Optional[float]
    started_at: Optional[float]
    ended_at: Optional[float]
    exit_code: Optional[int]
    host: Optional[str]
    elapsed: Optional[float]
    resumed_from: Optional[str]
    left_queue_at: Optional[float]
    stuck: Optional[str]          # pending for a reason waiting cannot clear: the fix (hpc_sweep.track.stuck)


class ProgressRow(NamedTuple):
    """What the log parser knows of a config's current attempt."""

    config: str
    attempt: Optional[int]
    log: Optional[str]
    cursor: Optional[str]
    parser_state: Optional[str]
    phase: Optional[str]
    epoch: Optional[int]
    max_epoch: Optional[int]
    train_loss: Optional[float]
    val_loss: Optional[float]
    best_val_loss: Optional[float]
    best_epoch: Optional[int]
    trend: Optional[str]
    updated_at: Optional[float]


class CurveRow(NamedTuple):
    """One epoch of a config's loss curve (table ``epochs``)."""

    config: str
    attempt: int
    epoch: int
    train_loss: Optional[float]
    val_loss: Optional[float]


class EventRow(NamedTuple):
    """Something that happened and why (forced regenerations, resumes, refusals...)."""

    time: float
    config: Optional[str]
    kind: str
    detail: Optional[str]


class EarlyStopRow(NamedTuple):
    """What the early-stopping rule (hpc_sweep.track.stopping) keeps of a config between polls."""

    config: str
    rung: Optional[int]           # asha: the highest rung it was judged at and kept
    stopped_epoch: Optional[int]  # the last epoch it had logged when it was stopped (None: not stopped)
    max_epoch: Optional[int]      # its planned last epoch then (epochs saved = max_epoch - stopped_epoch)
    exempt: int                   # 1: resubmitted by hand after a stop, never stopped again
    stopping_attempt: Optional[int]  # a stop sent (or about to be) for this attempt and not recorded yet
    stopping_reason: Optional[str]


def columns(row: type, alias: str = "") -> str:
    """The SELECT list of a row type: its fields by name (``c.name, c.idx, ...`` with an alias)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + name for name in row._fields)
