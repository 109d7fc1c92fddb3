"""What a trainer program plugin provides: config checks, where its log lives, how to read it, how to resume.

One module per program (deeph.py, xequinet.py, generic.py) subclasses :class:`Program`. Log parsers are
incremental: :meth:`LogParser.feed` receives only complete new lines (see :mod:`hpc_sweep.common.logtail`) and keeps
what it needs in a JSON-serialisable ``state`` dict, so a later poll continues where the last one stopped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class EpochRow:
    """One epoch as the trainer logged it. Missing numbers are None; ``nan`` stays float('nan')."""

    epoch: int
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None    # the score used for ranking (xequinet: losses_weight-weighted val MAE)
    seconds: Optional[float] = None     # the epoch's time where logged
    lr_scale: Optional[float] = None    # deeph Scale / xequinet LR


@dataclass
class LogSummary:
    """Everything the status table needs from a log, after all lines fed so far."""

    phase: Optional[str] = None          # "starting", "graph", "compiling", "training", "finished", "early_stopped"
    epoch: Optional[int] = None          # last epoch seen
    max_epoch: Optional[int] = None      # from the config, or the log where it says
    train_loss: Optional[float] = None   # of the last epoch
    val_loss: Optional[float] = None     # of the last epoch
    best_val_loss: Optional[float] = None
    best_epoch: Optional[int] = None
    finished: bool = False               # the log itself says training ended normally
    info: dict[str, Any] = field(default_factory=dict)  # sizes, parameter count, version...


class LogParser:
    """Incremental parser. Subclasses implement :meth:`feed_line`."""

    def __init__(self, options: Optional[dict[str, Any]] = None, state: Optional[dict[str, Any]] = None):
        self.options = options or {}
        self.state: dict[str, Any] = state if state is not None else {}

    def feed(self, text: str) -> list[EpochRow]:
        """Feed complete lines; return the epoch rows completed by them (in order)."""
        rows: list[EpochRow] = []
        for line in text.splitlines():
            row = self.feed_line(line)
            if row is not None:
                rows.append(row)
        return rows

    def feed_line(self, line: str) -> Optional[EpochRow]:
        raise NotImplementedError

    def start_attempt(self) -> None:
        """A new attempt of the run begins; its lines follow those already fed (an appended log) or come from a
        new log. The curve and the best value carry on; an unfinished epoch (the attempt before was killed in
        it) and whatever the log said of the run's end are dropped: this attempt has to say it again."""
        state = self.state
        state["finished"] = False
        state["phase"] = "starting"
        state.pop("pending", None)
        info = state.get("info")
        if info:
            info.pop("stop_reason", None)

    def summary(self) -> LogSummary:
        raise NotImplementedError


# The reason a run that exited 0 without training fails with (see :meth:`Program.training_evidence`).
NO_TRAINING_LOG = "exited 0 without a training log"


class Program:
    """A trainer: how its config is shaped, checked, pointed at its output folder, logged and resumed."""

    name = "base"
    config_format = "toml"  # or "yaml"

    def prepare(self, config: dict) -> list[str]:
        """Fix, in place, settings that are wrong for batch jobs; one note per change. Called before :meth:`check`."""
        return []

    def set_outputs(self, config: dict, config_name: str, outputs_dir: Path) -> None:
        """Point the config at its own output folder (mutates ``config``)."""
        raise NotImplementedError

    def check(self, config: dict, gpus: int) -> tuple[list[str], list[str]]:
        """(errors, warnings) for one generated config; each message starts with the dotted key."""
        return [], []

    def device_key(self) -> Optional[str]:
        """The dotted key holding the device string, if the program's config has one."""
        return None

    def max_epoch(self, config: dict) -> Optional[int]:
        return None

    def find_log(self, outputs_dir: Path, config: Optional[dict] = None) -> Optional[Path]:
        """The log of the current attempt under the config's outputs folder, or None if not written yet.
        ``config`` is needed where the log's name is a config setting (xequinet ``trainer.log_file``)."""
        raise NotImplementedError

    def find_log_text(self, outputs_dir: str, config: Optional[dict] = None) -> Optional[str]:
        """:meth:`find_log` as a plain string (a poll asks for thousands; a program may answer faster)."""
        found = self.find_log(Path(outputs_dir), config)
        return None if found is None else str(found)

    def log_parser(self, config: dict, options: dict, state: Optional[dict] = None) -> LogParser:
        raise NotImplementedError

    def log_context(self, config: dict) -> dict:
        """What the poller needs of a config to find and read its log, computed once at generate time so a poll
        never parses thousands of config files: the parser's options, and the part of the config
        :meth:`find_log` reads."""
        return {"options": self.log_parser(config, None, None).options, "find": self.find_log_config(config)}

    def find_log_config(self, config: dict) -> Optional[dict]:
        """The subset of ``config`` that :meth:`find_log` reads (None: it reads nothing)."""
        return None

    def resume_config(self, config: dict, outputs_dir: Path) -> Optional[dict]:
        """A copy of ``config`` that continues from the newest checkpoint, or None when there is none
        (the caller then restarts fresh)."""
        return None

    def training_evidence(self, summary: Optional[LogSummary], logged: bool) -> tuple[bool, str]:
        """(trained, reason) for an attempt that exited 0. ``summary``: its log as the poll last read it (None
        when this attempt has no log read); ``logged``: whether this attempt logged an epoch row. The reason
        says how the run ended, or why exit 0 is not enough (see :mod:`hpc_sweep.track.evidence`)."""
        return True, "exited 0"

    def run_environment(self, config: dict, outputs_dir: Path) -> dict[str, str]:
        """Environment variables the attempt that runs ``config`` needs, which the job exports before the
        command (xequinet: loading a checkpoint this sweep wrote with PyTorch >= 2.6)."""
        return {}

    def fresh_config(self, config: dict) -> dict:
        """A copy of ``config`` with the settings :meth:`resume_config` adds taken out again (``--fresh``)."""
        return copy.deepcopy(config)


def ended_reason(summary: LogSummary) -> str:
    """How a run that trained ended, in words: "early stopping at epoch 12", "trained to epoch 7 of 7"."""
    info = summary.info or {}
    stop = info.get("stop_reason")
    if stop == "early_stopping":
        return f"early stopping at epoch {info.get('early_stop_epoch') or summary.epoch}"
    if stop == "min_learning_rate_scale":
        return f"learning-rate scale below the minimum at epoch {summary.epoch}"
    if stop == "min_lr":
        return f"minimum learning rate reached at epoch {summary.epoch}"
    of = f" of {summary.max_epoch}" if summary.max_epoch is not None else ""
    return f"trained to epoch {summary.epoch}{of}"
