"""sweep.toml's [early_stop] and [search] (hpc_sweep/sweep/options.py): what is accepted, and one-line errors naming
file, key and fix for what is not, including combinations that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc_sweep.common.errors import UserError
from hpc_sweep.common.formats import parse_toml
from hpc_sweep.sweep.options import EarlyStopSpec, parse_sweep_and_options

PATH = Path("/sweeps/demo/sweep.toml")
HEAD = """
[sweep]
name = "demo"
program = "deeph"
base = "configs/.base_config.toml"
command = "deeph-train {config}"
"""
GENERIC_HEAD = HEAD.replace('"deeph"', '"generic"') + '[log]\npath = "train.log"\nepoch = "epoch (\\\\d+)"\n'
SEARCH = """
[search]
method = "tpe"
budget = 40
seed = 1
[search.params]
"process.train.optimizer.init_learning_rate" = { dist = "loguniform", low = 1e-4, high = 1e-2 }
"model.advanced.num_blocks" = { dist = "int", low = 2, high = 5 }
"""


def parse(text: str, head: str = HEAD):
    return parse_sweep_and_options(parse_toml(head + text, PATH), PATH)


def error_of(text: str, head: str = HEAD) -> str:
    with pytest.raises(UserError) as caught:
        parse(text, head)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{PATH}: key '")
    return message


def test_the_documented_example_parses_with_its_defaults():
    _, options = parse('[early_stop]\nrule = "asha"\nmetric = "val_loss"\nmin_epochs = 10\nreduction = 3\n' + SEARCH)
    assert options.early_stop == EarlyStopSpec(rule="asha", metric="val_loss", min_epochs=10, reduction=3)
    search = options.search
    assert (search.method, search.budget, search.seed, search.metric) == ("tpe", 40, 1, "val_loss")
    assert [(p.key, p.dist, p.low, p.high) for p in search.params] == [
        ("process.train.optimizer.init_learning_rate", "loguniform", 1e-4, 1e-2),
        ("model.advanced.num_blocks", "int", 2, 5)]


def test_defaults_and_absent_sections():
    spec, options = parse('[early_stop]\nrule = "median"\n')
    assert options.early_stop == EarlyStopSpec(rule="median", metric="val_loss", min_epochs=10, reduction=3)
    assert options.search is None and spec.name == "demo"
    assert parse("")[1].early_stop is None


def test_search_params_use_exactly_the_random_grammar():
    params = '"a.b" = { dist = "uniform", low = 0, high = 1 }\n"c" = { dist = "choice", values = ["x", 2, true] }\n'
    spec, _ = parse("[random]\ncount = 3\n[random.params]\n" + params)
    _, options = parse('[search]\nmethod = "tpe"\nbudget = 5\n[search.params]\n' + params)
    assert list(options.search.params) == spec.random_params


def test_train_loss_of_a_generic_program_needs_its_pattern():
    text = '[early_stop]\nrule = "asha"\nmetric = "train_loss"\n'
    message = error_of(text, GENERIC_HEAD)
    assert "key 'early_stop.metric'" in message and "no train_loss pattern" in message
    head = GENERIC_HEAD + 'train_loss = "loss ([0-9.]+)"\n'
    assert parse(text, head)[1].early_stop.metric == "train_loss"


@pytest.mark.parametrize("text, key, words", [
    ('[early_stop]\nrule = "hyperband"\n', "early_stop.rule", "valid: asha, median"),
    ('[early_stop]\nmin_epochs = 5\n', "early_stop.rule", "is required"),
    ('[early_stop]\nrule = "asha"\nmetric = "val_los"\n', "early_stop.metric", "did you mean 'val_loss'"),
    ('[early_stop]\nrule = "asha"\nmin_epochs = 0\n', "early_stop.min_epochs", "at least 1"),
    ('[early_stop]\nrule = "asha"\nmin_epochs = 2.5\n', "early_stop.min_epochs", "must be an integer"),
    ('[early_stop]\nrule = "asha"\nreduction = 1\n', "early_stop.reduction", "at least 2"),
    ('[early_stop]\nrule = "asha"\nrungs = [30, 10]\n', "early_stop.rungs", "must increase"),
    ('[early_stop]\nrule = "asha"\nrungs = [5, 15]\n', "early_stop.rungs", "before min_epochs = 10"),
    ('[early_stop]\nrule = "asha"\nrungs = ["10"]\n', "early_stop.rungs", "list of epochs"),
    ('[early_stop]\nrule = "asha"\nrungs = []\n', "early_stop.rungs", "list of epochs"),
    ('[early_stop]\nrule = "median"\nreduction = 3\n', "early_stop.reduction", 'only rule = "asha" uses'),
    ('[early_stop]\nrule = "median"\nrungs = [10]\n', "early_stop.rungs", 'only rule = "asha" uses'),
    ('[early_stop]\nrule = "asha"\npatience = 3\n', "early_stop.patience", "not a known key"),
])
def test_early_stop_mistakes(text, key, words):
    message = error_of(text)
    assert f"key '{key}'" in message and words in message


@pytest.mark.parametrize("text, key, words", [
    (SEARCH.replace('"tpe"', '"bayes"'), "search.method", "not a search method"),
    (SEARCH.replace("budget = 40\n", ""), "search.budget", "is required"),
    (SEARCH.replace("budget = 40", "budget = 0"), "search.budget", "between 1 and"),
    (SEARCH.replace("seed = 1", "seed = \"one\""), "search.seed", "must be an integer"),
    ('[search]\nmethod = "tpe"\nbudget = 4\n', "search.params", "nothing to vary"),
    ('[search]\nmethod = "tpe"\nbudget = 4\n[search.params]\n', "search.params", "at least one parameter"),
    (SEARCH.replace('"loguniform", low = 1e-4', '"loguniform", low = -1.0'),
     "search.params.process.train.optimizer.init_learning_rate.low", "positive"),
    (SEARCH.replace('dist = "int"', 'dist = "normal"'), "search.params.model.advanced.num_blocks.dist",
     "not a distribution"),
    ('[search]\nmethod = "tpe"\nbudget = 4\n[search.params]\n"a" = { dist = "choice", values = [[1, 2]] }\n',
     "search.params.a.values", "cannot be a choice"),
    (SEARCH + '[grid]\n"model.advanced.num_blocks" = [2, 3]\n', "search", "cannot be combined with [grid]"),
    (SEARCH + '[[zip]]\n"a" = [1, 2]\n"b" = [3, 4]\n', "search", "cannot be combined with [zip]"),
    (SEARCH + '[[configs]]\n"a" = 1\n', "search", "cannot be combined with [configs]"),
    (SEARCH + '[random]\ncount = 2\n[random.params]\n"a" = { dist = "uniform", low = 0, high = 1 }\n', "search",
     "cannot be combined with [random]"),
    (SEARCH + '[fixed]\n"model.advanced.num_blocks" = 3\n', "search.params.model.advanced.num_blocks",
     "both searched and fixed"),
    (SEARCH.replace("seed = 1", 'seed = 1\nmetric = "val_loss"') + '[early_stop]\nrule = "asha"\nmetric = "train_loss"\n',
     "search.metric",
     "minimises val_loss but [early_stop] judges runs by train_loss"),
    (SEARCH.replace("seed = 1", "sampler = \"tpe\""), "search.sampler", "not a known key"),
])
def test_search_mistakes(text, key, words):
    message = error_of(text)
    assert f"key '{key}'" in message and words in message


def test_sections_must_be_tables():
    message = error_of("", 'early_stop = "asha"\n' + HEAD)
    assert "key 'early_stop': must be a table (fix: write it as [early_stop]" in message


def test_errors_of_this_module_say_the_fix():
    for text in ('[early_stop]\nrule = "asha"\nrungs = [30, 10]\n', SEARCH.replace("budget = 40", "budget = 0"),
                 SEARCH + '[grid]\n"a" = [1]\n'):
        assert "(fix: " in error_of(text)


def test_search_follows_the_early_stop_metric():
    _, options = parse(SEARCH + '[early_stop]\nrule = "median"\nmetric = "train_loss"\n')
    assert options.search.metric == "train_loss"


def test_a_generic_search_without_a_val_loss_pattern_is_refused():
    text = '[search]\nmethod = "tpe"\nbudget = 4\n[search.params]\n"a" = { dist = "uniform", low = 0, high = 1 }\n'
    message = error_of(text, GENERIC_HEAD)
    assert "key 'search.metric'" in message and "no val_loss pattern" in message
