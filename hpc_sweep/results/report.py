"""`hpc-sweep report`: which parameters won, as one self-contained HTML page or a markdown file.

Every number comes from :mod:`hpc_sweep.results.analysis` (the notebook API, :mod:`hpc_sweep.api`); this module
only lays it out. The page is built once as sections of neutral blocks (paragraphs, tables, images, log tails), then
written as HTML or markdown, so both formats always say the same thing.

Plots need matplotlib (``pip install 'hpc-sweep[plot]'``). It is imported only here, drawn through the Agg
canvas without pyplot (no global backend switch in a notebook, no display needed). Without it the report says how
to get plots and keeps every table. HTML embeds the plots as base64 PNG, carries its CSS inline and loads nothing
from anywhere (a Content-Security-Policy says so to the browser); markdown writes the plots as PNG files beside
itself. Every string that came from the user (parameter values, config names, reasons, log lines) is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Union

from hpc_sweep.common.durations import format_short
from hpc_sweep.common.errors import UserError
from hpc_sweep.results.analysis import PLATEAU_FACTOR, Sweep, load, value_label

FORMATS = ("html", "markdown")
RANK_LIMIT = 500          # rows of the ranking table; the rest are one `status --sort best` away
FLAG_LIMIT = 200          # rows of the flagged-runs table
CURVE_POINTS = 300        # at most this many points per config on the loss curves (a plot is ~600 px wide)
CURVE_BUDGET = 200_000    # and about this many in all: 10,000 long runs must not need gigabytes of memory
TOP_HIGHLIGHT = 5         # configs drawn in colour on the loss curves
EFFECT_PLOTS = 8          # most influential parameters drawn
NAMES_SHOWN = 30
PLOT_HINT = "Plots need matplotlib: pip install 'hpc-sweep[plot]'. Every table is here without it."
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


# -- the page as neutral blocks ------------------------------------------------------------------------------
@dataclass
class Para:
    text: str


@dataclass
class Items:
    lines: list


@dataclass
class Heading:
    text: str


@dataclass
class Table:
    header: list
    rows: list
    numeric: tuple = ()   # column indices aligned right


@dataclass
class Image:
    name: str             # key in the plots dict: "curves", "effects"
    alt: str


@dataclass
class Code:
    title: str
    lines: list


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Page:
    title: str
    meta: list
    sections: list


@dataclass
class ReportResult:
    path: Path
    plots: bool            # False: matplotlib is missing and the report has tables only
    files: list = field(default_factory=list)   # PNGs written beside a markdown report


# -- entry point ----------------------------------------------------------------------------------------------
def write_report(sweep_dir: Union[str, Path], out: Optional[Path] = None,
                 fmt: Optional[str] = None) -> ReportResult:
    """Write the report (default: report.html, or report.md for markdown, in the sweep folder)."""
    from hpc_sweep.common.atomicio import write_atomic

    fmt = fmt or _format_from(out)
    if fmt not in FORMATS:
        raise UserError(f"unknown report format '{fmt}'", fix=f"use one of {', '.join(FORMATS)}")
    if out is not None and not Path(out).resolve().parent.is_dir():
        raise UserError("the folder to write the report into does not exist", file=out,
                        fix="create it first, or choose another --out")
    with load(sweep_dir) as sweep:
        data = gather(sweep)
    out = Path(out) if out is not None else data["root"] / ("report.html" if fmt == "html" else "report.md")
    plots = make_plots(data)
    page = build_page(data, plots is not None)
    files: list = []
    if fmt == "html":
        text = render_html(page, plots or {})
    else:
        names = {}
        for name, png in (plots or {}).items():
            target = out.with_name(f"{out.stem}.{name}.png")
            write_atomic(target, png)
            files.append(target)
            names[name] = target.name
        text = render_markdown(page, names)
    write_atomic(out, text)
    return ReportResult(out, plots is not None, files)


def _format_from(out: Optional[Path]) -> str:
    if out is not None and Path(out).suffix.lower() in (".md", ".markdown"):
        return "markdown"
    return "html"


def gather(sweep: Sweep) -> dict:
    """Everything the report shows, read once through the API."""
    status = sweep.status()
    with_epochs = sum(1 for rec in status["configs"] if rec["epoch"] is not None)
    per_config = max(20, min(CURVE_POINTS, CURVE_BUDGET // max(1, with_epochs)))
    curves: dict = {}
    for row in sweep.curves(max_points=per_config):
        curves.setdefault(row["config"], []).append(row)
    return {"root": sweep.root, "status": status, "keys": sweep.keys(), "ranking": sweep.ranking(),
            "best": sweep.best(), "effects": sweep.effects(), "progress": sweep.progress(),
            "flags": sweep.convergence(), "failures": sweep.failures(), "advice": sweep.advice(),
            "curves": curves}


# -- sections -------------------------------------------------------------------------------------------------
def build_page(data: dict, have_plots: bool) -> Page:
    from hpc_sweep.results.status import short_names

    status = data["status"]
    short = short_names(data["keys"])
    meta = [f"Sweep {status['sweep']} · scheduler {status['scheduler']} · {len(status['configs'])} configs · "
            f"last poll {status.get('polled_at') or 'never'} · report written "
            f"{datetime.now().astimezone().isoformat(timespec='seconds')}"]
    if status.get("scheduler_note"):
        meta.append(f"Warning: {status['scheduler_note']}")
    if not have_plots:
        meta.append(PLOT_HINT)
    sections = [
        Section("advice", "Advice", _advice_blocks(data)),
        Section("progress", "Progress", _progress_blocks(data["progress"])),
        Section("best", "Best config", _best_blocks(data["best"])),
        # The pictures before the long tables: a reader sees what won before scrolling through every config.
        Section("effects", "Parameter effects", _effect_blocks(data["effects"], have_plots)),
        Section("convergence", "Convergence", _convergence_blocks(data, short, have_plots)),
        Section("ranking", "Ranking", _ranking_blocks(data["ranking"], data["keys"], short)),
        Section("failures", "Failures", _failure_blocks(data["failures"])),
    ]
    return Page(f"Sweep {status['sweep']}: report", meta, sections)


def num(value: Optional[float]) -> str:
    """Scores with six significant digits: enough to match `status --format json` to 1e-6."""
    return "" if value is None else f"{value:.6g}"


def _int(value: Any) -> str:
    return "" if value is None else str(value)


def _names(names: list) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def _advice_blocks(data: dict) -> list:
    if data["advice"]:
        return [Items(data["advice"])]
    if not data["ranking"]:
        return [Para("No config has a validation score yet: run `hpc-sweep poll` once runs have logged epochs.")]
    return [Para("Nothing stands out: no parameter sits at the edge of its range or lacks influence, "
                 "and no failure repeats.")]


def _progress_blocks(prog: dict) -> list:
    header = [*prog["counts"], "total"]
    counts = [*[str(n) for n in prog["counts"].values()], str(prog["total"])]
    used = f"GPU-hours used: {prog['gpu_hours']:.1f} ({prog['run_hours']:.1f} run-hours, all attempts)."
    if prog["unknown_durations"]:
        used += f" {prog['unknown_durations']} attempt(s) ran for an unknown time and are not counted."
    blocks = [Table(header, [counts], tuple(range(len(header)))), Para(used), Para(_eta_text(prog))]
    if prog.get("stopped"):
        blocks.append(Para(f"Early stopping ended {prog['stopped']} run(s) before their last epoch: "
                           f"{prog['epochs_saved']} epochs not trained. A stopped config is brought back from its "
                           "checkpoint with hpc-sweep resubmit."))
    return blocks


def _eta_text(prog: dict) -> str:
    if not prog["remaining"]:
        return "Nothing left to run."
    left = f"Left: {prog['remaining']} config(s) ({prog['running']} running, {prog['queued']} not started)"
    if prog["eta_s"] is None:
        return left + "; no ETA until a config has completed (the ETA uses their average run time)."
    mean = f", {format_short(prog['mean_run_s'])} per completed config" if prog["mean_run_s"] else ""
    return (f"{left}: about {format_short(prog['eta_s'])} more if as many run at once as now "
            f"({format_short(prog['remaining_run_s'])} of run time, {prog['remaining_gpu_hours']:.1f} GPU-hours"
            f"{mean}).")


def _best_blocks(best: Optional[dict]) -> list:
    if best is None:
        return [Para("No config has a validation score yet.")]
    blocks: list = [
        Para(f"{best['config']}: best validation loss {num(best['best_val_loss'])} at epoch "
             f"{_int(best['best_epoch'])} ({best['state']}, epoch {_int(best['epoch'])}/{_int(best['max_epoch'])})."
             + (f" Config file: {best['file']}" if best.get("file") else "")),
        Table(["swept parameter", "value"], [[k, value_label(v)] for k, v in best["params"].items()]),
        Heading("Difference from the base config"),
    ]
    if best["diff"] is None:
        return blocks + [Para(best["diff_error"] or "The config file could not be read.")]
    rows = [[d["key"], value_label(d["base"]) if d["in_base"] else "(absent)",
             value_label(d["value"]) if d["in_config"] else "(absent)", d["origin"]] for d in best["diff"]]
    return blocks + [Para("Every dotted key whose value differs: swept, fixed for all configs, or set by "
                          "hpc-sweep (absolute paths, the config's own outputs folder)."),
                     Table(["key", "base", "this config", "origin"], rows)]


def _ranking_blocks(ranking: list, keys: list, short: dict) -> list:
    if not ranking:
        return [Para("No config has a validation score yet.")]
    header = ["rank", "config", *[short[k] for k in keys], "best val", "best epoch", "epoch", "last val", "state",
              "trend"]
    first = 2 + len(keys)
    rows = [[str(r["rank"]), r["config"], *[value_label(r["params"].get(k)) for k in keys], num(r["best_val_loss"]),
             _int(r["best_epoch"]), _epoch(r), num(r["val_loss"]), r["state"], r["trend"] or ""]
            for r in ranking[:RANK_LIMIT]]
    blocks: list = [Para("Configs with a validation score, lowest best validation loss first."),
                    Table(header, rows, (0, first, first + 1, first + 3))]
    if len(ranking) > RANK_LIMIT:
        blocks.append(Para(f"{len(ranking) - RANK_LIMIT} more: hpc-sweep status --sort best"))
    return blocks


def _epoch(rec: dict) -> str:
    if rec["epoch"] is None:
        return ""
    return f"{rec['epoch']}/{rec['max_epoch'] if rec['max_epoch'] is not None else '?'}"


def _effect_blocks(effects: list, have_plots: bool) -> list:
    if not effects:
        return [Para("Nothing was swept.")]
    blocks: list = [Para("For each value of a parameter: the best and the median score (best validation loss) of "
                         "the configs with that value. Parameters are ordered by influence: the spread of their "
                         "values' medians relative to the median of all scores.")]
    blocks.append(Image("effects", "score per parameter value (dots: configs, bars: medians)"))
    if have_plots:
        blocks.append(Para(f"Dots are configs (the top {TOP_HIGHLIGHT} of the ranking in the colours of the loss "
                           "curves below), black bars the medians."))
    for effect in effects:
        influence = "not enough scores" if effect["influence"] is None else f"influence {effect['influence']:.1%}"
        partners = f", moves with {', '.join(effect['together_with'])}" if effect["together_with"] else ""
        blocks.append(Heading(f"{effect['key']} ({influence}{partners})"))
        rows = [[lv["label"], str(lv["n"]), str(lv["scored"]), str(lv["no_score"]), num(lv["best"]),
                 num(lv["median"]), lv["best_config"] or ""] for lv in effect["levels"]]
        blocks.append(Table(["value", "configs", "scored", "ended unscored", "best", "median", "best config"], rows,
                            (1, 2, 3, 4, 5)))
    return blocks


def _convergence_blocks(data: dict, short: dict, have_plots: bool) -> list:
    blocks: list = []
    if not data["curves"]:
        blocks.append(Para("No epochs logged yet."))
    else:
        blocks.append(Image("curves", "train and validation loss per epoch, top configs in colour"))
        if have_plots:
            blocks.append(Para(f"Every config's curves in grey, the top {TOP_HIGHLIGHT} of the ranking in colour, "
                               "runs that diverged or hit nan in red."))
    flags = data["flags"]
    if not flags:
        return blocks + [Para("No run diverged, hit nan, or plateaued far from the best.")]
    counts: dict = {}
    for flag in flags:
        counts[flag["flag"]] = counts.get(flag["flag"], 0) + 1
    keys = data["keys"]
    rows = [[f["config"], f["flag"], f["state"], f["trend"] or "", num(f["best_val_loss"]), num(f["val_loss"]),
             _epoch(f), *[value_label(f["params"].get(k)) for k in keys]] for f in flags[:FLAG_LIMIT]]
    summary = ", ".join(f"{n} {flag}" for flag, n in counts.items())
    blocks += [Para(f"Flagged runs: {summary} (plateaued: flat at {PLATEAU_FACTOR:g}× the best score or worse)."),
               Table(["config", "flag", "state", "trend", "best val", "last val", "epoch", *[short[k] for k in keys]],
                     rows, (4, 5))]
    if len(flags) > FLAG_LIMIT:
        blocks.append(Para(f"{len(flags) - FLAG_LIMIT} more flagged runs: Sweep.convergence() in hpc_sweep.api"))
    return blocks


def _failure_blocks(failures: list) -> list:
    if not failures:
        return [Para("No config failed.")]
    blocks: list = []
    for group in failures:
        blocks.append(Heading(f"{group['reason']} ({group['count']} config{'s' if group['count'] != 1 else ''})"))
        blocks.append(Para(f"State: {', '.join(group['states'])}. Configs: {_names(group['configs'])}."))
        if group["tail"]:
            blocks.append(Code(f"last lines of {group['log']}", group["tail"]))
        else:
            blocks.append(Para(f"No log found for {group['example']}."))
    return blocks


# -- plots ----------------------------------------------------------------------------------------------------
def make_plots(data: dict) -> Optional[dict]:
    """{"curves": png, "effects": png} (each only when there is something to draw); None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return None
    plots = {}
    if data["curves"]:
        plots["curves"] = _curves_png(data)
    drawn = [e for e in data["effects"] if any(lv["scores"] for lv in e["levels"])][:EFFECT_PLOTS]
    if drawn:
        plots["effects"] = _effects_png(drawn, data["ranking"])
    return plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, whatever backend a notebook has chosen
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _label(text: str, width: int = 18) -> str:
    """Plot text from user data: '$' would start matplotlib's mathtext, long values crowd the axis."""
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def _finite(values: list) -> list:
    return [v for v in values if v is not None and math.isfinite(v)]


def _log_scale(values: list) -> bool:
    values = _finite(values)
    return bool(values) and min(values) > 0 and max(values) / min(values) > 20


def _curves_png(data: dict) -> bytes:
    from matplotlib.collections import LineCollection

    top = [r["config"] for r in data["ranking"][:TOP_HIGHLIGHT]]
    bad = {f["config"] for f in data["flags"] if f["flag"] in ("diverged", "nan")}
    fig = _figure(12, 4.6)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, column, title in zip(axes, ("train_loss", "val_loss"), ("train loss", "validation loss")):
        every = [row[column] for rows in data["curves"].values() for row in rows]
        log = _log_scale(every)
        if log:
            ax.set_yscale("log")
        grey, red = [], []
        for config, rows in data["curves"].items():
            points = _points(rows, column, log)
            if len(points) > 1 and config not in top:
                (red if config in bad else grey).append(points)
        ax.add_collection(LineCollection(grey, colors="#9a9a9a", linewidths=0.6, alpha=0.45))
        ax.add_collection(LineCollection(red, colors="#d62728", linewidths=0.7, alpha=0.6))
        for number, config in enumerate(top):
            points = _points(data["curves"].get(config, []), column, log)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=COLOURS[number % len(COLOURS)], linewidth=2,
                        label=_label(f"#{number + 1} {config}", 24))
        ax.autoscale_view()
        ax.set(title=title, xlabel="epoch", ylabel="loss")
        ax.grid(True, alpha=0.3)
    if top:
        axes[1].legend(fontsize="small", loc="upper right")
    return _png(fig)


def _points(rows: list, column: str, log: bool) -> list:
    """(epoch, loss) in logged order; gaps (None/nan) and, on a log axis, non-positive values left out."""
    return [(r["epoch"], r[column]) for r in rows
            if r[column] is not None and math.isfinite(r[column]) and (r[column] > 0 or not log)]


def _effects_png(effects: list, ranking: list) -> bytes:
    cols = min(4, len(effects))
    rows = -(-len(effects) // cols)
    fig = _figure(3.2 * cols, 3.1 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    top = {r["config"]: n for n, r in enumerate(ranking[:TOP_HIGHLIGHT])}
    for ax, effect in zip(axes, effects):
        _effect_axis(ax, effect, top)
    for ax in axes[len(effects):]:
        ax.set_visible(False)
    return _png(fig)


def _effect_axis(ax, effect: dict, top: dict) -> None:
    """One parameter: every config's score at its value, the medians as bars, the top configs in colour."""
    levels = effect["levels"]
    if _log_scale([s for lv in levels for s in lv["scores"]]):
        ax.set_yscale("log")
    for x, level in enumerate(levels):
        scores = level["scores"]
        if not scores:
            continue
        # Spread the dots sideways (golden-ratio steps: even, deterministic, not ordered by score) so hundreds
        # of configs at one value stay visible.
        xs = [x + 0.5 * ((i * 0.618034) % 1.0 - 0.5) for i in range(len(scores))]
        ax.scatter(xs, scores, s=9, alpha=0.5, color="#7f7f7f", linewidths=0)
        for x_dot, score, config in zip(xs, scores, level["configs"]):
            if config in top:
                ax.scatter([x_dot], [score], s=36, color=COLOURS[top[config] % len(COLOURS)], zorder=3,
                           edgecolors="black", linewidths=0.5)
        if level["median"] is not None:
            ax.hlines(level["median"], x - 0.3, x + 0.3, colors="black", linewidth=2)
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels([_label(lv["label"], 14) for lv in levels], rotation=30 if len(levels) > 3 else 0,
                       fontsize="small", ha="right" if len(levels) > 3 else "center")
    influence = "" if effect["influence"] is None else f" ({effect['influence']:.0%})"
    ax.set_title(_label(effect["key"].rsplit(".", 1)[-1], 28) + influence, fontsize="medium")
    ax.set_ylabel("best val loss", fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)


# -- HTML -----------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1250px;padding:0 1.2em 3em;color:#1d1d1f;background:#fff;line-height:1.45}
h1{margin:.8em 0 .2em}h2{border-bottom:2px solid #e3e3e3;padding-bottom:.2em;margin-top:1.8em}
h3{margin:1.2em 0 .4em;font-size:1.02em}
.meta{color:#555;margin:.2em 0}nav a{margin-right:1em}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.86em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f3f4f6;position:sticky;top:0}tr:nth-child(even) td{background:#fafafa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f6f8fa;border:1px solid #e3e3e3;padding:.6em;overflow-x:auto;font-size:.82em;white-space:pre}
li{margin:.3em 0}summary{cursor:pointer;color:#333}
"""
# No scripts, no fetches: even a hostile value that slipped past escaping could not run or phone home.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_html(page: Page, plots: dict) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(page.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>{e(page.title)}</h1>"]
    parts += [f'<p class="meta">{e(line)}</p>' for line in page.meta]
    parts.append("<nav>" + "".join(f'<a href="#{s.anchor}">{e(s.title)}</a>' for s in page.sections) + "</nav>")
    for section in page.sections:
        parts.append(f'<section id="{section.anchor}"><h2>{e(section.title)}</h2>')
        parts += [_html_block(block, plots) for block in section.blocks]
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _html_block(block: Any, plots: dict) -> str:
    e = html.escape
    if isinstance(block, Para):
        return f"<p>{e(block.text)}</p>"
    if isinstance(block, Heading):
        return f"<h3>{e(block.text)}</h3>"
    if isinstance(block, Items):
        return "<ul>" + "".join(f"<li>{e(line)}</li>" for line in block.lines) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        png = plots.get(block.name)
        if png is None:
            return f"<p>{e(PLOT_HINT)}</p>"
        data = base64.b64encode(png).decode("ascii")
        return f'<p><img alt="{e(block.alt)}" src="data:image/png;base64,{data}"></p>'
    if isinstance(block, Code):
        return (f"<details open><summary>{e(block.title)}</summary><pre>"
                + e("\n".join(block.lines)) + "</pre></details>")
    raise TypeError(f"unknown block {block!r}")


def _html_table(table: Table) -> str:
    e = html.escape

    def cls(index: int) -> str:
        return ' class="num"' if index in table.numeric else ""

    head = "".join(f"<th{cls(i)}>{e(h)}</th>" for i, h in enumerate(table.header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in table.rows)
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# -- markdown -------------------------------------------------------------------------------------------------
def md_text(text: str) -> str:
    """Plain text that markdown renders as itself: no raw HTML tags, no table-breaking pipes or newlines."""
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def render_markdown(page: Page, plot_files: dict) -> str:
    out = [f"# {md_text(page.title)}", "", "  \n".join(md_text(line) for line in page.meta), ""]
    # Links to the anchors markdown renderers derive from the headings ("Best config" -> #best-config).
    out.append(" · ".join(f"[{md_text(s.title)}](#{s.title.lower().replace(' ', '-')})" for s in page.sections))
    out.append("")
    for section in page.sections:
        out += [f"## {md_text(section.title)}", ""]
        for block in section.blocks:
            out += _md_block(block, plot_files) + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def _md_block(block: Any, plot_files: dict) -> list:
    if isinstance(block, Para):
        return [md_text(block.text)]
    if isinstance(block, Heading):
        return [f"### {md_text(block.text)}"]
    if isinstance(block, Items):
        return [f"- {md_text(line)}" for line in block.lines]
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Image):
        name = plot_files.get(block.name)
        return [f"![{md_text(block.alt)}]({name})" if name else f"_{md_text(PLOT_HINT)}_"]
    if isinstance(block, Code):
        # A fence longer than any backtick run in the log, so a log line cannot close it.
        longest = max((len(run) for line in block.lines for run in re.findall(r"`+", line)), default=0)
        fence = "`" * max(3, longest + 1)
        return [f"{md_text(block.title)}:", "", fence, *block.lines, fence]
    raise TypeError(f"unknown block {block!r}")


def _md_table(table: Table) -> list:
    rule = ["---:" if i in table.numeric else "---" for i in range(len(table.header))]
    lines = ["| " + " | ".join(md_text(h) for h in table.header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in table.rows]
    return lines
