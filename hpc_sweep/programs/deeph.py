"""DeepH-pack (``deeph-train``, TOML configs, ``deepx.log`` in a timestamped folder per start).

Facts used here are in ``reference/deeph.md``: each start writes ``<outputs_dir>/<YYYY-MM-DD_HH-MM-SS>/deepx.log``
and ``model/``; a run is continued through ``process.train.continued``; the log has no completion line, so a run is
finished when its last epoch reaches ``max_epoch`` or the learning-rate scale falls below
``min_learning_rate_scale``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from hpc_sweep.common.dotted import get_dotted, set_dotted
from hpc_sweep.programs._common import (InfoParser, as_int, choice_problem, decode, encode, last_entry, number,
                                        record_row, summary_from)
from hpc_sweep.programs.base import NO_TRAINING_LOG, EpochRow, LogSummary, Program, ended_reason

DEFAULT_MAX_EPOCH = 10000
DEFAULT_MIN_LR_SCALE = 1e-4
LOG_NAME = "deepx.log"

FLOAT_TYPES = ("bf16", "tf32", "fp32", "fp64")
NET_TYPES = ("sparrow", "fast", "eagle", "accurate", "eagleplus", "albatross", "owl", "swift", "petrel")
LOSS_TYPES = ("mae", "mse", "wmae", "emae", "huber")  # the docs add "..."; others only warn
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("reduce_on_plateau", "warmup_cosine_decay", "warmup_exponential_decay")
LOAD_MODEL_TYPES = ("latest", "best")

DATALOADER = "process.train.dataloader"
CONTINUED = "process.train.continued"
SIZE_KEYS = ("batch_size", "train_size", "validate_size", "test_size")
SPLIT_KEYS = ("dataset_split_json", "dateset_split_json")

_RUN_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}$")
_IRREP = re.compile(r"^(\d+)x(\d+)([eo])$")
_EPOCH = re.compile(r"\bEpoch\s+(\d+)\s*\|(.*)")
# DeepH's own spelling of an epoch line, read in one match; other spellings take the tolerant path.
_EPOCH_EXACT = re.compile(r"\] Epoch (\d+) \| Time (\S+) s \| Train-Loss (\S+) \| Val-Loss (\S+) \| Scale (\S+)\s*$")
_VERSION = re.compile(r"\bVersion\s+(\S+)")
_SIZES = re.compile(r"\b(Train|Val|Test) size:\s*`?(\d+)`?")
_PARAMS = re.compile(r"parameters size is\s*`?(\d+)`?")
_BUILD = re.compile(r"Building the model\s*`([^`]*)`(?:\s*with loss\s*`([^`]*)`)?")
_SAVE_DIR = re.compile(r"save the model into\s*`([^`]*)`")

# Parsed split files, keyed by (path, mtime, size): a sweep shares one split file across thousands of configs.
_SPLIT_CACHE: dict[tuple, Optional[str]] = {}


class DeepH(Program):
    name = "deeph"
    config_format = "toml"

    def prepare(self, config: dict) -> list[str]:
        # Missing means DeepH's default, true: a progress bar rewrites one line thousands of times in a batch log.
        if get_dotted(config, "system.show_train_process_bar", True) is False:
            return []
        set_dotted(config, "system.show_train_process_bar", False)
        return ["system.show_train_process_bar: set to false (a progress bar floods batch job logs)"]

    def set_outputs(self, config: dict, config_name: str, outputs_dir: Path) -> None:
        set_dotted(config, "data.outputs_dir", str(outputs_dir))

    def device_key(self) -> Optional[str]:
        return "system.device"

    def max_epoch(self, config: dict) -> Optional[int]:
        return as_int(get_dotted(config, "process.train.max_epoch", DEFAULT_MAX_EPOCH))

    def check(self, config: dict, gpus: int) -> tuple[list[str], list[str]]:
        errors: list[str] = []
        warnings: list[str] = []
        irreps = irreps_problem(get_dotted(config, "model.advanced.net_irreps", ""))
        if irreps:
            errors.append(f"model.advanced.net_irreps: {irreps}")
        errors += _dataloader_errors(config)
        splits = _split_files(config)
        if len(set(splits.values())) > 1:
            warnings.append(f"{DATALOADER}.dateset_split_json: and dataset_split_json name different files "
                            f"({', '.join(splits.values())}); keep one")
        for key, choices in (("system.float_type", FLOAT_TYPES), ("model.net_type", NET_TYPES),
                             ("process.train.optimizer.type", OPTIMIZERS),
                             ("process.train.scheduler.type", SCHEDULERS),
                             (f"{CONTINUED}.load_model_type", LOAD_MODEL_TYPES)):
            problem = choice_problem(config, key, choices)
            if problem:
                errors.append(problem)
        loss = choice_problem(config, "model.loss_type", LOSS_TYPES)
        if loss:
            warnings.append(f"{loss} (an unknown loss may be newer than this tool)")
        return errors, warnings

    def find_log(self, outputs_dir: Path, config: Optional[dict] = None) -> Optional[Path]:
        found = self.find_log_text(str(outputs_dir), config)
        return None if found is None else Path(found)

    def find_log_text(self, outputs_dir: str, config: Optional[dict] = None) -> Optional[str]:
        for name in run_dir_names(outputs_dir):
            log = f"{outputs_dir}/{name}/{LOG_NAME}"
            if os.path.isfile(log):
                return log
        return None

    def training_evidence(self, summary: Optional[LogSummary], logged: bool) -> tuple[bool, str]:
        # DeepH logs no end line: an epoch from this attempt is the evidence (or a log that reached its end
        # already, for an attempt resumed from the last save that had nothing left to train).
        if summary is None or summary.epoch is None or not (logged or summary.finished):
            return False, NO_TRAINING_LOG
        return True, ended_reason(summary)

    def log_parser(self, config: dict, options: Optional[dict] = None,
                   state: Optional[dict] = None) -> "DeepHLogParser":
        merged = {
            "max_epoch": self.max_epoch(config),
            "min_learning_rate_scale": number(str(get_dotted(
                config, "process.train.scheduler.min_learning_rate_scale", DEFAULT_MIN_LR_SCALE))),
        }
        merged.update(options or {})
        return DeepHLogParser(merged, state)

    def resume_config(self, config: dict, outputs_dir: Path) -> Optional[dict]:
        """Continue from the newest run folder holding ``model/params/latest.pytree/`` (an attempt that died
        before its first save is skipped), with exactly the keys of DeepH's ``[process.train.continued]``: the
        same data and the saved optimizer state, the latest epoch saved."""
        for run in run_dirs(outputs_dir):
            if not has_latest_model(run):
                continue
            resumed = copy.deepcopy(config)
            set_dotted(resumed, CONTINUED, {"enable": True, "new_training_data": False, "new_optimizer": False,
                                            "previous_output_dir": str(run), "load_model_type": "latest",
                                            "load_model_epoch": -1})
            return resumed
        return None

    def fresh_config(self, config: dict) -> dict:
        fresh = copy.deepcopy(config)
        previous = get_dotted(fresh, f"{CONTINUED}.previous_output_dir", "")
        outputs = get_dotted(fresh, "data.outputs_dir", None)
        # Only undo a continuation into this config's own outputs: one from elsewhere is the user's choice.
        if previous and outputs and Path(previous).is_relative_to(Path(outputs)):
            set_dotted(fresh, f"{CONTINUED}.enable", False)
            set_dotted(fresh, f"{CONTINUED}.previous_output_dir", "")
        return fresh


def run_dirs(outputs_dir: Path) -> list[Path]:
    """Timestamped run folders under ``outputs_dir``, newest first (the names sort as times)."""
    return [path for path in map(Path(outputs_dir).joinpath, run_dir_names(outputs_dir)) if path.is_dir()]


def run_dir_names(outputs_dir) -> list[str]:
    """Names under ``outputs_dir`` spelt as run folders, newest first, not checked to be folders: a poll looks
    inside 10,000 of them for a deepx.log, which a file of that name does not hold either."""
    try:
        names = [name for name in os.listdir(outputs_dir) if _RUN_DIR.match(name)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(names, reverse=True)


def has_latest_model(run: Path) -> bool:
    """Whether ``run`` holds saved latest parameters: a non-empty ``model/params/latest.pytree/`` folder (one
    ``epoch_<N>/`` per save). A timed-out run goes on from its latest save, not from the best one, which may be
    many epochs older."""
    try:
        with os.scandir(run / "model" / "params" / "latest.pytree") as entries:
            return any(True for _ in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False


def irreps_problem(value: Any) -> Optional[str]:
    """Why ``value`` is not a usable e3nn irreps string (every multiplicity at least 2), or None."""
    example = "an irreps string like '64x0e+48x1e+32x2e' (see `dock analyze dataset features`)"
    if not isinstance(value, str) or not value.strip():
        return f"empty; DeepH needs {example}"
    for term in value.split("+"):
        match = _IRREP.match(term.strip())
        if not match:
            return f"'{term.strip()}' in '{value}' is not a term like 32x1e; DeepH needs {example}"
        if int(match.group(1)) < 2:
            return f"'{term.strip()}': every multiplicity must be at least 2"
    return None


def _dataloader_errors(config: dict) -> list[str]:
    errors = []
    for name in SIZE_KEYS:
        key = f"{DATALOADER}.{name}"
        value = get_dotted(config, key, None)
        if value is None:
            continue
        if as_int(value) is None:
            errors.append(f"{key}: must be an integer count (not a ratio), not {value!r}")
        elif value < (1 if name == "batch_size" else 0):
            errors.append(f"{key}: must be {'at least 1' if name == 'batch_size' else 'non-negative'}")
    test_error = _test_set_error(config)
    if test_error:
        errors.append(test_error)
    return errors


def _split_files(config: dict) -> dict:
    """The split file by key, for both spellings DeepH's material uses: ``dataset_split_json`` (its reference)
    and ``dateset_split_json`` (its official example configs)."""
    found = {}
    for key in SPLIT_KEYS:
        value = get_dotted(config, f"{DATALOADER}.{key}", "")
        if isinstance(value, str) and value.strip():
            found[key] = value.strip()
    return found


def _test_set_error(config: dict) -> Optional[str]:
    splits = _split_files(config)
    if splits:
        key, path = next(iter(splits.items()))
        return _split_file_error(path, f"{DATALOADER}.{key}")
    test_size = as_int(get_dotted(config, f"{DATALOADER}.test_size", 0))
    if test_size is not None and test_size > 0:
        return None
    return (f"{DATALOADER}.test_size: no test set; set test_size > 0 or dataset_split_json "
            "(the DeepH tuning guide requires one)")


def _split_file_error(path_text: str, key: str) -> Optional[str]:
    """A split file must hold a non-empty "test" list. Relative paths cannot be resolved here: not checked."""
    path = Path(path_text)
    if not path.is_absolute():
        return None
    try:
        stat = path.stat()
    except OSError:
        return f"{key}: file {path} not found; write it with `dock analyze dataset split`"
    cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
    if cache_key not in _SPLIT_CACHE:
        _SPLIT_CACHE[cache_key] = _read_split(path)
    problem = _SPLIT_CACHE[cache_key]
    return f"{key}: {problem}" if problem else None


def _read_split(path: Path) -> Optional[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"cannot read {path}: {exc}"
    if not isinstance(data, dict) or not data.get("test"):
        return f"{path} has no non-empty \"test\" list (the DeepH tuning guide requires a test set)"
    return None


class DeepHLogParser(InfoParser):
    """Reads ``deepx.log``. Options: ``max_epoch`` (int), ``min_learning_rate_scale`` (float).

    State: phase, the last epoch row, best, ``scale_hi`` (a Scale at or above the minimum was seen, so a later
    Scale below it means the scheduler stopped the run, not a warm-up that starts low) and info.
    """

    def feed(self, text: str) -> list[EpochRow]:
        """As feed_line over every line, with DeepH's own epoch lines read on an inlined path: a first poll of
        a 10,000-config sweep feeds megabytes of them. Other lines, in order, take feed_line."""
        state, rows = self.state, []
        minimum = self.options.get("min_learning_rate_scale")
        best, best_epoch = decode(state.get("best")), state.get("best_epoch")
        count, last = state.get("rows", 0), None
        exact, feed_line, other = _EPOCH_EXACT.search, self.feed_line, self._other
        for line in text.splitlines():
            match = exact(line) if "] Epoch " in line else None
            if match is None:
                if last is not None:  # hand the fast path's bookkeeping over before another line reads it
                    _store_rows(state, count, last, best, best_epoch)
                    last = None
                if "Epoch" not in line:
                    other(line)
                    continue
                row = feed_line(line)
                if row is not None:
                    rows.append(row)
                    best, best_epoch, count = decode(state.get("best")), state.get("best_epoch"), state["rows"]
                continue
            epoch_text, seconds, train, val, scale = match.groups()
            last = EpochRow(int(epoch_text), _float(train), _float(val), _float(seconds), _float(scale))
            rows.append(last)
            count += 1
            state["phase"] = "training"
            if last.lr_scale is not None and minimum is not None and last.lr_scale >= minimum:
                state["scale_hi"] = True
            # Strict '<' keeps the earliest epoch on ties; nan compares False and is never best.
            value = last.val_loss
            if value is not None and (best is None or value < best) and value == value:
                best, best_epoch = value, last.epoch
        if last is not None:
            _store_rows(state, count, last, best, best_epoch)
        return rows

    def feed_line(self, line: str) -> Optional[EpochRow]:
        if "Epoch" in line:
            exact = _EPOCH_EXACT.search(line)
            if exact:
                return self._row(EpochRow(int(exact.group(1)), number(exact.group(3)), number(exact.group(4)),
                                          number(exact.group(2)), number(exact.group(5))))
            match = _EPOCH.search(line)
            if match:
                return self._epoch(int(match.group(1)), match.group(2))
        self._other(line)
        return None

    def _epoch(self, epoch: int, rest: str) -> EpochRow:
        fields = {}
        for part in rest.split("|"):  # "Time 3.20 s", "Train-Loss 1.6e+00", "Val-Loss nan", "Scale 0.5"
            bits = part.split()
            if len(bits) >= 2:
                fields[bits[0].lower()] = bits[1]
        return self._row(EpochRow(epoch, number(fields.get("train-loss")), number(fields.get("val-loss")),
                                  number(fields.get("time")), number(fields.get("scale"))))

    def _row(self, row: EpochRow) -> EpochRow:
        minimum = self.options.get("min_learning_rate_scale")
        if row.lr_scale is not None and minimum is not None and row.lr_scale >= minimum:
            self.state["scale_hi"] = True
        self.state["phase"] = "training"
        return record_row(self.state, row)

    def _other(self, line: str) -> None:
        state = self.state
        if "Starting the training process" in line:
            state["phase"] = "training"
            return
        if "[dataloader]" in line:
            for which, size in _SIZES.findall(line):
                self._info(f"{which.lower()}_size", int(size))
        elif "[model]" in line:
            self._model_info(line)
        elif "Version" in line and "[" not in line[20:]:
            match = _VERSION.search(line)
            if match:
                state["phase"] = "starting"  # the banner: a (new) start
                self._info("version", match.group(1))
                return
        if state.get("phase") != "training":  # a tag seen later (a save, a message) is no new phase
            phase = _phase_of(line)
            if phase:
                state["phase"] = phase

    def _model_info(self, line: str) -> None:
        for pattern, names in ((_PARAMS, ("parameters",)), (_BUILD, ("model", "loss")),
                               (_SAVE_DIR, ("model_dir",))):
            match = pattern.search(line)
            if match:
                for name, value in zip(names, match.groups()):
                    if value is not None:
                        self._info(name, int(value) if name == "parameters" else value)

    def summary(self) -> LogSummary:
        result = summary_from(self.state, self.options.get("max_epoch"))
        stop = self._stop_reason(result)
        if stop:
            result.finished = True
            result.phase = "finished"
            result.info["stop_reason"] = stop
        return result

    def _stop_reason(self, result: LogSummary) -> Optional[str]:
        if result.epoch is None:
            return None
        if result.max_epoch is not None and result.epoch >= result.max_epoch:
            return "max_epoch"
        last_scale = self.state["last"][4]
        minimum = self.options.get("min_learning_rate_scale")
        if (isinstance(last_scale, float) and minimum is not None and last_scale < minimum
                and self.state.get("scale_hi")):
            return "min_learning_rate_scale"
        return None


# What DeepH is doing before its first epoch, by the tag of its latest line (deepx 1.0.6-1.2.x logs): building
# the graph from the DFT data can take long, and so can the JIT/AOT compilation (the tuning guide: 10+ minutes
# is normal). Compiling is told by its words, which come with the [train] tag.
_PHASES = (("compil", "compiling"), ("Compil", "compiling"), ("[graph]", "graph building"),
           ("[rawdata]", "graph building"), ("[dataloader]", "loading data"), ("[model]", "model building"),
           ("[optimizer]", "model building"), ("[system]", "starting"))


def _phase_of(line: str) -> Optional[str]:
    for words, phase in _PHASES:
        if words in line:
            return phase
    return None


def _float(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return number(text)


def _store_rows(state: dict, count: int, last: EpochRow, best: Optional[float], best_epoch: Optional[int]) -> None:
    """What record_row keeps, written once for a run of epoch lines."""
    state["rows"] = count
    state["last"] = last_entry(last)
    if best is not None:
        state["best"], state["best_epoch"] = encode(best), best_epoch
