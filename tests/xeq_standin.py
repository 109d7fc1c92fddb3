"""Stand-ins for `torchrun` and XequiNet's `xeq train`, for local-backend tests where neither is installed.

`torchrun` checks its arguments as torchrun does where it matters here (``--nproc-per-node`` must be at least 1:
the real one fails with a bare AssertionError at 0) and runs the command after ``--no-python`` in its place.
`xeq train --config FILE` behaves as the real trainer does as far as a sweep tool can see (see
tests/fixtures/xequinet-real/README.md): it reads the config with OmegaConf's YAML rules (``5e-4`` is a float;
AdamW refuses a string learning rate), needs ``save_dir`` to exist, truncates ``<save_dir>/<log_file>`` on a fresh
start and appends after ``Loaded checkpoint from <file>`` on a resume, writes the log in XequiNet's format
(tabulate tables every ``log_steps``, an ``EMA Valid`` block per epoch, ``Training Completed``, ``Best Valid MAE``,
``Best Checkpoint``), saves ``<run_name>_last.pt`` and ``<run_name>_0.pt`` after each epoch, exits 1 on SIGTERM
writing nothing more, and refuses to load a checkpoint unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (as
PyTorch >= 2.6 does with XequiNet's checkpoints). Last, it writes ``<save_dir>/standin.json``: argv, the process
count torchrun was given and the environment variable, so a test can check what reached the run.

``XEQ_STANDIN_HANG=<run_name>:<N>``: a fresh (not resumed) run of that name stops in the middle of epoch N and
waits to be killed.
``XEQ_STANDIN_STEP_SLEEP=S``: seconds per logged step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import yaml
from tabulate import tabulate

PROPS = ["Energy", "Energy/atom", "Forces"]
STEPS = 10
LOG_STEPS = 5
WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def write_commands(bin_dir: Path) -> Path:
    """`torchrun` and `xeq` in ``bin_dir`` (put it first on PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("torchrun", "xeq"):
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                          f"import xeq_standin\nxeq_standin.{name}_main(sys.argv[1:])\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


# -- torchrun -------------------------------------------------------------------------------------------------------
def torchrun_main(argv: list) -> None:
    nproc, rest = None, list(argv)
    while rest and rest[0].startswith("--"):
        option = rest.pop(0)
        if option.startswith("--nproc-per-node="):
            nproc = option.split("=", 1)[1]
        elif option == "--no-python":
            break
    if nproc is None or not nproc.isdigit() or int(nproc) < 1:
        print("Traceback (most recent call last):\n  File \"/venv/bin/torchrun\", line 8, in <module>\n"
              "    sys.exit(main())\nAssertionError", file=sys.stderr)
        sys.exit(1)
    os.environ["WORLD_SIZE"] = nproc
    os.environ["LOCAL_RANK"] = "0"
    os.environ["XEQ_STANDIN_NPROC"] = nproc
    os.execvp(rest[0], rest)


# -- xeq train ------------------------------------------------------------------------------------------------------
class OmegaConfLoader(yaml.SafeLoader):
    """OmegaConf's YAML rules (omegaconf/_utils.py): YAML 1.2 floats, no timestamps."""


OmegaConfLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
OmegaConfLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in OmegaConfLoader.yaml_implicit_resolvers.items()}


def xeq_main(argv: list) -> None:
    if argv[:1] != ["train"] or "--config" not in argv:
        print("usage: xeq train --config FILE", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(1))  # torchrun's rank dies; nothing reaches loss.log
    with open(argv[argv.index("--config") + 1], encoding="utf-8") as handle:
        config = yaml.load(handle, Loader=OmegaConfLoader)
    trainer = config["trainer"]
    lr = trainer.get("max_lr", 5e-4)
    if not isinstance(lr, float):  # what torch.optim.AdamW says about a string learning rate
        raise TypeError(f"'<=' not supported between instances of 'float' and '{type(lr).__name__}'")
    save_dir = Path(trainer["save_dir"])
    if not save_dir.is_dir():
        raise FileNotFoundError(f"save_dir {save_dir} does not exist")
    run_name = trainer.get("run_name", "xequinet")
    log_path = save_dir / trainer.get("log_file", "loss.log")
    weights = trainer.get("losses_weight") or {"energy": 1.0, "forces": 1.0}
    first = 1
    if trainer.get("resume"):
        first = _load_checkpoint(trainer["ckpt_file"]) + 1
        _log(log_path, "a", [f"Loaded checkpoint from {trainer['ckpt_file']}"])
    else:
        _log(log_path, "w", ["Start training", f"Task Name: {run_name}", "Property: energy Unit: eV",
                             "Property: forces Unit: eV/Ang"])
    hang_name, _, hang_epoch = os.environ.get("XEQ_STANDIN_HANG", "").partition(":")
    hang = int(hang_epoch) if hang_name == run_name and not trainer.get("resume") else 0
    pause = float(os.environ.get("XEQ_STANDIN_STEP_SLEEP", "0") or 0)
    best = (None, None)
    for epoch in range(first, int(trainer.get("max_epochs", 300)) + 1):
        valid = _train_epoch(log_path, epoch, lr, pause, hang_here=(epoch == hang))
        score = sum(weights.get(name.lower(), 0.0) * value for name, value in zip(PROPS, valid))
        if best[0] is None or score < best[0]:
            best = (score, epoch)
            _save(save_dir / f"{run_name}_0.pt", epoch)
        _save(save_dir / f"{run_name}_last.pt", epoch)
    _log(log_path, "a", ["Training Completed", f"Best Valid MAE: {best[0]:.5f}",
                         f"Best Checkpoint: {save_dir / (run_name + '_0.pt')} at Epoch {best[1]}"])
    (save_dir / "standin.json").write_text(json.dumps({
        "argv": sys.argv, "nproc": os.environ.get("XEQ_STANDIN_NPROC"), WEIGHTS_ONLY: os.environ.get(WEIGHTS_ONLY),
        "max_lr": lr, "first_epoch": first}))


def _train_epoch(log_path: Path, epoch: int, lr: float, pause: float, hang_here: bool) -> list:
    for step in range(LOG_STEPS, STEPS + 1, LOG_STEPS):
        train = [3.0 / epoch + step / 100, 0.5 / epoch, 2.0 / epoch]
        _log(log_path, "a", _table([["Train  MAE", epoch, f"[{step}/{STEPS}]", f"{lr * step / STEPS:.3e}", *train],
                                    ["Train RMSE", "", "", "", *[v * 1.2 for v in train]]],
                                   ["Epoch", "Step", "LR", *PROPS]))
        if hang_here:
            time.sleep(600)  # killed here by the walltime: the log ends in the middle of this epoch
        time.sleep(pause)
    valid = [1.0 / epoch, 0.2 / epoch, 1.5 / epoch]
    _log(log_path, "a", _table([["EMA Valid  MAE", *valid], ["EMA Valid RMSE", *[v * 1.3 for v in valid]]], PROPS))
    return valid


def _table(rows: list, headers: list) -> list:
    return tabulate(rows, headers=["", *headers], tablefmt="plain", floatfmt=".4g").splitlines()


def _log(path: Path, mode: str, messages: list) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    with open(path, mode, encoding="utf-8") as handle:
        handle.writelines(f"{stamp} - INFO - {message}\n" for message in messages)


def _save(path: Path, epoch: int) -> None:
    with zipfile.ZipFile(path, "w") as archive:  # torch.save writes a zip archive
        archive.writestr("checkpoint/data.json", json.dumps({"epoch": epoch, "config": "DictConfig"}))


def _load_checkpoint(path: str) -> int:
    if os.environ.get(WEIGHTS_ONLY) != "1":
        print("[rank0]: _pickle.UnpicklingError: Weights only load failed. This file can still be loaded, to do "
              "so you have two options.\n[rank0]: \tWeightsUnpickler error: Unsupported global: GLOBAL "
              "omegaconf.dictconfig.DictConfig was not an allowed global by default.", file=sys.stderr)
        sys.exit(1)
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("checkpoint/data.json"))["epoch"]
