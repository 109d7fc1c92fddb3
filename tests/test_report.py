"""`hpc-sweep report` and hpc_sweep.api on a synthetic 200-config DeepH sweep built through the real code paths:
`hpc-sweep generate`, attempts recorded in the state database, deepx.log files written where DeepH writes them
and parsed by the real poll step (hpc_sweep.track.progress.update_progress), job logs diagnosed by
hpc_sweep.track.failure.

The outcome is designed so the right answers are known: the learning rate matters most and is best at the top
of its grid (1e-2), num_blocks matters less, dropout not at all; one (lr, blocks) cell fails with CUDA OOM, one
times out, one diverges, one hits nan, one plateaus, one is still running and one is still pending. Every
special cell spans all dropout and loss_type values, so those two stay balanced (no effect)."""

from __future__ import annotations

import json
import math
import os
import random
import colorsys
import statistics
import struct
import subprocess
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpc_sweep.api import NO_INFLUENCE, load
from hpc_sweep.cli import cli, main

REPO = Path(__file__).resolve().parents[1]
LR = "process.train.optimizer.init_learning_rate"
BLOCKS = "model.advanced.num_blocks"
DROPOUT = "process.train.drop.dropout_rate"
LOSS = "model.loss_type"
HOSTILE = "<script>alert(1)</script>"
LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
MAX_EPOCH = 40
GPUS = 2
EPOCH_S = 60.0

SWEEP_TOML = f"""
[sweep]
name = "synth"
program = "deeph"
base = "configs/.base_config.toml"
command = "deeph-train {{config}}"
site = "local"

[grid]
"{LR}" = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
"{BLOCKS}" = [2, 3, 4, 5]
"{DROPOUT}" = [0.0, 0.05, 0.1, 0.15, 0.2]
"{LOSS}" = ["mae", "{HOSTILE}"]

[fixed]
"process.train.max_epoch" = {MAX_EPOCH}
"""

# (lr, blocks) -> what happened to every config in that cell
OUTCOMES = {
    (1e-4, 5): "oom", (3e-4, 5): "timeout", (1e-3, 5): "pending", (3e-3, 5): "running",
    (1e-2, 4): "diverged", (1e-2, 5): "nan", (1e-4, 2): "plateau",
}
OOM_LOG = """Traceback (most recent call last):
  File "/opt/deeph/train.py", line 88, in <module>
    main()
  File "/opt/deeph/train.py", line 61, in step
    out = model(batch)  # <b>not bold</b>
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB
"""
TIMEOUT_LOG = "slurmstepd: error: *** JOB 4242 ON gpu07 CANCELLED AT 2026-01-02T03:04:05 DUE TO TIME LIMIT ***\n"


def _score(params: dict, rng: random.Random) -> float:
    """The converged validation loss: strongly lr-dependent (best at 1e-2), mildly blocks-dependent, tiny noise."""
    return 0.02 * (0.01 / params[LR]) ** 0.5 * (1 + 0.15 * (params[BLOCKS] - 2)) * (1 + 0.002 * rng.uniform(-1, 1))


def _curve(outcome: str, final: float) -> list:
    """(train, val) per epoch as the trainer prints them (strings, 'nan' included)."""
    epochs = {"timeout": 30, "running": 25, "oom": 0}.get(outcome, MAX_EPOCH)
    rows = []
    for epoch in range(1, epochs + 1):
        val = final + (2.0 - final) * math.exp(-epoch / 6)
        if outcome == "plateau":
            val = 0.5 + (2.0 - 0.5) * math.exp(-epoch)
        if outcome == "diverged" and epoch > 25:
            val = (final + (2.0 - final) * math.exp(-25 / 6)) * 1.15 ** (epoch - 25)
        if outcome == "nan" and epoch >= 12:
            rows.append(("nan", "nan"))
            continue
        rows.append((f"{0.9 * val:.6e}", f"{val:.6e}"))
    return rows


def _deepx_log(rows: list) -> str:
    lines = ["[ 01.01-00:00:00 ]                  Version 1.0.6",
             "[ 01.01-00:00:05 ] [train] Starting the training process ..."]
    lines += [f"[ 01.01-00:{n % 60:02d}:00 ] [train] Epoch {n} | Time 60.00 s | Train-Loss {t} | Val-Loss {v} | "
              "Scale 1.0" for n, (t, v) in enumerate(rows, 1)]
    return "\n".join(lines) + "\n"


def _state_of(outcome: str) -> str:
    return {"oom": "oom", "timeout": "timeout", "pending": "pending", "running": "running"}.get(outcome, "completed")


def _record_outcomes(root: Path) -> None:
    """What a poll would have recorded: attempts, job logs, trainer logs; then the real log parsing."""
    from hpc_sweep.track.failure import failure_reason
    from hpc_sweep.track.poll import PollReport
    from hpc_sweep.track.progress import update_progress
    from hpc_sweep.session import Session

    session = Session.open(root, write=True)
    now = time.time()
    try:
        store = session.store
        with store.transaction() as conn:
            for cfg in store.configs():
                params = cfg.params
                outcome = OUTCOMES.get((params[LR], params[BLOCKS]), "normal")
                rng = random.Random(cfg.idx)
                rows = _curve(outcome, _score(params, rng))
                state, reason = _state_of(outcome), None
                started = None if outcome == "pending" else now - 3600 * 6 + cfg.idx
                ended = elapsed = None
                if outcome not in ("pending", "running"):
                    elapsed = EPOCH_S * max(len(rows), 1)
                    ended = started + elapsed
                elif outcome == "running":
                    started = now - EPOCH_S * len(rows)
                log = {"oom": OOM_LOG, "timeout": TIMEOUT_LOG}.get(outcome, "training ...\n")
                if outcome != "pending":
                    (session.paths.logs / f"{cfg.name}.1.log").write_text(log)
                    run = session.paths.config_outputs(cfg.name) / "2026-01-01_00-00-00"
                    run.mkdir(parents=True, exist_ok=True)
                    (run / "deepx.log").write_text(_deepx_log(rows))
                    reason = failure_reason(log) if state in ("oom", "timeout") else None
                conn.execute("INSERT INTO attempts (config, attempt, job_id, state, reason, submitted_at, started_at,"
                             " ended_at, elapsed, host) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, 'gpu07')",
                             (cfg.name, f"4242_{cfg.idx}", state, reason, now - 7 * 3600, started, ended,
                              elapsed))
                store.set_config_state(cfg.name, state, reason, attempt=1)
        update_progress(session, PollReport())
    finally:
        session.close()


def _new_sweep(where: Path, sweep_toml: str) -> Path:
    """`hpc-sweep init` with a GPU version of the demo's DeepH base, then our sweep.toml."""
    base = (REPO / "examples" / "demo" / "base.toml").read_text()
    base = base.replace('device = "cpu"', f'device = "gpu*{GPUS}"').replace("init_learning_rate = 1e-2",
                                                                           "init_learning_rate = 5e-3")
    (where / "train.toml").write_text(base)
    root = where / "synth"
    main(["init", str(root), "--base", str(where / "train.toml"), "--site", "local"])
    (root / "sweep.toml").write_text(sweep_toml)
    return root


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = _new_sweep(tmp_path_factory.mktemp("report"), SWEEP_TOML)
    main(["generate", str(root)])
    _record_outcomes(root)
    return root


@pytest.fixture(scope="module")
def status_json(sweep_dir: Path) -> dict:
    result = CliRunner().invoke(cli, ["status", str(sweep_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def sweep(sweep_dir: Path):
    with load(sweep_dir) as opened:
        yield opened


@pytest.fixture(scope="module")
def html_report(sweep_dir: Path) -> tuple:
    result = CliRunner().invoke(cli, ["report", str(sweep_dir)])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    return path, path.read_text()


def _cell(params: dict) -> tuple:
    return params[LR], params[BLOCKS]


# -- the API ----------------------------------------------------------------------------------------------------
def test_generated_200_configs_with_real_parsed_curves(sweep, status_json):
    assert len(status_json["configs"]) == 200
    assert status_json["counts"] == {"pending": 10, "running": 10, "completed": 160, "timeout": 10, "oom": 10}
    curve = sweep.curves("config001")
    assert [r["epoch"] for r in curve] == list(range(1, MAX_EPOCH + 1))
    assert set(curve[0]) == {"config", "attempt", "epoch", "train_loss", "val_loss"}
    best_epoch = next(r["best_epoch"] for r in status_json["configs"] if r["config"] == "config001")
    wanted = set(range(1, MAX_EPOCH + 1, 4)) | {MAX_EPOCH, best_epoch}  # every 4th, the last, the best
    assert sweep.curves("config001", max_points=10) == [r for r in curve if r["epoch"] in wanted]


def test_ranking_numbers_equal_status_json(sweep, status_json):
    by_name = {r["config"]: r for r in status_json["configs"]}
    ranking = sweep.ranking()
    assert len(ranking) == sum(1 for r in status_json["configs"] if r["best_val_loss"] is not None)
    assert [r["rank"] for r in ranking] == list(range(1, len(ranking) + 1))
    scores = [r["best_val_loss"] for r in ranking]
    assert scores == sorted(scores)
    for row in ranking:
        snap = by_name[row["config"]]
        for key in ("state", "best_val_loss", "best_epoch", "val_loss", "train_loss", "epoch", "max_epoch", "trend"):
            assert row[key] == snap[key], (row["config"], key)
        assert row["params"] == {k: snap["params"][k] for k in (LR, BLOCKS, DROPOUT, LOSS)}
    best = sweep.best()
    assert best["config"] == ranking[0]["config"]
    assert _cell(best["params"]) == (1e-2, 2)


def test_best_config_full_difference_from_base(sweep):
    diff = {d["key"]: d for d in sweep.best()["diff"]}
    assert diff[LR]["origin"] == "swept" and diff[LR]["base"] == 5e-3 and diff[LR]["value"] == 1e-2
    assert diff["process.train.max_epoch"]["origin"] == "fixed"
    assert diff["process.train.max_epoch"]["value"] == MAX_EPOCH
    assert diff["data.outputs_dir"]["origin"] == "hpc-sweep"
    assert BLOCKS not in diff  # the best has num_blocks = 2, the base's own value: no difference
    assert [d["origin"] for d in sweep.best()["diff"]] == sorted(
        (d["origin"] for d in sweep.best()["diff"]), key=["swept", "fixed", "hpc-sweep"].index)


def test_effects_put_the_influential_parameter_first(sweep):
    effects = sweep.effects()
    assert [e["key"] for e in effects][:2] == [LR, BLOCKS]
    lr = effects[0]
    assert [lv["value"] for lv in lr["levels"]] == LRS
    assert lr["best_value"] == 1e-2
    for level in lr["levels"]:
        assert level["median"] == statistics.median(level["scores"]) and level["best"] == min(level["scores"])
        assert level["n"] == 40
    medians = [lv["median"] for lv in lr["levels"]]
    assert medians == sorted(medians, reverse=True)  # larger rates, lower losses
    dropout = next(e for e in effects if e["key"] == DROPOUT)
    assert dropout["influence"] < NO_INFLUENCE < effects[1]["influence"]


def test_advice_extend_the_grid_fix_a_parameter_and_repeated_failures(sweep):
    advice = sweep.advice()
    text = "\n".join(advice)
    assert f"{LR}: the best value, 0.01, is the largest tried — extend the range beyond 0.01" in text
    assert any(line.startswith(DROPOUT) and "fix it" in line for line in advice)
    assert not any(line.startswith(LR) and "fix it" in line for line in advice)
    assert "10 configs ended with the same reason, \"out of memory (GPU: Tried to allocate 2.00 GiB)\"" in text
    assert "10 configs ended with the same reason, \"time limit\"" in text
    assert "runs diverged or produced nan; 20 of them have " + LR + " = 0.01" in text


def test_progress_counts_gpu_hours_and_eta(sweep, status_json):
    progress = sweep.progress()
    assert progress["counts"] == status_json["counts"]
    finished = {"completed": MAX_EPOCH, "timeout": 30, "oom": 1}
    expected = sum(finished[r["state"]] * EPOCH_S for r in status_json["configs"] if r["state"] in finished)
    expected += sum(25 * EPOCH_S for r in status_json["configs"] if r["state"] == "running")
    assert progress["gpu_hours"] == pytest.approx(expected * GPUS / 3600, rel=1e-3)
    assert progress["mean_run_s"] == pytest.approx(MAX_EPOCH * EPOCH_S)
    running_eta = sum(r["eta_s"] for r in status_json["configs"] if r["state"] == "running")
    assert progress["remaining_run_s"] == pytest.approx(running_eta + 10 * MAX_EPOCH * EPOCH_S)
    assert progress["eta_s"] == pytest.approx(progress["remaining_run_s"] / 10)


def test_convergence_flags(sweep):
    flags = {f["config"]: f["flag"] for f in sweep.convergence()}
    by_cell: dict = {}
    for cfg in sweep.configs():
        if cfg["config"] in flags:
            by_cell.setdefault(_cell(cfg["params"]), set()).add(flags[cfg["config"]])
    assert by_cell == {(1e-2, 4): {"diverged"}, (1e-2, 5): {"nan"}, (1e-4, 2): {"plateaued"}}
    assert len(flags) == 30


def test_failures_grouped_with_log_tails(sweep):
    groups = sweep.failures()
    assert [(g["reason"], g["count"], g["states"]) for g in groups] == [
        ("out of memory (GPU: Tried to allocate 2.00 GiB)", 10, ["oom"]), ("time limit", 10, ["timeout"])]
    assert groups[0]["log"].endswith(f"logs/{groups[0]['example']}.1.log")
    assert any("CUDA out of memory" in line for line in groups[0]["tail"])


def test_api_records_are_copies(sweep):
    sweep.ranking()[0]["best_val_loss"] = -1.0
    sweep.status()["configs"].clear()
    assert sweep.ranking()[0]["best_val_loss"] > 0
    assert len(sweep.status()["configs"]) == 200


# -- the HTML report ------------------------------------------------------------------------------------------
class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list = []
        self.text: list = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_parses_and_escapes(html_report, sweep_dir):
    path, text = html_report
    assert path == sweep_dir / "report.html"
    parser = _Collector()
    parser.feed(text)
    parser.close()
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    for _, attrs in parser.tags:
        for name in ("src", "href"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), value
    assert "http://" not in text and "https://" not in text
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>not bold</b>" not in text and "&lt;b&gt;not bold&lt;/b&gt;" in text
    assert HOSTILE in "".join(parser.text)  # shown to the reader as text
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert len(images) == (2 if _matplotlib() else 0)


def test_html_shows_every_section(html_report, sweep):
    _, text = html_report
    for anchor in ("advice", "progress", "best", "ranking", "effects", "convergence", "failures"):
        assert f'<section id="{anchor}">' in text
    best = sweep.best()
    assert f"{best['config']}: best validation loss {best['best_val_loss']:.6g}" in text
    assert "extend the range beyond 0.01" in text


def _markdown_table(text: str, heading: str) -> list:
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return table


def test_markdown_has_the_ranking_table_with_status_numbers(sweep_dir, status_json, tmp_path):
    out = tmp_path / "summary.md"
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    table = _markdown_table(text, "## Ranking")
    header, rows = table[0], table[2:]
    assert header[:2] == ["rank", "config"] and "best val" in header
    by_name = {r["config"]: r for r in status_json["configs"]}
    assert len(rows) == sum(1 for r in status_json["configs"] if r["best_val_loss"] is not None)
    for row in rows:
        snap = by_name[row[1]]
        assert float(row[header.index("best val")]) == pytest.approx(snap["best_val_loss"], rel=1e-5)
        assert int(row[header.index("best epoch")]) == snap["best_epoch"]
    assert HOSTILE not in text and "&lt;script&gt;" in text
    for name in ("curves", "effects"):
        if _matplotlib():
            assert f"(summary.{name}.png)" in text
            assert (tmp_path / f"summary.{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert "pip install 'hpc-sweep[plot]'" in text and not (tmp_path / f"summary.{name}.png").exists()


def test_without_matplotlib_the_report_keeps_every_table(sweep_dir, tmp_path, monkeypatch):
    import sys

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.collections"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of a None entry raises ImportError
    out = tmp_path / "plain.html"
    result = CliRunner().invoke(cli, ["report", str(sweep_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.count("pip install &#x27;hpc-sweep[plot]&#x27;") == 3  # at the top and instead of each plot
    assert "<img" not in text
    for anchor in ("ranking", "effects", "convergence", "failures"):
        assert f'<section id="{anchor}">' in text
    assert "<table>" in text[text.index('<section id="effects">'):]


def test_bad_output_folder_or_format_is_a_one_line_error(sweep_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(sweep_dir), "--out", str(tmp_path / "missing" / "r.html")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "missing" in err
    from hpc_sweep.common.errors import UserError
    from hpc_sweep.results.report import write_report

    with pytest.raises(UserError, match="unknown report format 'pdf'"):
        write_report(sweep_dir, fmt="pdf")


def test_report_before_any_score(tmp_path):
    root = _new_sweep(tmp_path, SWEEP_TOML.replace(f'"{LOSS}" = ["mae", "{HOSTILE}"]', ""))
    main(["generate", str(root)])
    main(["report", str(root), "--format", "markdown"])
    text = (root / "report.md").read_text()
    assert "No config has a validation score yet" in text
    assert "no ETA until a config has completed" in text


# -- a real browser ---------------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"


def _png_colours(data: bytes) -> set:
    """Distinct (r, g, b) of an 8-bit RGB/RGBA PNG (a screenshot), decoded with zlib alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
    width, height, depth, colour_type = header[:4]
    assert depth == 8 and colour_type in (2, 6), header
    bpp = 4 if colour_type == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    previous, colours = bytearray(stride), set()
    for row in range(height):
        start = row * (stride + 1)
        line = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous, bpp)
        colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
        previous = line
    return {tuple(c) for c in colours}


def _hue_families(colours: set) -> int:
    """How many of twelve hue sectors hold at least five distinct saturated colours. Text and links give one
    (blue); plots add the orange, green, red, purple of the highlighted curves and dots."""
    sectors: dict = {}
    for r, g, b in colours:
        hue, light, sat = colorsys.rgb_to_hls(r / 255, g / 255, b / 255)
        if sat > 0.4 and 0.15 < light < 0.85:
            sectors.setdefault(int(hue * 12) % 12, set()).add((r, g, b))
    return sum(1 for found in sectors.values() if len(found) >= 5)


def _unfilter(kind: int, line: bytearray, up: bytearray, bpp: int) -> bytearray:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        corner = up[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 255
        elif kind == 2:
            line[i] = (line[i] + up[i]) & 255
        elif kind == 3:
            line[i] = (line[i] + (left + up[i]) // 2) & 255
        elif kind == 4:
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            line[i] = (line[i] + (left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner)) & 255
    return line


def test_headless_browser_renders_the_report(html_report, tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing under CI (tests/run-all.sh installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    path, _ = html_report
    shot = tmp_path / "shot.png"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}", "--window-size=1200,2000", "--enable-logging=stderr", "--v=0",
            path.resolve().as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console  # the page has no script; any console line is an error (CSP, a failed load)
    colours = _png_colours(shot.read_bytes())
    assert len(colours) > 50, len(colours)  # not blank: text, tables
    if _matplotlib():  # the report embedded plots: they must have been drawn on screen, not broken images
        assert _hue_families(colours) >= 3, _hue_families(colours)


def _matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
