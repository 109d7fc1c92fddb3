"""YAML configs read with the trainer's types (OmegaConf: 5e-4 is a float) and written back keeping the text of what
did not change; strings that look like numbers stay strings. Checked on XequiNet's genuine configs."""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from xeq_standin import OmegaConfLoader

from hpc_sweep.common.errors import UserError
from hpc_sweep.common.formats import dump_structured, load_structured, parse_yaml
from hpc_sweep.common.yamltext import same

FIXTURES = Path(__file__).parent / "fixtures" / "xequinet-real"
RUN1 = FIXTURES / "run1.config.yaml"
RESUME = FIXTURES / "run1-resume.config.yaml"


def omegaconf_reads(text: str):
    """What XequiNet's OmegaConf loader makes of ``text`` (an implementation of its rules independent of ours)."""
    return yaml.load(text, Loader=OmegaConfLoader)


@pytest.mark.parametrize("text,value", [
    ("5e-4", 5e-4), ("1e10", 1e10), ("1.0e5", 1e5), ("-2E+3", -2e3), (".5", 0.5), ("1.5", 1.5), (".inf", math.inf),
    ("'5e-4'", "5e-4"), ('"1e10"', "1e10"), ("2024-01-01", "2024-01-01"), ("0x1F", 31), ("1_000", 1000),
    ("yes", True), ("null", None), ("5e-4x", "5e-4x"),
])
def test_scalars_have_the_trainers_types(text, value):
    got = parse_yaml(f"a: {text}\n", Path("c.yaml"))["a"]
    assert type(got) is type(value) and got == value
    assert same(got, omegaconf_reads(f"a: {text}\n")["a"])


def test_the_real_base_reads_max_lr_as_a_float():
    config = load_structured(RUN1)
    assert config["trainer"]["max_lr"] == 5e-4 and isinstance(config["trainer"]["max_lr"], float)
    assert same(config, omegaconf_reads(RUN1.read_text()))


def test_a_duplicate_key_is_refused_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  max_lr: 5e-4\n  max_lr: 1e-3\n")
    with pytest.raises(UserError) as caught:
        load_structured(path)
    assert "duplicate key max_lr" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("path", [RUN1, RESUME])
def test_real_configs_write_back_unchanged(path):
    assert dump_structured(load_structured(path), "yaml", like=path) == path.read_text()


def test_the_resume_of_the_real_run_changes_only_its_lines():
    """The resume hpc-sweep writes for run1: resume and ckpt_file added, max_epochs changed; nothing else."""
    config = load_structured(RUN1)
    trainer = config["trainer"]
    trainer.update(resume=True, ckpt_file="/scratch/alice/xeq-real/run1/ckpt/run1_last.pt", max_epochs=7)
    text = dump_structured(config, "yaml", like=RUN1)
    assert omegaconf_reads(text) == omegaconf_reads(RESUME.read_text())  # what the real resume ran with
    diff = [line for line in difflib.unified_diff(RUN1.read_text().splitlines(), text.splitlines(), n=0, lineterm="")
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert diff == ["-  max_epochs: 4", "+  max_epochs: 7", "+  resume: true",
                    "+  ckpt_file: /scratch/alice/xeq-real/run1/ckpt/run1_last.pt"]


def test_whole_dump_keeps_types_too():
    config = load_structured(RUN1)
    config["data"]["split"] = "5e-4"  # a string that looks like a number
    config["trainer"]["min_lr"] = 1e-10
    text = dump_structured(config, "yaml")
    assert "split: '5e-4'" in text
    assert same(omegaconf_reads(text), config) and same(parse_yaml(text, Path("c.yaml")), config)


def test_text_that_cannot_be_edited_in_place_is_written_whole(tmp_path):
    """Anchors, a removed key: the whole config is dumped, and it still reads back equal."""
    path = tmp_path / "base.yaml"
    path.write_text("defaults: &d {lr: 5e-4}\ntrainer:\n  opt: *d\n  max_lr: 5e-4\n  gone: 1\n")
    config = load_structured(path)
    config["trainer"]["max_lr"] = "1e-3"
    del config["trainer"]["gone"]
    text = dump_structured(config, "yaml", like=path)
    assert same(parse_yaml(text, path), config) and "max_lr: '1e-3'" in text


def test_comments_and_flow_lists_survive_an_edit(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("# my model\ntrainer:\n  max_lr: 5e-4   # from the paper\n  targets: [energy, forces]\n\n"
                    "data:\n  split: split\n")
    config = load_structured(path)
    config["trainer"]["max_lr"] = 2e-4
    config["trainer"]["targets"] = ["energy"]
    config["data"]["new"] = {"a": [1, "1e3"]}
    text = dump_structured(config, "yaml", like=path)
    assert text == ("# my model\ntrainer:\n  max_lr: 0.0002   # from the paper\n  targets: [energy]\n\n"
                    "data:\n  split: split\n  new: {a: [1, '1e3']}\n")
    assert same(parse_yaml(text, path), config)


NUMBER_LIKE = st.sampled_from(["5e-4", "1e10", "1.0e5", ".5", "1_000", "0x1F", "yes", "off", "~", "null", "2024-01-01",
                               ".inf", "-.nan", "1:30", "0o17", "+1", "007", "1e", "e5"])
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1),
    st.booleans(), st.none(), NUMBER_LIKE, st.text(max_size=20),
    st.from_regex(r"[-+]?[0-9]{0,3}\.?[0-9]{1,3}([eE][-+]?[0-9]{1,2})?", fullmatch=True),
    st.lists(st.one_of(st.floats(allow_nan=False), NUMBER_LIKE, st.text(max_size=5)), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(changed=VALUES, added=VALUES)
def test_any_value_reads_back_with_its_type_and_nothing_else_moves(changed, added):
    config = load_structured(RUN1)
    config["trainer"]["max_lr"] = changed
    config["trainer"]["extra"] = added
    text = dump_structured(config, "yaml", like=RUN1)
    assert same(parse_yaml(text, RUN1), config)
    assert same(omegaconf_reads(text), config)
    untouched = [line for line in RUN1.read_text().splitlines() if "max_lr" not in line]
    assert [line for line in text.splitlines() if "max_lr" not in line and "extra" not in line] == untouched


def test_a_changed_source_is_read_again(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("a: 1\nb: 2\n")
    assert dump_structured({"a": 1, "b": 3}, "yaml", like=path) == "a: 1\nb: 3\n"
    path.write_text("a: 1   # one\nb: 2\n")
    assert dump_structured({"a": 1, "b": 3}, "yaml", like=path) == "a: 1   # one\nb: 3\n"
