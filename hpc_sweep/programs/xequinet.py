"""XequiNet (``xeq train`` under torchrun, YAML configs, ``<save_dir>/<log_file>`` log of tabulate tables).

Facts used here are in ``reference/xequinet.md``. The log is truncated when a run starts fresh and appended when
it resumes (``trainer.resume``), so one parser state covers every attempt of a config; the poller resets the state
when :func:`hpc_sweep.common.logtail.read_new` reports the file was replaced.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Optional

from hpc_sweep.common.dotted import get_dotted, set_dotted
from hpc_sweep.programs._common import InfoParser, as_int, decode, encode, number, record_row, summary_from
from hpc_sweep.programs.base import NO_TRAINING_LOG, EpochRow, LogSummary, Program, ended_reason

DEFAULT_MAX_EPOCHS = 300
DEFAULT_RUN_NAME = "xequinet"
DEFAULT_LOG_FILE = "loss.log"
KEEP_BACKUPS = 3
WEIGHTS_ONLY_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}

TRAINER_KEYS = ("run_name", "resume", "ckpt_file", "finetune_modules", "lossfn", "losses_weight", "optimizer",
                "optimizer_kwargs", "max_lr", "min_lr", "warmup_scheduler", "warmup_epochs", "lr_scheduler",
                "lr_scheduler_kwargs", "max_epochs", "grad_clip", "early_stoppings", "early_stopping_mode",
                "ema_decay", "seed", "num_workers", "save_dir", "best_k", "log_file", "log_steps", "log_epochs")
DATA_KEYS = ("db_path", "cutoff", "split", "targets", "base_targets", "default_dtype", "node_shift", "node_scale",
             "max_num_samples", "batch_size", "valid_batch_size")
PLATEAU = ("reduce_on_plateau", "plateau")

# The message after "YYYY-MM-DD HH:MM:SS - INFO - "; one space is eaten so table lines keep their indentation.
_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\s+-\s+[A-Z]+\s+- ?")
_TRAIN_MAE = re.compile(r"^Train\s+MAE\s+(\d+)\s+(?:\[\s*\d+\s*/\s*\d+\s*\]\s+)?(\S+)\s*(.*)$")
_TRAIN_RMSE = re.compile(r"^Train\s+RMSE\s+(.*)$")
_VALID = re.compile(r"^(?:EMA\s+Valid|Validation|Valid)\s+(MAE|RMSE)\s+(.*)$")
_EARLY_STOP = re.compile(r"Early Stopping at Epoch\s+(\d+)")
_BEST_CKPT = re.compile(r"Best Checkpoint:\s*(\S+)\s+at Epoch\s+(\d+)")
_PROPERTY = re.compile(r"^Property:\s*(\S+)\s+Unit:\s*(.*)$")


class XequiNet(Program):
    name = "xequinet"
    config_format = "yaml"

    def set_outputs(self, config: dict, config_name: str, outputs_dir: Path) -> None:
        # XequiNet needs save_dir to exist already: the caller creates it.
        set_dotted(config, "trainer.save_dir", str(outputs_dir))
        set_dotted(config, "trainer.run_name", config_name)

    def max_epoch(self, config: dict) -> Optional[int]:
        return as_int(get_dotted(config, "trainer.max_epochs", DEFAULT_MAX_EPOCHS))

    def check(self, config: dict, gpus: int) -> tuple[list[str], list[str]]:
        errors: list[str] = []
        warnings: list[str] = []
        if get_dotted(config, "trainer.ema_decay", None) is None:
            errors.append("trainer.ema_decay: not set; XequiNet crashes at the first validation without it: "
                          "set trainer.ema_decay = 0.995")
        if get_dotted(config, "trainer.lr_scheduler", None) in PLATEAU:
            warnings.append("trainer.lr_scheduler: the plateau scheduler path is broken in XequiNet; "
                            "use cosine_annealing")
        if (as_int(get_dotted(config, "trainer.best_k", 1)) or 1) > 1:
            warnings.append("trainer.best_k: above 1 the final 'Best' line can name the wrong checkpoint "
                            "(the status table computes the best epoch itself)")
        errors += _weights_errors(config)
        batch = as_int(get_dotted(config, "data.batch_size", None))
        if batch is not None and gpus > 1 and batch % gpus:
            errors.append(f"data.batch_size: {batch} is split across {gpus} GPUs and must divide by {gpus}")
        warnings += _unknown_keys(config, "trainer", TRAINER_KEYS) + _unknown_keys(config, "data", DATA_KEYS)
        return errors, warnings

    def find_log(self, outputs_dir: Path, config: Optional[dict] = None) -> Optional[Path]:
        name = get_dotted(config, "trainer.log_file", None) if config else None
        log = Path(outputs_dir) / (name or DEFAULT_LOG_FILE)
        return log if log.is_file() else None

    def find_log_config(self, config: dict) -> Optional[dict]:
        name = get_dotted(config, "trainer.log_file", None)
        return {"trainer": {"log_file": name}} if name else None

    def training_evidence(self, summary: Optional[LogSummary], logged: bool) -> tuple[bool, str]:
        # XequiNet ends every training with "Training Completed" (after "Early Stopping at Epoch N" when it
        # stopped early); the parser forgets it when a new attempt starts, so it is this attempt's own.
        if summary is None or summary.epoch is None:
            return False, NO_TRAINING_LOG
        if not summary.finished:
            return False, f"{NO_TRAINING_LOG} (its loss.log does not end with 'Training Completed')"
        return True, ended_reason(summary)

    def log_parser(self, config: dict, options: Optional[dict] = None,
                   state: Optional[dict] = None) -> "XequiNetLogParser":
        merged = {"max_epoch": self.max_epoch(config), "weights": score_weights(config)}
        merged.update(options or {})
        return XequiNetLogParser(merged, state)

    def resume_config(self, config: dict, outputs_dir: Path) -> Optional[dict]:
        run_name = get_dotted(config, "trainer.run_name", None) or DEFAULT_RUN_NAME
        last = Path(outputs_dir) / f"{run_name}_last.pt"
        ckpt = last if checkpoint_usable(last) else None
        if ckpt is not None:
            backup_checkpoint(last)  # _last.pt is rewritten, not atomically, after every epoch
        else:
            ckpt = next((b for b in _backups(last) if checkpoint_usable(b)), None)
        if ckpt is None:
            return None
        resumed = copy.deepcopy(config)
        set_dotted(resumed, "trainer.resume", True)
        set_dotted(resumed, "trainer.ckpt_file", str(ckpt))
        return resumed

    def run_environment(self, config: dict, outputs_dir: Path) -> dict[str, str]:
        # PyTorch >= 2.6 loads with weights_only=True, which refuses XequiNet's checkpoints (they pickle an
        # OmegaConf DictConfig): every resume would fail. A checkpoint this sweep's own run wrote is trusted.
        ckpt = get_dotted(config, "trainer.ckpt_file", None)
        if get_dotted(config, "trainer.resume", False) is True and isinstance(ckpt, str) and \
                _inside(Path(ckpt), Path(outputs_dir)):
            return dict(WEIGHTS_ONLY_ENV)
        return {}

    def fresh_config(self, config: dict) -> dict:
        fresh = copy.deepcopy(config)
        set_dotted(fresh, "trainer.resume", False)
        ckpt = get_dotted(fresh, "trainer.ckpt_file", None)
        run_name = get_dotted(fresh, "trainer.run_name", None) or DEFAULT_RUN_NAME
        # Only drop the checkpoint resume_config chose; another ckpt_file is a fine-tuning start.
        if isinstance(ckpt, str) and Path(ckpt).name.startswith(f"{run_name}_last.pt"):
            set_dotted(fresh, "trainer.ckpt_file", None)
        return fresh


def score_weights(config: dict) -> Optional[dict]:
    """The per-property weights of the checkpoint score, keyed by lowercase target name.

    ``trainer.losses_weight`` when set; else weight 1.0 for every name in ``data.targets``; else None, which the
    parser reads as weight 1.0 for every logged property without a "/" (``Energy/atom`` is a derived column).
    """
    weights = get_dotted(config, "trainer.losses_weight", None)
    if isinstance(weights, dict) and weights:
        return {str(k).lower(): float(v) for k, v in weights.items() if number(str(v)) is not None}
    targets = _targets(config)
    return {t.lower(): 1.0 for t in targets} if targets else None


def _targets(config: dict) -> list[str]:
    targets = get_dotted(config, "data.targets", None)
    if isinstance(targets, str):
        return [targets]
    return [str(t) for t in targets] if isinstance(targets, (list, tuple)) else []


def _weights_errors(config: dict) -> list[str]:
    weights = get_dotted(config, "trainer.losses_weight", None)
    if not isinstance(weights, dict):
        return []
    targets = _targets(config)
    wrong = [str(k) for k in weights if str(k) not in targets]
    if not wrong:
        return []
    return [f"trainer.losses_weight: {', '.join(wrong)} not among data.targets ({', '.join(targets) or 'none'})"]


def _unknown_keys(config: dict, section: str, known: tuple) -> list[str]:
    table = config.get(section)
    if not isinstance(table, dict):
        return []
    warnings = []
    for key in table:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {section}.{near[0]}?" if near else ""
            warnings.append(f"{section}.{key}: not a known XequiNet 1.2 key (unknown {section} keys make the "
                            f"run fail at start-up){hint}")
    return warnings


def _inside(path: Path, folder: Path) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)
    except ValueError:
        return False


def checkpoint_usable(path: Path) -> bool:
    """Non-empty, and when it is a zip (torch.save's format) its central directory is there: a save cut off by a
    kill leaves no end record. Loading it would need torch, which the login node may not have."""
    try:
        if path.stat().st_size == 0:
            return False
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError:
        return False
    if magic != b"PK\x03\x04":
        return True  # the legacy pickle format: nothing cheap to check
    import zipfile

    return zipfile.is_zipfile(path)


def backup_checkpoint(last: Path) -> Path:
    """Copy ``last`` to ``<name>.bak-<time>`` (atomically) and keep only the newest few copies."""
    target = last.with_name(f"{last.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(last, partial)
    os.replace(partial, target)
    for old in _backups(last)[KEEP_BACKUPS:]:
        old.unlink(missing_ok=True)
    return target


def _backups(last: Path) -> list[Path]:
    """Backups of ``last``, newest first (their names sort as times)."""
    prefix = f"{last.name}.bak-"
    try:
        names = [n for n in os.listdir(last.parent) if n.startswith(prefix) and not n.endswith(".partial")]
    except OSError:
        return []
    return [last.parent / n for n in sorted(names, reverse=True)]


class XequiNetLogParser(InfoParser):
    """Reads ``loss.log``. Options: ``max_epoch`` (int), ``weights`` (lowercase property → weight, or None).

    An epoch row is complete at its validation MAE row; its ``val_loss`` is the weighted sum of the validation
    MAEs (the checkpoint score), its ``train_loss`` the same sum over the train MAE row (the last batch's). A train
    row that is followed by another epoch's train row without validation becomes a row without ``val_loss``.
    """

    def feed_line(self, line: str) -> Optional[EpochRow]:
        match = _PREFIX.match(line)
        message = line[match.end():] if match else line
        text = message.strip()
        if not text:
            return None
        if text.startswith("Train "):  # not "Training Completed"
            return self._train(text)
        if text.startswith(("EMA", "Valid")):
            return self._valid(text)
        if message[:1].isspace():
            self._header(text.split())
            return None
        self._message(text)
        return None

    # -- tables --------------------------------------------------------------------------------------------------
    def _header(self, columns: list[str]) -> None:
        if "LR" in columns and "Epoch" in columns:
            self.state["train_cols"] = columns[columns.index("LR") + 1:]
        elif columns and all(number(c) is None for c in columns):
            self.state["valid_cols"] = columns

    def _train(self, text: str) -> Optional[EpochRow]:
        match = _TRAIN_MAE.match(text)
        if match:
            epoch = int(match.group(1))
            pending = self.state.get("pending")
            flushed = self._emit(pending, None) if pending and pending["epoch"] != epoch else None
            values = self._named(match.group(3).split(), self.state.get("train_cols"))
            self.state["pending"] = {"epoch": epoch, "lr": encode(number(match.group(2))),
                                     "train": encode(self._score(values))}
            self._metric("train_mae", values)
            self.state["phase"] = "training"
            return flushed
        match = _TRAIN_RMSE.match(text)
        if match:
            self._metric("train_rmse", self._named(match.group(1).split(), self.state.get("train_cols")))
        return None

    def _valid(self, text: str) -> Optional[EpochRow]:
        match = _VALID.match(text)
        if not match:
            return None
        columns = self.state.get("valid_cols") or self.state.get("train_cols")
        values = self._named(match.group(2).split(), columns)
        if match.group(1) == "RMSE":
            self._metric("valid_rmse", values)
            return None
        self._metric("valid_mae", values)
        pending = self.state.get("pending")
        if pending is None:  # no train row before it (an older layout): count epochs
            last = self.state.get("last")
            pending = {"epoch": (last[0] if last else 0) + 1, "lr": None, "train": None}
        return self._emit(pending, self._score(values))

    def _emit(self, pending: dict, val: Optional[float]) -> EpochRow:
        self.state["pending"] = None
        row = EpochRow(pending["epoch"], decode(pending["train"]), val, None, decode(pending["lr"]))
        return record_row(self.state, row)

    def _named(self, tokens: list[str], columns: Optional[list[str]]) -> dict[str, Optional[float]]:
        """Values by column name; empty when the header is unknown or does not fit (an older layout)."""
        if not columns or len(columns) != len(tokens):
            return {}
        return {name: number(token) for name, token in zip(columns, tokens)}

    def _score(self, values: dict[str, Optional[float]]) -> Optional[float]:
        weights = self.options.get("weights")
        terms = []
        for name, value in values.items():
            key = name.lower()
            weight = weights.get(key) if weights else (None if "/" in key else 1.0)
            if weight is not None and value is not None:
                terms.append(weight * value)
        return sum(terms) if terms else None  # nan in a term stays nan

    def _metric(self, name: str, values: dict) -> None:
        if values:
            self._info(name, {k: encode(v) for k, v in values.items()})

    # -- messages ------------------------------------------------------------------------------------------------
    def _message(self, text: str) -> None:
        state = self.state
        if text.startswith(("Start training", "Loaded checkpoint from")):
            state["phase"] = "starting"
            state["finished"] = False
            state["pending"] = None  # an epoch a kill cut short: the new start logs it again from its beginning
            state.get("info", {}).pop("stop_reason", None)
            if text.startswith("Loaded"):
                self._info("resumed", self.state.get("info", {}).get("resumed", 0) + 1)
        elif text.startswith("Task Name:"):
            self._info("task_name", text.split(":", 1)[1].strip())
        elif text.startswith("Property:"):
            match = _PROPERTY.match(text)
            if match:
                self.state.setdefault("info", {}).setdefault("units", {})[match.group(1)] = match.group(2).strip()
        elif text.startswith("Training Completed"):
            self._finish(None)
        elif text.startswith("Early Stopping"):
            match = _EARLY_STOP.search(text)
            self._finish("early_stopping", int(match.group(1)) if match else None)
        elif text.startswith("Minimum learning rate reached"):
            self._finish("min_lr")
        elif text.startswith("Best Valid MAE:"):
            self._info("logged_best_valid_mae", encode(number(text.split(":", 1)[1])))
        elif text.startswith("Best Checkpoint:"):
            match = _BEST_CKPT.search(text)
            if match:
                self._info("logged_best_checkpoint", match.group(1))
                self._info("logged_best_epoch", int(match.group(2)))

    def _finish(self, reason: Optional[str], epoch: Optional[int] = None) -> None:
        state = self.state
        state["finished"] = True
        if reason == "early_stopping":
            state["phase"] = "early_stopped"
            self._info("early_stop_epoch", epoch)
        elif state.get("phase") != "early_stopped":
            state["phase"] = "finished"
        if reason:
            self._info("stop_reason", reason)

    def summary(self) -> LogSummary:
        return summary_from(self.state, self.options.get("max_epoch"))
