"""The Slurm adapter against real Slurm output.

Sources, all real:
- ``tests/fixtures/slurm-22.05/``: captures from a live Slurm 22.05.8 cluster (see its README);
- ``tests/fixtures/captured-elsewhere/slurm/``: captures from other sites (default squeue/sacct layouts);
- the ``PROBE_*`` strings below: output of the same Slurm 22.05.8, captured 2026-11-23 on the single-node cluster of
  ``tests/cluster/slurm_cluster.py`` (user ``hpcsweep``, node ``vm``) with the argv shown next to each.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_sweep.schedulers.base import (
    CANCELLED, COMPLETED, FAILED, FINAL_STATES, NODE_FAIL, OOM, PENDING, PREEMPTED, RUNNING, STATES, TIMEOUT, UNKNOWN,
    CommandResult, QueueLimits, SchedulerError, SubmitSpec, TaskRecord,
)
from hpc_sweep.schedulers.slurm import (
    ACCOUNTING_FIELDS, LIVE_FORMAT, SlurmScheduler, compress_indices, expand_array_spec, normalise_state,
    parse_duration, parse_exit_code, split_task_id,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

import captures  # noqa: E402

SLURM = captures.fixture_folder("slurm-22.05")
ELSEWHERE = captures.fixture_folder("captured-elsewhere", "slurm")

# The argv each fixture was captured with (slurm-22.05/README.md).
FIXTURE_SQUEUE_FMT = "%i|%A|%F|%K|%j|%T|%r|%M|%l"
FIXTURE_SQUEUE_R = ["squeue", "--me", "-r", "-h", "-o", FIXTURE_SQUEUE_FMT]
FIXTURE_SQUEUE_NOR = ["squeue", "--me", "-h", "-o", FIXTURE_SQUEUE_FMT]
FIXTURE_SACCT = ["sacct", "-X", "-n", "-P", "--format=JobID,JobIDRaw,JobName,State,ExitCode,Elapsed,Start,End,AllocTRES",
                 "-j", "42,43"]
FIXTURE_SACCT_STEPS = ["sacct", "-n", "-P", "--format=JobID,State,ExitCode", "-j", "42"]
FIXTURE_ASSOC = ["sacctmgr", "-n", "-P", "show", "assoc", "where", "user=alice",
                 "format=Cluster,Account,User,MaxSubmit,MaxJobs,GrpSubmit"]
FIXTURE_ASSOC_MGR = ["scontrol", "show", "assoc_mgr", "users=alice", "flags=assoc"]
FIXTURE_CONFIG = ["scontrol", "show", "config"]

# squeue --me -h -o LIVE_FORMAT (no -r): a stepped range, a list cut by Slurm in %i (31 characters, no closing
# bracket) and in %K ("..." past 64 characters), and running tasks with their node.
PROBE_SQUEUE_FOLDED = (
    "2_[0-60:2%2]|2|2|0-60:2%2|hs-probe-b|PENDING|Resources|0:00|UNLIMITED|\n"
    "3_[0,3,5,7-9,11,14,17,19,23,27,|3|3|0,3,5,7-9,11,14,17,19,23,27,31,37,41,43,47,53,59,61,67,71,73...|hs-probe-c|"
    "PENDING|Priority|0:00|UNLIMITED|\n"
    "1_3|7|1|3|hs-probe-a|RUNNING|None|0:02|1:00|vm\n"
    "1_4|1|1|4|hs-probe-a|RUNNING|None|0:02|1:00|vm\n"
    "1_0|4|1|0|hs-probe-a|RUNNING|None|0:03|1:00|vm\n"
)
# Arrays submitted as --array=0-60:2 (2), 0,2,4,6 (3), 0-9 (4), 0-6:3 (5), 1-7:2%2 (6), all pending behind job 1.
PROBE_ARRAYS_NOR = (
    "2_[0-60:2]|2|2|0-60:2|arrA|PENDING|Resources|0:00|UNLIMITED|\n"
    "3_[0,2,4,6]|3|3|0,2,4,6|arrB|PENDING|Priority|0:00|UNLIMITED|\n"
    "4_[0-9]|4|4|0-9|arrC|PENDING|Priority|0:00|UNLIMITED|\n"
    "5_[0,3,6]|5|5|0,3,6|arrD|PENDING|Priority|0:00|UNLIMITED|\n"
    "6_[1,3,5,7%2]|6|6|1,3,5,7%2|arrE|PENDING|Priority|0:00|UNLIMITED|\n"
    "1|1|1|N/A|hog|RUNNING|None|0:02|365-00:00:00|vm\n"
)
# The same moment with -r: squeue's own expansion of "0-60:2" stops at 58 (a Slurm 22.05 quirk).
PROBE_ARRAYS_R = "".join(
    [f"2_{i}|2|2|{i}|arrA|PENDING|Resources|0:00|UNLIMITED|\n" for i in range(0, 59, 2)]
    + [f"3_{i}|3|3|{i}|arrB|PENDING|Priority|0:00|UNLIMITED|\n" for i in (0, 2, 4, 6)]
    + [f"4_{i}|4|4|{i}|arrC|PENDING|Priority|0:00|UNLIMITED|\n" for i in range(10)]
    + [f"5_{i}|5|5|{i}|arrD|PENDING|Priority|0:00|UNLIMITED|\n" for i in (0, 3, 6)]
    + [f"6_{i}|6|6|{i}|arrE|PENDING|Priority|0:00|UNLIMITED|\n" for i in (1, 3, 5, 7)]
    + ["1|1|1|N/A|hog|RUNNING|None|0:02|365-00:00:00|vm\n"]
)
# sacct -X -P -j 1,2,3 --format=<ACCOUNTING_FIELDS>: job 1 = --array=0-4%3 where task 1 exits 3 and task 2 kills
# itself with SIGKILL; job 2 = the stepped array above, job 3 = the long list, both cancelled with one task of 2
# running. The folded row of 2 still lists task 0, which has its own row; "..." hides the tail of both lists.
PROBE_SACCT = (
    "JobID|JobIDRaw|JobName|State|ExitCode|Elapsed|Start|End|AllocTRES|NodeList\n"
    "1_0|4|hs-probe-a|COMPLETED|0:0|00:00:08|2026-11-23T14:18:34|2026-11-23T14:18:42|billing=1,cpu=1,mem=50M,node=1|vm\n"
    "1_1|5|hs-probe-a|FAILED|3:0|00:00:00|2026-11-23T14:18:34|2026-11-23T14:18:34|billing=1,cpu=1,mem=50M,node=1|vm\n"
    "1_2|6|hs-probe-a|FAILED|0:9|00:00:00|2026-11-23T14:18:34|2026-11-23T14:18:34|billing=1,cpu=1,mem=50M,node=1|vm\n"
    "1_3|7|hs-probe-a|COMPLETED|0:0|00:00:08|2026-11-23T14:18:35|2026-11-23T14:18:43|billing=1,cpu=1,mem=50M,node=1|vm\n"
    "1_4|1|hs-probe-a|COMPLETED|0:0|00:00:08|2026-11-23T14:18:35|2026-11-23T14:18:43|billing=1,cpu=1,mem=50M,node=1|vm\n"
    "2_0|8|hs-probe-b|CANCELLED by 1001|0:0|00:00:08|2026-11-23T14:18:44|2026-11-23T14:18:52|"
    "billing=16,cpu=16,mem=800M,node=1|vm\n"
    "2_[0,2,4,6,8,22,24,26,28,30,32,34,36,38,40,42,44,46,48,50,52,54...%2]|2|hs-probe-b|CANCELLED by 1001|0:0|"
    "00:00:00|None|2026-11-23T14:18:52||None assigned\n"
    "3_[0,3,5,7-9,11,14,17,19,23,27,31,37,41,43,47,53,59,61,67,71,73...]|3|hs-probe-c|CANCELLED by 1001|0:0|"
    "00:00:00|None|2026-11-23T14:18:52||None assigned\n"
)
# sacctmgr -n -P show assoc where user=hpcsweep format=<ASSOC_FIELDS> after MaxSubmitJobs=2, and the QOS list.
PROBE_ASSOC = "hpcsweep|sweepers|hpcsweep||2|||normal|\n"
PROBE_QOS = "normal|\n"
# stderr of failures (rc 1 each)
PROBE_ERR_PARTITION = ("sbatch: error: invalid partition specified: nosuch\n"
                       "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
PROBE_ERR_GRES = "sbatch: error: Batch job submission failed: Requested node configuration is not available\n"
PROBE_ERR_ARRAY = "sbatch: error: Batch job submission failed: Invalid job array specification\n"
PROBE_SBATCH_CTLD_DOWN = ("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
                          "(connect failure)\n")
PROBE_SQUEUE_CTLD_DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
PROBE_SACCT_DBD_DOWN = (
    "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
    "host:127.0.0.1:60987: Connection refused\n"
    "sacct: error: Sending PersistInit msg: Connection refused\n"
    "sacct: error: Problem talking to the database: Connection refused\n"
)


read = captures.read


def ok(argv: Sequence[str], stdout: str) -> CommandResult:
    return CommandResult(argv=list(argv), returncode=0, stdout=stdout, stderr="")


def failed(argv: Sequence[str], stderr: str, rc: int = 1) -> CommandResult:
    return CommandResult(argv=list(argv), returncode=rc, stdout="", stderr=stderr)


def by_id(records: Sequence[TaskRecord]) -> Dict[str, TaskRecord]:
    ids = [r.task_id for r in records]
    assert len(ids) == len(set(ids)), f"duplicate task ids: {ids}"
    return {r.task_id: r for r in records}


@pytest.fixture
def slurm() -> SlurmScheduler:
    return SlurmScheduler()


# -- submit -----------------------------------------------------------------------------------------------------


def test_submit_argv_puts_options_before_the_script(slurm):
    argv = slurm.submit_argv(SubmitSpec(script="/s/script/g1.sh", job_name="hs-x-g1-1", workdir="/s"))
    assert argv == ["sbatch", "--parsable", "--chdir=/s", "/s/script/g1.sh"]


@pytest.mark.parametrize("path, expected", [
    (SLURM / "sbatch_parsable.txt", "42"),
    (SLURM / "sbatch_plain.txt", "43"),
    (ELSEWHERE / "nig_sbatch_array_submitted.txt", "744"),
])
def test_parse_submit_reads_the_job_id(slurm, path, expected):
    assert slurm.parse_submit(ok(["sbatch", "--parsable"], read(path))) == expected


def test_parse_submit_drops_the_cluster_suffix(slurm):
    # --parsable prints "jobid;cluster" on a multi-cluster setup (reference): the fixture id with a cluster name
    stdout = read(SLURM / "sbatch_parsable.txt").strip() + ";testcluster\n"
    assert slurm.parse_submit(ok(["sbatch", "--parsable"], stdout)) == "42"


def test_submit_over_the_association_limit_is_a_limit(slurm):
    lines = read(SLURM / "sbatch_limit_err.txt").splitlines()
    rc = int(lines[-1].split("=", 1)[1])
    with pytest.raises(SchedulerError) as err:
        slurm.parse_submit(failed(["sbatch"], "\n".join(lines[:-1]) + "\n", rc))
    assert err.value.kind == "limit"
    assert "AssocMaxSubmitJobLimit" in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize("stderr", [PROBE_ERR_PARTITION, PROBE_ERR_GRES, PROBE_ERR_ARRAY])
def test_submit_refused_for_a_bad_request_is_rejected_with_the_reason(slurm, stderr):
    with pytest.raises(SchedulerError) as err:
        slurm.parse_submit(failed(["sbatch"], stderr))
    assert err.value.kind == "rejected"
    assert stderr.strip().splitlines()[-1].split("failed: ", 1)[1] in err.value.message
    assert "\n" not in err.value.message


def test_a_per_job_policy_violation_is_rejected_not_a_limit(slurm):
    # sbatch prints the same generic policy line for a wall-time limit; the named reason decides
    stderr = read(SLURM / "sbatch_limit_err.txt").replace("AssocMaxSubmitJobLimit", "QOSMaxWallDurationPerJobLimit")
    with pytest.raises(SchedulerError) as err:
        slurm.parse_submit(failed(["sbatch"], "\n".join(stderr.splitlines()[:-1])))
    assert err.value.kind == "rejected"


@pytest.mark.parametrize("result", [
    failed(["sbatch"], PROBE_SBATCH_CTLD_DOWN),
    failed(["sbatch"], "sbatch: timed out after 120 s", 124),  # hpc_sweep.common.shell's time-out
    failed(["sbatch"], "", -9),
    failed(["sbatch"], ""),
    ok(["sbatch", "--parsable"], ""),  # exit 0 without an id: the job may or may not exist
])
def test_submit_with_unknown_outcome_is_transient(slurm, result):
    with pytest.raises(SchedulerError) as err:
        slurm.parse_submit(result)
    assert err.value.kind == "transient"


# -- array syntax -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("indices, throttle, expected", [
    (range(16), None, "0-15"),
    ([0, 4, 8], None, "0,4,8"),
    (range(0, 16, 4), None, "0-12:4"),
    (range(1000), 8, "0-999%8"),
    ([9, 1, 2, 3, 3], None, "1-3,9"),
])
def test_array_spec(slurm, indices, throttle, expected):
    assert slurm.array_spec(list(indices), throttle) == expected


def test_array_spec_refuses_nothing_and_negatives(slurm):
    for bad in ([], [-1, 2]):
        with pytest.raises(ValueError):
            slurm.array_spec(bad, None)
    with pytest.raises(ValueError):
        slurm.array_spec([1], 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=300),
       st.one_of(st.none(), st.integers(min_value=1, max_value=64)))
def test_array_spec_expands_back_to_the_indices(indices, throttle):
    spec = SlurmScheduler().array_spec(indices, throttle)
    assert expand_array_spec(spec) == sorted(set(indices))
    assert spec.endswith(f"%{throttle}") == (throttle is not None)
    assert len(compress_indices(indices)) <= len(",".join(map(str, sorted(set(indices)))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=60))
def test_expansion_agrees_with_submitit_where_submitit_reads_the_syntax(indices):
    from submitit.slurm.slurm import read_job_id  # submitit reads "id_[a-b,c]" but not ":step"

    spec = compress_indices(indices)
    if ":" in spec:
        return
    expanded = set()
    for part in read_job_id(f"77_[{spec}]"):
        first = int(part[1])
        expanded.update(range(first, int(part[2]) + 1) if len(part) == 3 else [first])
    assert sorted(expanded) == expand_array_spec(spec)


@pytest.mark.parametrize("spec, expected", [
    ("2-18:2%9", list(range(2, 19, 2))),  # strings from Slurm's own bit_xlate_task_str test
    ("1-2,6-8,11%9", [1, 2, 6, 7, 8, 11]),
    ("0-3", [0, 1, 2, 3]),
])
def test_expand_array_spec(spec, expected):
    assert expand_array_spec(spec) == expected


def test_folded_task_ids():
    collapsed = read(ELSEWHERE / "issue_slurmtools2_biowulf_squeue_array_PD_collapsed.txt").splitlines()[1].split()[0]
    assert split_task_id(collapsed) == ("31180452", list(range(468)))
    assert split_task_id("1234_[5-9%2]") == ("1234", [5, 6, 7, 8, 9])
    assert split_task_id("43_[0,4,7-9]") == ("43", [0, 4, 7, 8, 9])
    assert split_task_id("42_3") == ("42", [3])
    assert split_task_id("747") == ("747", [None])
    # cut by Slurm: the element at a cut may be partial and is dropped; a cut right after a comma loses nothing
    assert split_task_id("3_[0,3,5,7-9,11,14,17,19,23,27,") == ("3", [0, 3, 5, 7, 8, 9, 11, 14, 17, 19, 23, 27])
    assert split_task_id("3_[0,3,5,7-9,11,14,17,19,23,2") == ("3", [0, 3, 5, 7, 8, 9, 11, 14, 17, 19, 23])
    assert split_task_id("2_[0,2,4,...%2]") == ("2", [0, 2, 4])
    assert split_task_id("2_[0,2,4,6...]") == ("2", [0, 2, 4])


# -- live queue ---------------------------------------------------------------------------------------------------


def test_live_argv_is_one_squeue_of_all_the_users_tasks(slurm):
    assert slurm.live_argv("alice", ["42", "43"]) == ["squeue", "--me", "-r", "-h", "-o", LIVE_FORMAT]
    old = SlurmScheduler(version=(20, 2, 7))  # --me came with 20.11
    assert old.live_argv("alice") == ["squeue", "-u", "alice", "-r", "-h", "-o", LIVE_FORMAT]
    with pytest.raises(ValueError):
        old.live_argv("alice,bob")


def test_parse_live_one_line_per_task(slurm):
    records = by_id(slurm.parse_live(ok(FIXTURE_SQUEUE_R, read(SLURM / "squeue_pipe_r.txt"))))
    assert sorted(records) == ["42_2", "42_3", "42_4", "43_0", "43_1", "43_2", "43_3"]
    pending = records["42_4"]
    assert (pending.submission_id, pending.index, pending.state, pending.reason) == ("42", 4, PENDING, "Resources")
    assert pending.name == "hs-demo-fix" and pending.raw_state == "PENDING"
    running = records["42_2"]
    # %A of a started task is its own job id (46): the submission must still be the array's id
    assert (running.submission_id, running.index, running.state, running.reason) == ("42", 2, RUNNING, None)
    assert running.elapsed_s == 3.0 and records["42_3"].elapsed_s == 1.0
    assert {records[f"43_{i}"].reason for i in range(4)} == {"Priority"}
    assert all(r.exit_code is None and r.host is None for r in records.values())


def test_parse_live_expands_folded_pending_tasks_like_squeue_r(slurm):
    folded = slurm.parse_live(ok(FIXTURE_SQUEUE_NOR, read(SLURM / "squeue_pipe_noR.txt")))
    unfolded = slurm.parse_live(ok(FIXTURE_SQUEUE_R, read(SLURM / "squeue_pipe_r.txt")))
    assert sorted(folded, key=lambda r: r.task_id) == sorted(unfolded, key=lambda r: r.task_id)


def test_parse_live_after_a_task_was_cancelled(slurm):
    records = by_id(slurm.parse_live(ok(FIXTURE_SQUEUE_R, read(SLURM / "squeue_after.txt"))))
    assert sorted(records) == ["43_0", "43_2", "43_3"]
    assert {r.reason for r in records.values()} == {"Resources"}


def test_parse_live_own_format_has_the_node(slurm):
    records = by_id(slurm.parse_live(ok(slurm.live_argv("hpcsweep"), PROBE_ARRAYS_NOR)))
    assert records["1"].index is None and records["1"].host == "vm" and records["1"].state == RUNNING
    assert records["1"].elapsed_s == 2.0
    assert [r.index for r in records.values() if r.submission_id == "6"] == [1, 3, 5, 7]  # "%2" is no index
    assert [r.index for r in records.values() if r.submission_id == "2"] == list(range(0, 61, 2))


def test_squeue_r_drops_the_last_task_of_a_stepped_range(slurm):
    # Why a task missing from squeue is not proof that it left the queue: the poller must ask sacct/markers.
    folded = {r.task_id for r in slurm.parse_live(ok(slurm.live_argv("u"), PROBE_ARRAYS_NOR))}
    unfolded = {r.task_id for r in slurm.parse_live(ok(slurm.live_argv("u"), PROBE_ARRAYS_R))}
    assert folded - unfolded == {"2_60"} and unfolded <= folded


def test_parse_live_reads_what_slurm_did_not_cut(slurm):
    records = by_id(slurm.parse_live(ok(["squeue", "--me", "-h", "-o", LIVE_FORMAT], PROBE_SQUEUE_FOLDED)))
    listed_3 = sorted(r.index for r in records.values() if r.submission_id == "3")
    # %K lists up to "...,71,73..."; 73 may be partial, so the last sure index is 71 (from %K, not the shorter %i)
    assert listed_3 == [0, 3, 5, 7, 8, 9, 11, 14, 17, 19, 23, 27, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71]
    assert records["1_3"].host == "vm" and records["1_0"].elapsed_s == 3.0


@pytest.mark.parametrize("stdout", ["", read(ELSEWHERE / "nig_squeue_empty_header_only.txt")])
def test_parse_live_empty_queue(slurm, stdout):
    assert slurm.parse_live(ok(FIXTURE_SQUEUE_R, stdout)) == []


def test_parse_live_job_name_with_a_bar(slurm):
    line = read(SLURM / "squeue_pipe_r.txt").splitlines()[0].replace("hs-demo-fix", "a|b")
    (record,) = slurm.parse_live(ok(FIXTURE_SQUEUE_R, line + "\n"))
    assert (record.name, record.state, record.reason) == ("a|b", PENDING, "Resources")


@pytest.mark.parametrize("result", [
    failed(FIXTURE_SQUEUE_R, PROBE_SQUEUE_CTLD_DOWN),
    failed(FIXTURE_SQUEUE_R, "squeue: timed out after 120 s", 124),
    CommandResult(FIXTURE_SQUEUE_R, 0, "", "slurm_load_jobs error: Socket timed out on send/recv operation\n"),
    ok(FIXTURE_SQUEUE_R, read(ELSEWHERE / "nig_squeue_array_tasks_R.txt")),  # not the asked-for format
])
def test_parse_live_failure_changes_nothing(slurm, result):
    with pytest.raises(SchedulerError) as err:
        slurm.parse_live(result)
    assert err.value.kind == "transient"


# -- states and values ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, state", [
    ("PENDING", PENDING), ("CONFIGURING", PENDING), ("REQUEUED", PENDING), ("SUSPENDED", PENDING),
    ("RUNNING", RUNNING), ("COMPLETING", RUNNING), ("COMPLETED", COMPLETED), ("FAILED", FAILED),
    ("TIMEOUT", TIMEOUT), ("DEADLINE", TIMEOUT), ("CANCELLED", CANCELLED), ("CANCELLED by 1000", CANCELLED),
    ("OUT_OF_MEMORY", OOM), ("NODE_FAIL", NODE_FAIL), ("BOOT_FAIL", NODE_FAIL), ("PREEMPTED", PREEMPTED),
    ("SPECIAL_EXIT", UNKNOWN), ("REVOKED", UNKNOWN), ("", UNKNOWN),
    ("OUT_OF_ME+", OOM),  # sacct's fixed-width layout cuts long names with "+"
])
def test_normalise_state(raw, state):
    assert normalise_state(raw) == state


def test_states_and_exit_codes_of_a_default_sacct_capture():
    lines = read(ELSEWHERE / "nig_sacct_default_array_failed_cancelled.txt").splitlines()[2:]
    rows = {line.split()[0]: (line.split()[-2], line.split()[-1]) for line in lines}
    assert [normalise_state(state) for state, _ in rows.values()].count(COMPLETED) == 13
    assert (normalise_state(rows["723"][0]), parse_exit_code(rows["723"][1])) == (FAILED, 2)
    assert normalise_state(rows["725"][0]) == CANCELLED  # "CANCELLED+"
    assert (normalise_state(rows["747.batch"][0]), parse_exit_code(rows["747.batch"][1])) == (CANCELLED, 143)
    assert {normalise_state(line) for line in read(ELSEWHERE / "clusterjob_kcluster_sacct_state_n_completed.txt")
            .splitlines()} == {COMPLETED}


@pytest.mark.parametrize("text, seconds", [
    ("0:03", 3.0), ("1:02:03", 3723.0), ("2-01:02:03", 176523.0), ("00:01:23", 83.0), ("INVALID", None),
    ("UNLIMITED", None), ("", None),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, code", [("0:0", 0), ("3:0", 3), ("0:15", 143), ("0:9", 137), ("2:9", 2), ("", None)])
def test_parse_exit_code(text, code):
    assert parse_exit_code(text) == code


# -- accounting ---------------------------------------------------------------------------------------------------


def test_accounting_argv_is_one_batched_sacct(slurm):
    argv = slurm.accounting_argv(["42", "43", "42"])
    assert argv == ["sacct", "-X", "-P", "-j", "42,43", "--format=" + ",".join(ACCOUNTING_FIELDS)]
    for bad in ([], ["42,43"], ["-u alice"], [""]):
        with pytest.raises(ValueError):
            slurm.accounting_argv(bad)


def test_parse_accounting_fixture(slurm):
    records = by_id(slurm.parse_accounting(ok(FIXTURE_SACCT, read(SLURM / "sacct_X_P.txt"))))
    expected = {"42_0": (COMPLETED, 0), "42_1": (FAILED, 3), "42_2": (TIMEOUT, None), "42_3": (TIMEOUT, None),
                "42_4": (COMPLETED, 0), "43_0": (PENDING, None), "43_1": (PENDING, None), "43_2": (PENDING, None),
                "43_3": (PENDING, None)}
    assert {k: (r.state, r.exit_code) for k, r in records.items()} == expected
    assert records["42_2"].elapsed_s == 83.0 and records["42_2"].raw_state == "TIMEOUT"
    assert (records["42_0"].start, records["42_0"].end) == ("2026-11-23T12:49:29", "2026-11-23T12:49:31")
    assert records["43_2"].start is None and records["43_2"].index == 2 and records["43_2"].submission_id == "43"
    assert records["42_1"].name == "hs-demo-fix"


def test_parse_accounting_reads_the_header_when_present(slurm):
    header = FIXTURE_SACCT[4].split("=", 1)[1].replace(",", "|")
    with_header = ok(slurm.accounting_argv(["42", "43"]), header + "\n" + read(SLURM / "sacct_X_P.txt"))
    assert slurm.parse_accounting(with_header) == slurm.parse_accounting(ok(FIXTURE_SACCT,
                                                                            read(SLURM / "sacct_X_P.txt")))


def test_parse_accounting_skips_steps(slurm):
    records = by_id(slurm.parse_accounting(ok(FIXTURE_SACCT_STEPS, read(SLURM / "sacct_steps.txt"))))
    assert sorted(records) == ["42_0", "42_1", "42_2", "42_3", "42_4"]
    assert records["42_2"].state == TIMEOUT and records["42_1"].state == FAILED


def test_parse_accounting_own_format(slurm):
    records = by_id(slurm.parse_accounting(ok(slurm.accounting_argv(["1", "2", "3"]), PROBE_SACCT)))
    assert (records["1_2"].state, records["1_2"].exit_code) == (FAILED, 137)  # killed by SIGKILL: 0:9
    assert (records["1_1"].exit_code, records["1_1"].host) == (3, "vm")
    # task 2_0 ran and was cancelled: its own row wins over the folded row that still lists it
    assert (records["2_0"].state, records["2_0"].start, records["2_0"].host) == (CANCELLED, "2026-11-23T14:18:44", "vm")
    never_ran = records["2_22"]
    assert (never_ran.state, never_ran.start, never_ran.host, never_ran.exit_code) == (CANCELLED, None, None, None)
    assert never_ran.raw_state == "CANCELLED by 1001"
    # "...,52,54...%2": 54 may be partial, 56-60 are not listed at all
    assert sorted(r.index for r in records.values() if r.submission_id == "2") == [0, 2, 4, 6, 8] + list(
        range(22, 53, 2))
    assert max(r.index for r in records.values() if r.submission_id == "3") == 71


def test_parse_accounting_without_accounting_is_empty(slurm):
    # the text sacct prints when AccountingStorageType is none (src/sacct/options.c)
    assert slurm.parse_accounting(failed(FIXTURE_SACCT, "Slurm accounting storage is disabled\n")) == []


def test_parse_accounting_database_down_is_transient(slurm):
    with pytest.raises(SchedulerError) as err:
        slurm.parse_accounting(failed(slurm.accounting_argv(["1"]), PROBE_SACCT_DBD_DOWN))
    assert err.value.kind == "transient" and "Connection refused" in err.value.message


# -- cancel -------------------------------------------------------------------------------------------------------


def test_cancel_argv_exact_ids_only(slurm):
    assert slurm.cancel_argv(["42", "43_1", "43_[5-6]"]) == ["scancel", "42", "43_1", "43_[5-6]"]
    for bad in ([], ["--user=alice"], ["42 43"], ["-u"], ["*"]):
        with pytest.raises(ValueError):
            slurm.cancel_argv(bad)


# -- limits -------------------------------------------------------------------------------------------------------


def test_limits_argvs(slurm):
    config, assoc, qos = slurm.limits_argvs("alice")
    assert config == ["scontrol", "show", "config"]
    assert assoc == ["scontrol", "show", "assoc_mgr", "users=alice", "flags=assoc"]  # slurmctld's cache, not slurmdbd
    assert qos[:5] == ["sacctmgr", "-n", "-P", "show", "qos"]


def test_parse_limits_from_the_fixtures(slurm):
    limits = slurm.parse_limits([ok(FIXTURE_CONFIG, read(SLURM / "scontrol_config_limits.txt")),
                                 ok(FIXTURE_ASSOC, read(SLURM / "sacctmgr_assoc.txt"))])
    assert limits == QueueLimits(max_queued=5, max_array_size=1001, max_job_count=10000)


def test_assoc_mgr_gives_the_same_cap(slurm):
    limits = slurm.parse_limits([ok(FIXTURE_ASSOC_MGR, read(SLURM / "scontrol_assoc_mgr.txt"))])
    assert limits.max_queued == 5 and limits.max_array_size is None


def test_parse_limits_of_the_own_commands(slurm):
    config, assoc, qos = slurm.limits_argvs("alice")
    assoc_mgr = read(SLURM / "scontrol_assoc_mgr.txt")
    limits = slurm.parse_limits([ok(config, read(SLURM / "scontrol_config_limits.txt")), ok(assoc, assoc_mgr),
                                 ok(qos, PROBE_QOS)])
    assert (limits.max_queued, limits.max_array_size) == (5, 1001)
    # a MaxSubmitPU on the default QOS caps too
    stricter = slurm.parse_limits([ok(assoc, assoc_mgr), ok(qos, PROBE_QOS.replace("|", "|3"))])
    assert stricter.max_queued == 3


def test_parse_limits_failed_commands_leave_none(slurm):
    config, assoc, qos = slurm.limits_argvs("hpcsweep")
    limits = slurm.parse_limits([failed(config, PROBE_SQUEUE_CTLD_DOWN), failed(assoc, PROBE_SACCT_DBD_DOWN),
                                 failed(qos, PROBE_SACCT_DBD_DOWN)])
    assert limits == QueueLimits()
    assert slurm.parse_limits([]) == QueueLimits()


def test_final_states_are_normalised_states():
    # the mapping only produces states of the contract
    produced = {normalise_state(raw) for raw in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED",
                                                 "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "X")}
    assert produced <= set(STATES) and FINAL_STATES <= produced
