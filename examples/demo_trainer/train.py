#!/usr/bin/env python3
"""A small trainer that behaves like ``deeph-train CONFIG.toml`` so hpc-sweep can be tried without DeepH.

It genuinely trains: a tanh MLP, written here in the standard library only, fits y = sin(3x) + 0.3x^2 + noise
with hand-written Adam/AdamW/SGD, dropout and a reduce-on-plateau learning-rate scale. It reads the DeepH keys
a sweep varies, writes ``<outputs_dir>/<YYYY-MM-DD_HH-MM-SS>/deepx.log`` in DeepH's line format, checkpoints
``model/params/{latest,best}.pytree/epoch_<N>/`` and resumes through ``process.train.continued``.

Usage: python train.py CONFIG.toml
Test knobs (environment): DEMO_EPOCH_SLEEP=seconds per epoch (make a run outlive a walltime),
DEMO_FAIL_AT_EPOCH=N (raise a real RuntimeError in epoch N). SIGTERM ends the run with exit status 143.
"""

from __future__ import annotations

import json
import math
import operator
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomli is a dependency of hpc-sweep on 3.9/3.10
    import tomli as tomllib

VERSION = "0.1.0-demo"
DATA_POOL = 1000        # samples available; train+val+test may not exceed it (as DeepH's dataset size)
DATA_SEED = 20240601    # fixed: every config of a sweep sees the same data and split, as with one split file
MAX_WIDTH = 64          # keeps a pure-Python epoch fast whatever net_irreps says
INPUT_SCALE = 1.0     # x in [-2, 2] is fed as is: sin(3x) is then reachable from Glorot-initialised weights
_mul = operator.mul


class Terminated(BaseException):
    """Raised from the SIGTERM handler so the run stops between two statements and exits non-zero."""


# --- configuration ------------------------------------------------------------------------------------------

@dataclass
class Settings:
    config_path: Path
    config_text: str
    device: str
    seed: int
    outputs_dir: Path
    show_bar: bool
    loss_type: str
    width: int
    blocks: int
    dropout: float
    optimizer: str
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    clip_norm: float
    batch_size: int
    sizes: tuple[int, int, int]
    max_epoch: int
    factor: float
    patience: int
    rtol: float
    cooldown: int
    min_scale: float
    latest_num: int
    latest_interval: int
    save_best: bool
    save_latest: bool
    continued: bool
    previous_output_dir: Optional[Path]
    load_model_type: str
    load_model_epoch: int
    new_optimizer: bool


def _get(cfg: dict, dotted: str, default: Any) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def load_settings(path: Path) -> Settings:
    text = path.read_text()
    cfg = tomllib.loads(text)
    base = path.resolve().parent  # relative paths resolve against the TOML's folder (DeepH 1.2.x)
    g = lambda key, default: _get(cfg, key, default)  # noqa: E731
    prev = str(g("process.train.continued.previous_output_dir", "") or "")
    s = Settings(
        config_path=path.resolve(), config_text=text,
        device=str(g("system.device", "cpu")), seed=int(g("system.random_seed", 137)),
        outputs_dir=base / str(g("data.outputs_dir", "./outputs")),
        show_bar=bool(g("system.show_train_process_bar", True)),
        loss_type=str(g("model.loss_type", "mae")),
        width=_width(str(g("model.advanced.net_irreps", "16x0e"))),
        blocks=int(g("model.advanced.num_blocks", 3)),
        dropout=float(g("process.train.drop.dropout_rate", 0.1)),
        optimizer=str(g("process.train.optimizer.type", "adamw")),
        lr=float(g("process.train.optimizer.init_learning_rate", 2e-3)),
        betas=tuple(float(b) for b in g("process.train.optimizer.betas", [0.9, 0.999])),  # type: ignore[arg-type]
        eps=float(g("process.train.optimizer.eps", 1e-8)),
        weight_decay=float(g("process.train.optimizer.weight", 0.0)),
        clip_norm=float(g("process.train.optimizer.clip_norm_factor", 0.0)),
        batch_size=int(g("process.train.dataloader.batch_size", 1)),
        sizes=(int(g("process.train.dataloader.train_size", 1)), int(g("process.train.dataloader.validate_size", 0)),
               int(g("process.train.dataloader.test_size", 0))),
        max_epoch=int(g("process.train.max_epoch", 10000)),
        factor=float(g("process.train.scheduler.factor", 0.5)),
        patience=int(g("process.train.scheduler.patience", 500)),
        rtol=float(g("process.train.scheduler.rtol", 0.05)),
        cooldown=int(g("process.train.scheduler.cooldown", 0)),
        min_scale=float(g("process.train.scheduler.min_learning_rate_scale", 1e-4)),
        latest_num=int(g("data.model_save.latest_num", 10)),
        latest_interval=int(g("data.model_save.latest_interval", 1)),
        save_best=bool(g("data.model_save.best", True)), save_latest=bool(g("data.model_save.latest", True)),
        continued=bool(g("process.train.continued.enable", False)),
        previous_output_dir=(base / prev) if prev else None,
        load_model_type=str(g("process.train.continued.load_model_type", "latest")),
        load_model_epoch=int(g("process.train.continued.load_model_epoch", -1)),
        new_optimizer=bool(g("process.train.continued.new_optimizer", False)),
    )
    _validate(s)
    return s


def _width(irreps: str) -> int:
    """Hidden width from an e3nn irreps string: the multiplicity of its first term ("16x0e+8x1e" -> 16)."""
    _require(bool(irreps.strip()), "model.advanced.net_irreps is empty; give irreps such as '16x0e+8x1e'")
    head = irreps.split("+")[0].strip()
    mult, sep, _ = head.partition("x")
    _require(bool(sep) and mult.isdigit() and int(mult) >= 2,
             f"model.advanced.net_irreps {irreps!r}: each term must look like '16x0e' with multiplicity >= 2")
    return min(int(mult), MAX_WIDTH)


def _validate(s: Settings) -> None:
    _require(s.lr > 0 and math.isfinite(s.lr), f"init_learning_rate must be positive, got {s.lr}")
    _require(s.blocks >= 1, f"model.advanced.num_blocks must be at least 1, got {s.blocks}")
    _require(0.0 <= s.dropout < 1.0, f"process.train.drop.dropout_rate must be in [0, 1), got {s.dropout}")
    _require(s.batch_size >= 1, f"process.train.dataloader.batch_size must be at least 1, got {s.batch_size}")
    _require(min(s.sizes) >= 0 and s.sizes[0] >= 1 and s.sizes[1] >= 1,
             f"dataloader sizes {s.sizes}: the demo needs train_size >= 1 and validate_size >= 1")
    _require(sum(s.sizes) <= DATA_POOL, f"train_size + validate_size + test_size = {sum(s.sizes)} exceeds the "
                                         f"dataset of {DATA_POOL} samples")
    _require(s.max_epoch >= 1, f"process.train.max_epoch must be at least 1, got {s.max_epoch}")
    _require(s.optimizer in ("adamw", "adam", "sgd"), f"optimizer type {s.optimizer!r}: use adamw, adam or sgd")
    _require(s.loss_type in LOSSES, f"loss_type {s.loss_type!r}: the demo supports {', '.join(LOSSES)}")
    _require(len(s.betas) == 2, f"optimizer betas must be two numbers, got {list(s.betas)}")
    _require(s.load_model_type in ("latest", "best"), f"load_model_type {s.load_model_type!r}: use latest or best")
    _require(not s.continued or s.previous_output_dir is not None,
             "process.train.continued.enable is true but previous_output_dir is empty")


def device_report(device: str) -> tuple[str, list[int], int, str]:
    """(kind, ids, total, head) for the [system] line; the demo computes on the CPU whatever the string says."""
    dtype, _, rest = device.strip().partition("*")
    _require(dtype in ("cpu", "gpu", "cuda", "rocm", "dcu", "tpu"), f"system.device {device!r}: unknown device type")
    num_text, _, ids_text = rest.partition(":")
    total = int(num_text) if num_text.isdigit() else 1
    ids: list[int] = []
    for item in filter(None, ids_text.split(",")):
        lo, _, hi = item.partition("-")
        ids.extend(range(int(lo), int(hi or lo) + 1))
    ids = ids or list(range(total))
    if dtype == "cpu":
        return "CPU", ids, total, f"cpu:{ids[0]}"
    return "GPU", ids, total, f"cuda:{ids[0]}"


# --- data and model -----------------------------------------------------------------------------------------

def target(x: float) -> float:
    return math.sin(3.0 * x) + 0.3 * x * x


def make_data(sizes: tuple[int, int, int]) -> tuple[list[list[tuple[float, float]]], dict[str, list[str]]]:
    rng = random.Random(DATA_SEED)
    pool = [(x, target(x) + rng.gauss(0.0, 0.1)) for x in (rng.uniform(-2.0, 2.0) for _ in range(DATA_POOL))]
    order = list(range(DATA_POOL))
    rng.shuffle(order)
    bounds = [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    parts = [[pool[i] for i in order[bounds[k]:bounds[k + 1]]] for k in range(3)]
    split = {name: [f"sample_{i:04d}" for i in order[bounds[k]:bounds[k + 1]]]
             for k, name in enumerate(("train", "validate", "test"))}
    return parts, split


class MLP:
    """x -> [tanh layer of `width`] * `blocks` -> linear output. Weights: one list per output unit (row)."""

    def __init__(self, width: int, blocks: int, rng: random.Random):
        dims = [1] + [width] * blocks + [1]
        self.W: list[list[list[float]]] = []
        self.b: list[list[float]] = []
        for n_in, n_out in zip(dims, dims[1:]):
            bound = math.sqrt(6.0 / (n_in + n_out))  # Glorot: keeps tanh layers out of saturation at the start
            self.W.append([[rng.uniform(-bound, bound) for _ in range(n_in)] for _ in range(n_out)])
            self.b.append([0.0] * n_out)

    def tensors(self) -> list[list[float]]:
        """Every parameter vector (weight rows, then biases); updated in place by the optimizer."""
        return [row for W in self.W for row in W] + self.b

    def size(self) -> int:
        return sum(len(t) for t in self.tensors())

    def forward(self, x: float, drop: float = 0.0, rng: Optional[random.Random] = None) -> tuple[float, list, list]:
        h = [x * INPUT_SCALE]
        acts, masks = [h], []
        keep = 1.0 / (1.0 - drop) if drop else 1.0
        for W, b in zip(self.W[:-1], self.b[:-1]):
            t = [math.tanh(bj + sum(map(_mul, row, h))) for row, bj in zip(W, b)]
            mask = [0.0 if rng.random() < drop else keep for _ in t] if drop and rng else None  # inverted dropout
            h = list(map(_mul, t, mask)) if mask else t
            acts.append(h)
            masks.append((t, mask))
        y = self.b[-1][0] + sum(map(_mul, self.W[-1][0], h))
        return y, acts, masks

    def backward(self, dy: float, acts: list, masks: list, gW: list, gb: list) -> None:
        """Accumulate d(loss)/d(params) for one sample into gW, gb."""
        delta = [dy]
        for layer in range(len(self.W) - 1, -1, -1):
            a_in = acts[layer]
            for j, dj in enumerate(delta):
                grow = gW[layer][j]
                for i, ai in enumerate(a_in):
                    grow[i] += dj * ai
                gb[layer][j] += dj
            if layer == 0:
                return
            W = self.W[layer]
            back = [sum(W[j][i] * dj for j, dj in enumerate(delta)) for i in range(len(a_in))]
            t, mask = masks[layer - 1]
            if mask:
                back = list(map(_mul, back, mask))
            delta = [bi * (1.0 - ti * ti) for bi, ti in zip(back, t)]

    def to_json(self) -> dict:
        return {"W": self.W, "b": self.b}

    def load_json(self, data: dict) -> None:
        shapes = lambda W: [(len(m), len(m[0])) for m in W]  # noqa: E731
        if shapes(data["W"]) != shapes(self.W):
            raise ValueError(f"the saved model has layers {shapes(data['W'])}, this config builds {shapes(self.W)}; "
                             "continue with the same net_irreps and num_blocks")
        self.W, self.b = data["W"], data["b"]


def _loss_mse(e: float) -> tuple[float, float]:
    return e * e, 2.0 * e


def _loss_mae(e: float) -> tuple[float, float]:
    return abs(e), (1.0 if e > 0 else -1.0 if e < 0 else 0.0)


def _loss_huber(e: float) -> tuple[float, float]:
    return (0.5 * e * e, e) if abs(e) <= 1.0 else (abs(e) - 0.5, 1.0 if e > 0 else -1.0)


LOSSES: dict[str, Callable[[float], tuple[float, float]]] = {"mae": _loss_mae, "mse": _loss_mse,
                                                               "huber": _loss_huber}


# --- optimizer and schedule -----------------------------------------------------------------------------------

class Optimizer:
    """Adam / AdamW (decoupled weight decay) / SGD over the model's parameter vectors, state JSON-serialisable."""

    def __init__(self, s: Settings, tensors: list[list[float]]):
        self.kind, self.b1, self.b2, self.eps, self.wd = s.optimizer, s.betas[0], s.betas[1], s.eps, s.weight_decay
        self.clip = s.clip_norm
        self.t = 0
        self.m = [[0.0] * len(p) for p in tensors]
        self.v = [[0.0] * len(p) for p in tensors]

    def step(self, tensors: list[list[float]], grads: list[list[float]], lr: float) -> None:
        self.t += 1
        scale = self._clip_scale(grads)
        if self.kind == "sgd":
            for p, g in zip(tensors, grads):
                for i, gi in enumerate(g):
                    p[i] -= lr * gi * scale
            return
        c1, c2 = 1.0 - self.b1 ** self.t, 1.0 - self.b2 ** self.t
        decay = 1.0 - lr * self.wd if self.kind == "adamw" else 1.0
        for p, g, m, v in zip(tensors, grads, self.m, self.v):
            for i, gi in enumerate(g):
                gi *= scale
                m[i] = self.b1 * m[i] + (1.0 - self.b1) * gi
                v[i] = self.b2 * v[i] + (1.0 - self.b2) * gi * gi
                p[i] = p[i] * decay - lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + self.eps)

    def _clip_scale(self, grads: list[list[float]]) -> float:
        if self.clip <= 0:
            return 1.0
        norm = math.sqrt(sum(gi * gi for g in grads for gi in g))
        return self.clip / norm if norm > self.clip else 1.0

    def state(self) -> dict:
        return {"t": self.t, "m": self.m, "v": self.v}

    def load(self, data: dict) -> None:
        self.t, self.m, self.v = data["t"], data["m"], data["v"]


@dataclass
class Plateau:
    """Reduce-on-plateau on the validation loss; the learning rate is init_learning_rate * scale."""

    factor: float
    patience: int
    rtol: float
    cooldown: int
    scale: float = 1.0
    best: float = math.inf
    bad: int = 0
    wait: int = 0

    def step(self, val: float) -> None:
        if val < self.best * (1.0 - self.rtol):  # NaN compares False: a diverged run counts as a bad epoch
            self.best, self.bad = val, 0
        else:
            self.bad += 1
        if self.wait > 0:
            self.wait -= 1
        elif self.bad > self.patience:
            self.scale *= self.factor
            self.bad, self.wait = 0, self.cooldown

    def state(self) -> dict:
        return {"scale": self.scale, "best": self.best if math.isfinite(self.best) else None,
                "bad": self.bad, "wait": self.wait}

    def load(self, data: dict) -> None:
        self.scale, self.bad, self.wait = data["scale"], data["bad"], data["wait"]
        self.best = data["best"] if data["best"] is not None else math.inf


# --- output folder, log and checkpoints ---------------------------------------------------------------------

class Log:
    """deepx.log, DeepH's format: ``[ MM.DD-HH:MM:SS ] [tag] message``; every line flushed (and echoed)."""

    def __init__(self, path: Path):
        self.file: TextIO = open(path, "a", encoding="utf-8")

    def __call__(self, message: str) -> None:
        line = f"[ {datetime.now().strftime('%m.%d-%H:%M:%S')} ] {message}\n"
        self.file.write(line)
        self.file.flush()
        sys.stdout.write(line)
        sys.stdout.flush()

    def close(self) -> None:
        self.file.close()


def new_run_dir(outputs_dir: Path) -> Path:
    """``<outputs_dir>/<YYYY-MM-DD_HH-MM-SS>``; if that second's folder exists, wait for the next second."""
    outputs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        run = outputs_dir / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        try:
            run.mkdir()
            return run
        except FileExistsError:
            time.sleep(1.05 - (time.time() % 1.0))
    raise FileExistsError(f"could not create a new timestamped folder under {outputs_dir}")


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # a SIGTERM mid-save never leaves a half-written checkpoint


def save_checkpoint(root: Path, kind: str, epoch: int, model: MLP, extra: dict, keep: int) -> None:
    """``model/params/<kind>.pytree/epoch_<N>/params.json`` plus ``model/states/<kind>/epoch_<N>.json``."""
    params_dir = root / "params" / f"{kind}.pytree"
    states_dir = root / "states" / kind
    write_json_atomic(params_dir / f"epoch_{epoch}" / "params.json", model.to_json())
    write_json_atomic(states_dir / f"epoch_{epoch}.json", extra)
    for old in _epochs(params_dir)[:-keep]:
        shutil.rmtree(params_dir / f"epoch_{old}", ignore_errors=True)
        (states_dir / f"epoch_{old}.json").unlink(missing_ok=True)


def _epochs(params_dir: Path) -> list[int]:
    if not params_dir.is_dir():
        return []
    found = [p.name[len("epoch_"):] for p in params_dir.iterdir() if p.name.startswith("epoch_")]
    return sorted(int(e) for e in found if e.isdigit() and (params_dir / f"epoch_{e}" / "params.json").is_file())


def find_checkpoint(prev: Path, kind: str, epoch: int) -> tuple[int, Path]:
    params_dir = prev / "model" / "params" / f"{kind}.pytree"
    epochs = _epochs(params_dir)
    if not epochs:
        raise FileNotFoundError(f"no saved {kind} model under {params_dir}")
    chosen = epochs[-1] if epoch < 0 else epoch
    if chosen not in epochs:
        raise FileNotFoundError(f"no saved {kind} model for epoch {chosen} under {params_dir} (have {epochs})")
    return chosen, params_dir / f"epoch_{chosen}" / "params.json"


# --- training -----------------------------------------------------------------------------------------------

def evaluate(model: MLP, data: list[tuple[float, float]], loss: Callable) -> float:
    total = 0.0
    for x, y in data:
        total += loss(model.forward(x)[0] - y)[0]
    return total / len(data)


def train_epoch(model: MLP, opt: Optimizer, s: Settings, data: list, lr: float, epoch: int, loss: Callable) -> float:
    rng = random.Random(f"{s.seed}-{epoch}")  # per-epoch stream: a resumed run shuffles as an unbroken one would
    order = list(range(len(data)))
    rng.shuffle(order)
    tensors = model.tensors()
    total = 0.0
    for start in range(0, len(order), s.batch_size):
        batch = order[start:start + s.batch_size]
        gW = [[[0.0] * len(row) for row in W] for W in model.W]
        gb = [[0.0] * len(b) for b in model.b]
        for k in batch:
            x, y = data[k]
            pred, acts, masks = model.forward(x, s.dropout, rng)
            value, slope = loss(pred - y)
            total += value
            model.backward(slope / len(batch), acts, masks, gW, gb)
        check_failure(epoch)
        opt.step(tensors, [row for W in gW for row in W] + gb, lr)
    return total / len(data)


def check_failure(epoch: int) -> None:
    """DEMO_FAIL_AT_EPOCH: fail the way a real trainer does, with an exception from inside the training step."""
    if os.environ.get("DEMO_FAIL_AT_EPOCH", "").strip() == str(epoch):
        raise RuntimeError(f"non-finite gradients in epoch {epoch} (simulated by DEMO_FAIL_AT_EPOCH={epoch})")


def progress(s: Settings, epoch: int) -> None:
    if s.show_bar:  # batch jobs set show_train_process_bar = false; the bar goes to stderr like tqdm's
        done = int(30 * epoch / s.max_epoch)
        sys.stderr.write(f"\rTraining: |{'#' * done}{' ' * (30 - done)}| {epoch}/{s.max_epoch}")
        sys.stderr.flush()


def run(s: Settings) -> int:
    rng = random.Random(s.seed)
    (train, val, test), split = make_data(s.sizes)
    model = MLP(s.width, s.blocks, rng)
    opt = Optimizer(s, model.tensors())
    plateau = Plateau(s.factor, s.patience, s.rtol, s.cooldown)
    loss = LOSSES[s.loss_type]
    run_dir = new_run_dir(s.outputs_dir)
    log = Log(run_dir / "deepx.log")
    try:
        start = prepare(s, run_dir, log, split, model, opt, plateau)
        fit(s, run_dir / "model", log, (train, val), model, opt, plateau, loss, start)
    finally:
        log.close()
    if s.show_bar:
        sys.stderr.write("\n")
    if test:
        print(f"Test-Loss {evaluate(model, test, loss):.6e} ({s.loss_type}, {len(test)} samples)", flush=True)
    return 0


def prepare(s: Settings, run_dir: Path, log: Log, split: dict, model: MLP, opt: Optimizer, plateau: Plateau) -> int:
    """Header lines, run files and (when continuing) the loaded model; returns the first epoch to train."""
    kind, ids, total, head = device_report(s.device)
    log(f"{' ' * 16} Version {VERSION}")
    log(f"[system] Use the {kind} device(s) `{ids}` of totally `{total}` device(s). "
        f"Succeeded test on the head device `{head}`!")
    log(f"[system] Demo trainer: computing on the CPU; random seed `{s.seed}`.")
    write_json_atomic(run_dir / "dataset_split.json", split)
    log(f"[dataloader] Train size: `{s.sizes[0]}`. Val size: `{s.sizes[1]}`. Test size: `{s.sizes[2]}`.")
    log(f"[model] Building the model `demo-mlp` with loss `{s.loss_type}`.")
    log(f"[model] The parameters size is `{model.size()}`.")
    log(f"[optimizer] Using the optimizer `{s.optimizer}` with initial learning rate `{s.lr}`.")
    log(f"[optimizer] Using the scheduler `ReduceOnPlateau` with: factor `{s.factor}`, patience `{s.patience}`, "
        f"rtol `{s.rtol}`, cooldown `{s.cooldown}`, and accumulation size `1`.")
    model_dir = run_dir / "model"
    model_dir.mkdir()
    (model_dir / "train.toml").write_text(s.config_text)
    write_json_atomic(model_dir / "variables.json", {"width": s.width, "num_blocks": s.blocks,
                                                      "parameters": model.size()})
    start = resume(s, log, model, opt, plateau) if s.continued else 1
    log(f"[model] We will save the model into `{model_dir}`. The best model will be saved. "
        f"The latest model (keep `{s.latest_num}` each `{s.latest_interval}` epoch) will be saved.")
    log("[train] Compiling the networks (JIT) ...")
    log("[train] Compile networks done!")
    return start


def resume(s: Settings, log: Log, model: MLP, opt: Optimizer, plateau: Plateau) -> int:
    assert s.previous_output_dir is not None
    epoch, params = find_checkpoint(s.previous_output_dir, s.load_model_type, s.load_model_epoch)
    model.load_json(json.loads(params.read_text()))
    state_file = s.previous_output_dir / "model" / "states" / s.load_model_type / f"epoch_{epoch}.json"
    if not s.new_optimizer and state_file.is_file():
        state = json.loads(state_file.read_text())
        opt.load(state["optimizer"])
        plateau.load(state["scheduler"])
    log(f"[train] Continue from the `{s.load_model_type}` model of epoch `{epoch}` in `{s.previous_output_dir}`"
        f"{' with a new optimizer' if s.new_optimizer or not state_file.is_file() else ''}.")
    return epoch + 1


def fit(s: Settings, model_dir: Path, log: Log, data: tuple, model: MLP, opt: Optimizer, plateau: Plateau,
        loss: Callable, start: int) -> None:
    train, val = data
    sleep = float(os.environ.get("DEMO_EPOCH_SLEEP", "0") or 0)
    best = plateau.best
    log("[train] Starting the training process ...")
    for epoch in range(start, s.max_epoch + 1):
        began = time.perf_counter()
        train_loss = train_epoch(model, opt, s, train, s.lr * plateau.scale, epoch, loss)
        if sleep > 0:
            time.sleep(sleep)
        seconds = time.perf_counter() - began
        val_loss = evaluate(model, val, loss)
        plateau.step(val_loss)
        log(f"[train] Epoch {epoch} | Time {seconds:.2f} s | Train-Loss {train_loss:.6e} | "
            f"Val-Loss {val_loss:.6e} | Scale {plateau.scale}")
        extra = {"epoch": epoch, "optimizer": opt.state(), "scheduler": plateau.state()}
        if s.save_latest and epoch % s.latest_interval == 0:
            save_checkpoint(model_dir, "latest", epoch, model, extra, s.latest_num)
        if s.save_best and val_loss < best:
            best = val_loss
            save_checkpoint(model_dir, "best", epoch, model, extra, 1)
        progress(s, epoch)
        if plateau.scale < s.min_scale:
            break  # DeepH stops once the learning-rate scale falls below min_learning_rate_scale


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: train.py CONFIG.toml\n")
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(load_settings(Path(argv[1])))
    except Terminated:
        sys.stdout.flush()
        sys.stderr.write("\nTerminated (SIGTERM): training stopped; the last saved epoch can be continued.\n")
        sys.stderr.flush()
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main(sys.argv))
