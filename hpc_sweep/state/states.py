"""State names: a config's state, a submission's status, and the groups the rest of the tool asks about.

The names are the strings stored in SQLite (``configs.state``, ``attempts.state``, ``submissions.status``): the
enums are ``str`` enums, so a member equals, hashes as, prints as and is stored as its value, and a row read back
holds a plain string that compares equal to the member. Existing sweeps need no migration.

How the scheduler adapters' normalised states (:mod:`hpc_sweep.schedulers.base`, plain strings there: adapters
import nothing of the state) map onto these: ``pending``, ``running``, ``completed``, ``failed``, ``timeout``,
``oom``, ``cancelled``, ``node_fail`` and ``preempted`` are spelled as the config states of the same name, and a
poll records them as they are; ``unknown`` (the scheduler answered with a state we cannot map) changes nothing.
``lost`` is ours alone: a task that left the queue with no word from the scheduler or its markers on how it ended.

An attempt's state is a config state from ``pending`` on, or :data:`SUBMITTING`: recorded under a submission that
is still open (intent or unknown), before any task of it is known.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable


class _Name(str, Enum):
    """A name stored as its value: equal to, hashed as and printed as that string (``f"{state}"`` is the value on
    every Python version, so messages and SQL text read as before)."""

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class ConfigState(_Name):
    """A config's state (its current attempt's, once it has one), in the order status lists them."""

    GENERATED = "generated"   # written by generate, never submitted
    WAITING = "waiting"       # to be submitted when there is room (also after a resume or a resubmit)
    PENDING = "pending"       # queued in the scheduler, or held by an open submission (its reason says so)
    RUNNING = "running"
    COMPLETED = "completed"   # exited 0 with evidence of training (hpc_sweep.track.evidence)
    FAILED = "failed"
    TIMEOUT = "timeout"
    OOM = "oom"
    CANCELLED = "cancelled"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    LOST = "lost"             # left the queue with no word on how it ended (see hpc_sweep.track.decide)
    STOPPED = "stopped"       # ended early by the sweep's [early_stop] rule (hpc_sweep.track.stopping)


class SubmissionStatus(_Name):
    """A submission's status (the protocol's rules: :mod:`hpc_sweep.submit.intents`)."""

    INTENT = "intent"         # recorded before the submit command runs
    UNKNOWN = "unknown"       # the command ran, its outcome is unknown: looked up by name before anything else
    SUBMITTED = "submitted"   # the scheduler's id is recorded
    REFUSED = "refused"       # the scheduler answered that it queued nothing
    ABANDONED = "abandoned"   # a lookup answered "not there"; its configs went again under a new name
    CANCELLED = "cancelled"   # cancelled by name before its id was known


# An attempt recorded under an open submission, before any task of it is known.
SUBMITTING = "submitting"

S = ConfigState
SUBMITTABLE = frozenset({S.GENERATED, S.WAITING})            # submit takes these (unless an open submission holds them)
ACTIVE = frozenset({S.PENDING, S.RUNNING})                   # in the scheduler's hands: polled, cancellable
QUEUED = frozenset({S.GENERATED, S.WAITING, S.PENDING})      # not started yet
UNFINISHED = SUBMITTABLE | ACTIVE                            # work left for the sweep
FOLLOWED = ACTIVE | {S.LOST}                                 # attempts a poll decides (a lost one may turn up)
FINAL = frozenset(S) - UNFINISHED                            # ended, one way or another
# Ended without success, not by the user's hand nor by the early-stopping rule (a stopped run did what was asked).
UNSUCCESSFUL = FINAL - {S.COMPLETED, S.CANCELLED, S.STOPPED}
# What sweep.resume_states may name. Never stopped: a poll would bring back what the rule just stopped (a stopped
# config comes back only by hand, with resubmit).
RESUMABLE = UNSUCCESSFUL | {S.CANCELLED}
RESUMABLE_DEFAULT = frozenset({S.TIMEOUT, S.PREEMPTED, S.NODE_FAIL})  # sweep.resume_states when it says nothing
OPEN = frozenset({SubmissionStatus.INTENT, SubmissionStatus.UNKNOWN})  # submissions that hold their configs
del S


def ordered(states: Iterable[str]) -> tuple[ConfigState, ...]:
    """``states`` in status order (for messages and defaults that must not depend on set order)."""
    wanted = set(states)
    return tuple(state for state in ConfigState if state in wanted)


def sql_list(states: Iterable[str]) -> str:
    """``'pending', 'running'``: a group of names as a literal list for constant SQL text (``state IN (...)``).
    Names only: values from elsewhere go through placeholders (:func:`hpc_sweep.state.store.placeholders`)."""
    return ", ".join(f"'{state}'" for state in sorted(set(states)))
