"""status.json and status.md as written by every poll: exact JSON, one config per line, pipes escaped."""

from __future__ import annotations

import json
import re

import pytest

from hpc_sweep.track.snapshot import snapshot_json
from hpc_sweep.results.status import markdown_table


def _snapshot(values: list) -> dict:
    configs = [{"config": f"config{i:03d}", "state": "running", "params": {"tag": value, "lr": 0.1 * i},
                "reason": None, "val_loss": float(i)} for i, value in enumerate(values, 1)]
    return {"sweep": "s", "scheduler": "slurm", "polled_at": "2026-11-23T10:00:00+00:00",
            "counts": {"running": len(configs)}, "configs": configs}


@pytest.mark.parametrize("values", [
    [],
    ["plain"],
    ["a", "b", "c"],
    ["}, {", 'x"}, {"y', "ok"],                   # the record boundary's own spelling inside values
    [[{"nested": 1}, {"nested": 2}], "b"],        # a list of tables makes "}, {" inside one record
    ["line\nbreak", "tab\t", "\u00e9\u4e2d", "back\\slash"],
])
def test_snapshot_json_is_exact_with_one_config_per_line(values):
    snapshot = _snapshot(values)
    text = snapshot_json(snapshot)
    assert json.loads(text) == snapshot
    config_lines = [line for line in text.splitlines() if line.lstrip().startswith('{"config"')]
    assert len(config_lines) == len(values)
    for line, record in zip(config_lines, snapshot["configs"]):
        assert json.loads(line.strip().rstrip(",")) == record


def test_markdown_table_escapes_pipes_inside_cells_only():
    header = ["config", "tag", "state"]
    body = [["config001", "a|b", "running"], ["config002", "plain", "completed"], ["config003", 7, "x||y"]]
    lines = markdown_table(header, body).splitlines()
    assert lines[0] == "| config | tag | state |"
    assert lines[2] == "| config001 | a\\|b | running |"
    assert lines[3] == "| config002 | plain | completed |"
    assert lines[4] == "| config003 | 7 | x\\|\\|y |"
    for line in lines[2:]:  # every row splits into exactly its cells on the unescaped pipes
        assert len(re.split(r"(?<!\\)\|", line)) == len(header) + 2
