"""Any trainer with a config file and a text log: the sweep file's ``[log]`` table says where the log is and which
regular expressions find the epoch and the losses. No resume recipe: a resumed attempt restarts fresh."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, Optional

from hpc_sweep.common.dotted import get_dotted, set_dotted
from hpc_sweep.programs._common import as_int, decode, encode, number, record_row, summary_from
from hpc_sweep.programs.base import NO_TRAINING_LOG, EpochRow, LogParser, LogSummary, Program, ended_reason

DEFAULT_LOG_GLOB = "*.log"
METRICS = ("epoch", "train_loss", "val_loss")


class Generic(Program):
    name = "generic"

    def __init__(self, outputs_key: Optional[str] = None, log_glob: str = DEFAULT_LOG_GLOB,
                 epoch_regex: Optional[str] = None, train_loss_regex: Optional[str] = None,
                 val_loss_regex: Optional[str] = None, max_epoch_key: Optional[str] = None,
                 finished_regex: Optional[str] = None):
        self.outputs_key = outputs_key
        self.log_glob = log_glob
        self.regexes = {"epoch_regex": epoch_regex, "train_loss_regex": train_loss_regex,
                        "val_loss_regex": val_loss_regex, "finished_regex": finished_regex}
        self.max_epoch_key = max_epoch_key

    @classmethod
    def from_log_table(cls, log: Optional[dict]) -> "Generic":
        """From sweep.toml's ``[log]``: path, epoch, train_loss, val_loss, outputs_key, max_epoch_key (+ finished)."""
        log = log or {}
        return cls(outputs_key=log.get("outputs_key"), log_glob=log.get("path") or DEFAULT_LOG_GLOB,
                   epoch_regex=log.get("epoch"), train_loss_regex=log.get("train_loss"),
                   val_loss_regex=log.get("val_loss"), max_epoch_key=log.get("max_epoch_key"),
                   finished_regex=log.get("finished"))

    def set_outputs(self, config: dict, config_name: str, outputs_dir: Path) -> None:
        if self.outputs_key:
            set_dotted(config, self.outputs_key, str(outputs_dir))

    def max_epoch(self, config: dict) -> Optional[int]:
        return as_int(get_dotted(config, self.max_epoch_key, None)) if self.max_epoch_key else None

    def find_log(self, outputs_dir: Path, config: Optional[dict] = None) -> Optional[Path]:
        """The newest (by modification time) file matching the glob, relative to ``outputs_dir`` unless absolute."""
        pattern = self.log_glob if os.path.isabs(self.log_glob) else \
            os.path.join(glob.escape(str(outputs_dir)), self.log_glob)  # "[" in a folder name is no pattern
        newest: Optional[tuple[float, str]] = None
        for name in glob.glob(pattern):
            try:
                key = (os.stat(name).st_mtime, name)
            except OSError:
                continue
            if os.path.isfile(name) and (newest is None or key > newest):
                newest = key
        return Path(newest[1]) if newest else None

    def training_evidence(self, summary: Optional[LogSummary], logged: bool) -> tuple[bool, str]:
        if summary is None or summary.epoch is None or not logged:
            return False, f"{NO_TRAINING_LOG} (no line of its log matched the [log] patterns)"
        return True, ended_reason(summary)

    def log_parser(self, config: dict, options: Optional[dict] = None,
                   state: Optional[dict] = None) -> "GenericLogParser":
        merged: dict[str, Any] = dict(self.regexes, max_epoch=self.max_epoch(config))
        merged.update(options or {})
        return GenericLogParser(merged, state)


class GenericLogParser(LogParser):
    """Options: ``epoch_regex``, ``train_loss_regex``, ``val_loss_regex``, ``finished_regex``, ``max_epoch``.

    A regex's value is its group named after the metric (``epoch``, ``train_loss``, ``val_loss``) or ``value``,
    else its first group, else the whole match. An epoch row is closed by the val-loss match (or the train-loss
    match without a val regex, or the epoch match without either); its epoch is the last epoch match, or one more
    than the previous row's when the log has no epoch numbers. A new epoch number while losses wait closes their row.
    """

    def __init__(self, options: Optional[dict] = None, state: Optional[dict] = None):
        super().__init__(options, state)
        self._compiled = {m: re.compile(self.options[f"{m}_regex"]) for m in METRICS
                          if self.options.get(f"{m}_regex")}
        finished = self.options.get("finished_regex")
        self._finished = re.compile(finished) if finished else None
        self._closer = next((m for m in ("val_loss", "train_loss", "epoch") if m in self._compiled), None)

    def feed(self, text: str) -> list[EpochRow]:
        rows: list[EpochRow] = []
        for line in text.splitlines():
            rows += self._line(line)
        return rows

    def feed_line(self, line: str) -> Optional[EpochRow]:
        rows = self._line(line)
        return rows[-1] if rows else None

    def _line(self, line: str) -> list[EpochRow]:
        rows = []
        state = self.state
        if self._finished is not None and self._finished.search(line):
            state["finished"] = True
            state["phase"] = "finished"
        for metric, regex in self._compiled.items():
            match = regex.search(line)
            if not match:
                continue
            value = _value(match, metric)
            pending = state.setdefault("pending", {})
            if metric == "epoch":
                value = int(value) if value is not None and value.is_integer() else None
                waiting = any(key != "epoch" for key in pending)
                if waiting and pending.get("epoch") not in (None, value):
                    rows.append(self._close())  # losses of an epoch that had no closing line
                state["pending"][metric] = value
            else:
                pending[metric] = encode(value)
            if not state.get("finished"):
                state["phase"] = "training"
            if metric == self._closer:
                rows.append(self._close())
        return rows

    def _close(self) -> EpochRow:
        pending = self.state.get("pending") or {}
        epoch = pending.get("epoch")
        if epoch is None:
            last = self.state.get("last")
            epoch = (last[0] if last else 0) + 1
        self.state["pending"] = {}
        row = EpochRow(epoch, decode(pending.get("train_loss")), decode(pending.get("val_loss")))
        return record_row(self.state, row)

    def summary(self) -> LogSummary:
        result = summary_from(self.state, self.options.get("max_epoch"))
        if result.epoch is not None and result.max_epoch is not None and result.epoch >= result.max_epoch:
            result.finished = True
            result.phase = "finished"
        return result


def _value(match: re.Match, metric: str) -> Optional[float]:
    groups = match.groupdict()
    for name in (metric, "value"):
        if groups.get(name) is not None:
            return number(groups[name])
    if match.re.groups:
        return number(match.group(1))
    return number(match.group(0))
