"""Our scrontab entry (hpc_sweep/scrontab.py): rendered, found, replaced and removed among the user's other lines,
never guessing which lines are ours; scrontab's answers read. No scrontab runs here: the test cluster's Debian
packages ship no scrontab client (phase 2 tests the command with a stand-in)."""

from __future__ import annotations

import pytest

from hpc_sweep.schedulers.base import CommandResult
from hpc_sweep.scrontab import (
    BEGIN,
    DISABLED,
    END,
    ScrontabError,
    editor_script,
    entry_options,
    find_entry,
    install_argv,
    parse_install,
    parse_list,
    render_entry,
    with_entry,
    without_entry,
)

ROOT = "/home/alice/sweeps/lr"
OTHER = "/home/alice/sweeps/wd"
COMMAND = f"cd {ROOT} && env PATH=/usr/bin:/bin /opt/venv/bin/hpc-sweep poll {ROOT}"
USERS_OWN = ["# my own jobs", "#SCRON --time=5", "0 5 * * * /home/alice/backup.sh", ""]


def block(root: str = ROOT, schedule: str = "*/10 * * * *"):
    options = entry_options(root, "hpcs-poll-lr", partition="debug", account="sweepers")
    return render_entry(root, schedule, COMMAND.replace(ROOT, root), options)


def test_rendered_block() -> None:
    lines = block()
    assert lines[0] == f"{BEGIN} {ROOT}" and lines[-1] == f"{END} {ROOT}"
    assert lines[-2] == f"*/10 * * * * {COMMAND}"
    assert f"#SCRON --chdir={ROOT}" in lines and "#SCRON --partition=debug" in lines
    assert f"#SCRON --output={ROOT}/.hpc_sweep/scrontab-poll.out" in lines
    assert all(line.startswith("#SCRON --") for line in lines[1:-2])


def test_install_keeps_the_users_lines_and_one_entry_per_sweep() -> None:
    first = with_entry(USERS_OWN, ROOT, block())
    second = with_entry(with_entry(first, OTHER, block(OTHER)), ROOT, block(schedule="*/5 * * * *"))
    assert second[:len(USERS_OWN)] == USERS_OWN
    assert sum(line == f"{BEGIN} {ROOT}" for line in second) == 1
    assert find_entry(second, ROOT).schedule == "*/5 * * * *"
    assert find_entry(second, OTHER).schedule == "*/10 * * * *"


def test_remove_only_ours() -> None:
    lines = with_entry(with_entry(USERS_OWN, ROOT, block()), OTHER, block(OTHER))
    kept, removed = without_entry(lines, ROOT)
    assert removed and find_entry(kept, ROOT) is None and find_entry(kept, OTHER) is not None
    assert kept[:len(USERS_OWN)] == USERS_OWN
    assert without_entry(USERS_OWN, ROOT) == (USERS_OWN, False)


def test_disabled_entry_as_scrontab_lists_it() -> None:
    # scrontab -l prefixes the lines of a disabled entry (its #SCRON lines and cron line), not our markers.
    lines = [f"{DISABLED}{line}" if line.startswith(("#SCRON", "*/")) else line for line in block()]
    entry = find_entry(USERS_OWN + lines, ROOT)
    assert entry.disabled and entry.schedule == "*/10 * * * *" and entry.command == COMMAND
    assert without_entry(USERS_OWN + lines, ROOT) == (USERS_OWN, True)


@pytest.mark.parametrize("damage", ["no end", "two begins"])
def test_damaged_markers_are_refused_not_guessed(damage: str) -> None:
    lines = with_entry(USERS_OWN, ROOT, block())
    lines = lines[:-1] if damage == "no end" else [lines[len(USERS_OWN)]] + lines
    with pytest.raises(ScrontabError, match="damaged"):
        without_entry(lines, ROOT)


def test_paths_a_scron_line_cannot_carry_and_bad_schedules() -> None:
    with pytest.raises(ValueError):
        entry_options("/home/alice/my sweep", "x")
    with pytest.raises(ValueError):
        render_entry(ROOT, "*/10 * * *", COMMAND, [])


def test_list_answers() -> None:
    def result(rc: int, out: str = "", err: str = "") -> CommandResult:
        return CommandResult(["scrontab", "-l"], rc, out, err)

    assert parse_list(result(1, "no crontab for alice\n")) == []
    assert parse_list(result(0, "0 5 * * * /x\n")) == ["0 5 * * * /x"]
    with pytest.raises(ScrontabError) as err:
        parse_list(result(1, err="scrontab: fatal: scrontab is disabled on this cluster\n"))
    assert err.value.disabled
    with pytest.raises(ScrontabError):
        parse_list(result(1, err="scrontab: fatal: slurm_request_crontab failed: Unable to contact slurm controller\n"))
    with pytest.raises(ScrontabError):
        parse_install(CommandResult(["scrontab", "-"], 0, "There are errors in your crontab.\n", ""))


def test_install_argv_by_version() -> None:
    assert install_argv((22, 5, 8), "/s/new") == (["scrontab", "/s/new"], False)
    assert install_argv(None, "/s/new") == (["scrontab", "/s/new"], False)
    assert install_argv((20, 11, 9), "/s/new") == (["scrontab", "-e"], True)
    assert "cat '/tmp/it'\\''s' > \"$1\"" in editor_script("/tmp/it's")
