"""logtail: only new complete lines, truncation/replacement detection, tail; and the poll loop it feeds
(logtail → parser state → JSON → next poll) gives the same summary as parsing the whole log at once."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_sweep.common.logtail import read_new, tail_lines
from hpc_sweep.programs import get_program

LOGS = Path(__file__).parent / "data" / "logs"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def test_missing_file_keeps_the_cursor(tmp_path):
    assert read_new(tmp_path / "nope.log", None) == ("", None)
    cursor = {"path": "x", "offset": 5}
    assert read_new(tmp_path / "nope.log", cursor) == ("", cursor)


def test_only_complete_lines_and_a_line_cut_midway(tmp_path):
    log = tmp_path / "a.log"
    append(log, b"one\ntwo\nthr")
    text, cursor = read_new(log, None)
    assert text == "one\ntwo\n" and cursor["offset"] == 8 and "reset" not in cursor
    text, cursor = read_new(log, cursor)
    assert text == ""
    append(log, b"ee\nfour")
    text, cursor = read_new(log, cursor)
    assert text == "three\n"
    append(log, b"\n")
    assert read_new(log, cursor)[0] == "four\n"


def test_cursor_is_json(tmp_path):
    log = tmp_path / "a.log"
    append(log, b"x\n")
    _, cursor = read_new(log, None)
    assert json.loads(json.dumps(cursor)) == cursor


def test_utf8_split_across_reads_and_bad_bytes(tmp_path):
    log = tmp_path / "a.log"
    snowman = "☃".encode()
    append(log, b"a" + snowman[:1])
    text, cursor = read_new(log, None)
    assert text == ""
    append(log, snowman[1:] + b"\n\xff\xfe bad\n")
    text, cursor = read_new(log, cursor)
    assert text.splitlines() == ["a☃", "\ufffd\ufffd bad"]


def test_truncation_resets(tmp_path):
    log = tmp_path / "loss.log"
    append(log, b"2025-04-15 18:50:45 - INFO - Start training\nline two\n")
    _, cursor = read_new(log, None)
    log.write_bytes(b"new\n")  # truncated in place: same inode, smaller
    text, cursor = read_new(log, cursor)
    assert text == "new\n" and cursor["reset"] is True
    append(log, b"more\n")
    text, cursor = read_new(log, cursor)
    assert text == "more\n" and "reset" not in cursor


def test_rewritten_past_the_old_offset_is_noticed_by_the_head(tmp_path):
    log = tmp_path / "loss.log"
    append(log, b"2025-04-15 18:50:45 - INFO - Start training\n")
    _, cursor = read_new(log, None)
    # A fresh restart truncates and writes more than before between two polls: size alone cannot tell.
    with open(log, "r+b") as handle:
        handle.truncate(0)
        handle.write(b"2025-04-16 09:00:00 - INFO - Start training\n2025-04-16 09:00:00 - INFO - Task Name: w\n")
    text, cursor = read_new(log, cursor)
    assert cursor["reset"] is True and text.startswith("2025-04-16 09:00:00 - INFO - Start training")


def test_replaced_file_resets(tmp_path):
    log = tmp_path / "a.log"
    append(log, b"old\n")
    _, cursor = read_new(log, None)
    other = tmp_path / "b.log"
    append(other, b"old\nnew file\n")
    os.replace(other, log)
    text, cursor = read_new(log, cursor)
    assert cursor["reset"] is True and text == "old\nnew file\n"


def test_short_head_grows_without_a_false_reset(tmp_path):
    log = tmp_path / "a.log"
    append(log, b"ab\n")
    _, cursor = read_new(log, None)
    for _ in range(40):
        append(log, b"0123456789\n")
        text, cursor = read_new(log, cursor)
        assert text == "0123456789\n" and "reset" not in cursor
    assert cursor["head"].startswith("64:")


def test_another_path_starts_at_zero_without_reset(tmp_path):
    first, second = tmp_path / "run1" / "deepx.log", tmp_path / "run2" / "deepx.log"
    first.parent.mkdir()
    second.parent.mkdir()
    append(first, b"a\n")
    append(second, b"b\nc\n")
    _, cursor = read_new(first, None)
    text, cursor = read_new(second, cursor)
    assert text == "b\nc\n" and "reset" not in cursor and cursor["path"] == str(second)


def test_max_bytes_reads_in_steps(tmp_path):
    log = tmp_path / "a.log"
    append(log, b"".join(b"line %d\n" % i for i in range(100)))
    cursor, got = None, ""
    for _ in range(1000):
        text, cursor = read_new(log, cursor, max_bytes=50)
        if not text:
            break
        got += text
    assert got.splitlines() == [f"line {i}" for i in range(100)]


def test_a_line_longer_than_max_bytes_does_not_stall(tmp_path):
    log = tmp_path / "a.log"
    append(log, b"x" * 300 + b"\nend\n")
    cursor, got = None, ""
    for _ in range(20):
        text, cursor = read_new(log, cursor, max_bytes=128)
        got += text
    assert got.replace("\n", "") == "x" * 300 + "end"


def test_unchanged_file_is_not_read(tmp_path, monkeypatch):
    log = tmp_path / "a.log"
    append(log, b"a\n")
    _, cursor = read_new(log, None)

    def fail(*args, **kwargs):
        raise AssertionError("opened an unchanged file")

    monkeypatch.setattr("builtins.open", fail)
    assert read_new(log, cursor) == ("", cursor)


def test_tail_lines(tmp_path):
    log = tmp_path / "out.txt"
    assert tail_lines(log) == []
    append(log, b"".join(b"line %d\n" % i for i in range(10_000)) + b"Traceback (partial")
    assert tail_lines(log, 3) == ["line 9998", "line 9999", "Traceback (partial"]
    assert tail_lines(log, 0) == []
    short = tmp_path / "short.txt"
    append(short, b"a\nb\n")
    assert tail_lines(short, 20) == ["a", "b"]
    huge = tmp_path / "huge.txt"
    append(huge, b"y" * 200_000 + b"\nlast\n")
    assert tail_lines(huge, 5, max_bytes=1024) == ["last"]  # the cut 200 kB line is not returned


# -- the poll loop: random chunks give the same summary as the whole log ----------------------------------------

def deeph_text() -> str:
    lines = (LOGS / "deeph_h2o.log").read_text().splitlines(keepends=True)
    extra = [f"[ 11.20-12:01:{i:02d} ] [train] Epoch {i} | Time 3.20 s | Train-Loss {1 / i:.6e} | "
             f"Val-Loss {'nan' if i == 25 else f'{2 / i:.6e}'} | Scale 1.0\n" for i in range(21, 41)]
    return "".join(lines) + "".join(extra)


CASES = {
    "deeph": (get_program("deeph"), {"process": {"train": {"max_epoch": 40}}}, deeph_text()),
    "xequinet": (get_program("xequinet"), {"data": {"targets": ["energy", "forces"]}},
                 (LOGS / "xequinet_long.log").read_text()),
    "generic": (get_program("generic", {"path": "*.log", "epoch": r"^Epoch (\d+)/", "train_loss": r"- loss: (\S+)",
                                        "val_loss": r"val_loss: (\S+)"}), {},
                "".join(f"Epoch {i}/30\n10/10 - 1s - loss: {1 / i:.4f} - val_loss: {1.5 / i:.4f}\n"
                        for i in range(1, 31))),
}


def poll_in_chunks(name: str, cuts: list[float]) -> tuple:
    """Append the log in pieces ending at the given fractions of its length, polling after each append."""
    program, config, text = CASES[name]
    data = text.encode()
    points = sorted({int(c * len(data)) for c in cuts} | {len(data)})
    state, cursor, rows = None, None, []
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "x.log"
        log.write_bytes(b"")
        start = 0
        for point in points:
            append(log, data[start:point])
            start = point
            chunk, cursor = read_new(log, cursor)
            parser = program.log_parser(config, {}, state=state)
            rows += parser.feed(chunk)
            state = json.loads(json.dumps(parser.state))  # what the store keeps between polls
            cursor = json.loads(json.dumps(cursor))
    return program.log_parser(config, {}, state=state).summary(), rows


def whole(name: str) -> tuple:
    program, config, text = CASES[name]
    parser = program.log_parser(config, {})
    rows = parser.feed(text)
    return parser.summary(), rows


def same(a, b) -> bool:
    return json.dumps(a, default=repr, sort_keys=True) == json.dumps(b, default=repr, sort_keys=True)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(CASES)), cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=40))
def test_random_chunks_give_the_same_summary(name, cuts):
    chunked_summary, chunked_rows = poll_in_chunks(name, cuts)
    whole_summary, whole_rows = whole(name)
    assert same(chunked_summary.__dict__, whole_summary.__dict__)
    assert same([r.__dict__ for r in chunked_rows], [r.__dict__ for r in whole_rows])
    assert whole_summary.epoch is not None
