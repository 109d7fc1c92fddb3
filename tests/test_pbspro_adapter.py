"""PBS Pro / OpenPBS adapter: every captured output under tests/fixtures, plus the argv builders and fakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pytest

from hpc_sweep.schedulers.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    OOM,
    PENDING,
    RUNNING,
    TIMEOUT,
    UNKNOWN,
    CommandResult,
    SchedulerError,
    SubmitSpec,
    TaskRecord,
)
from hpc_sweep.schedulers.pbs_family import expand_indices, parse_qstat_f_text, submission_key
from hpc_sweep.schedulers.pbspro import PbsProScheduler, pbs_exit_state, pbs_state, throttle_supported

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))

import captures  # noqa: E402
import fakepbs  # noqa: E402

OPENPBS = captures.fixture_folder("openpbs-23.06")
ELSEWHERE = captures.fixture_folder("captured-elsewhere", "pbspro")

S = PbsProScheduler()


def live(path: Path) -> List[TaskRecord]:
    return S.parse_live(captures.captured_result(path))


def by_index(records: Sequence[TaskRecord]) -> Dict[Optional[int], TaskRecord]:
    out = {r.index: r for r in records}
    assert len(out) == len(records), "one record per task"
    return out


def by_id(records: Sequence[TaskRecord]) -> Dict[str, TaskRecord]:
    return {r.task_id: r for r in records}


def states(records: Sequence[TaskRecord]) -> Dict[Optional[int], str]:
    return {i: r.state for i, r in by_index(records).items()}


def raw_jobs(path: Path) -> Dict[str, dict]:
    return json.loads(captures.captured_result(path).stdout)["Jobs"]


# ---------------------------------------------------------------------------------------------------------
# One check per captured file; test_every_capture_has_a_check keeps the table complete.
# ---------------------------------------------------------------------------------------------------------

CHECKS: Dict[str, Callable[[Path], None]] = {}


def check(*names: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        for name in names:
            CHECKS[name] = fn
        return fn
    return register


# The cluster-shape captures are checked beside their parsers (issue #15).
from test_cluster_shape import PBS_CAPTURE_CHECKS  # noqa: E402

CHECKS.update(PBS_CAPTURE_CHECKS)


def _table_twins(path: Path, twins: Sequence[str]) -> None:
    """Tabular qstat: never parsed by the adapter (ids truncate), but its states must map and agree with the
    JSON taken at the same moment."""
    with pytest.raises(SchedulerError) as err:
        S.parse_live(captures.stdout_result(path))
    assert err.value.kind == "transient"
    rows = captures.table_rows(path)
    assert rows
    assert all(pbs_state(letter, 0) != UNKNOWN for _jid, letter in rows)
    twin_states = {jid: job["job_state"] for name in twins for jid, job in raw_jobs(path.parent / name).items()}
    for jid, letter in rows:
        if jid in twin_states:
            assert twin_states[jid] == letter, jid
    if twins:
        assert any(jid in twin_states for jid, _ in rows)


TABLE_TWINS = {
    "openpbs-23.06/a_qstat.txt": ["a_parent_json.txt"],
    "openpbs-23.06/a_qstat_t.txt": ["a_t_json.txt"],
    "openpbs-23.06/a_qstat_Jt.txt": ["a_t_json.txt"],
    "openpbs-23.06/b_qstat_t_mid.txt": ["b_parent_json_mid.txt", "b_sub0_xjson_finished.txt"],
    "openpbs-23.06/b_qstat_xt_mid.txt": ["b_parent_json_mid.txt", "b_sub0_xjson_finished.txt"],
    "openpbs-23.06/c_qstat_x_done.txt": ["c_parent_xjson_done.txt"],
    "openpbs-23.06/c_qstat_xt_done.txt": ["c_array_xtjson_done.txt"],
    "pbspro/clusterjob_copper_qstat_x_F.txt": [],
    "pbspro/clusterjob_copper_qstat_x_R.txt": [],
    "pbspro/issue_opencomposer9_nscc_pbspro2024_qstat_x_F_R.txt": [],
    "pbspro/palmetto_pbspro14_qstat_jobid_R.txt": [],
    "pbspro/palmetto_pbspro14_qstat_u_R.txt": [],
    "pbspro/sih_artemis_qstat_t_array_B_R.txt": [],
    "pbspro/sih_artemis_qstat_t_array_B_X_R.txt": [],
    "pbspro/sih_artemis_qstat_u_array_parent_Q.txt": [],
    "pbspro/swc_gadi_pbspro_qstat_H_F.txt": [],
}
for _name, _twins in TABLE_TWINS.items():
    CHECKS[_name] = (lambda twins: lambda path: _table_twins(path, twins))(_twins)


@check("openpbs-23.06/a_parent_json.txt")
def _(path: Path) -> None:
    # Parent alone (asked without -t), state B, array_indices_remaining "2-5": those four are queued; nothing
    # can be said of 0 and 1 (running or expired), so nothing is reported for them.
    recs = live(path)
    assert states(recs) == {i: PENDING for i in range(2, 6)}
    assert {r.task_id for r in recs} == {f"0[{i}].vm" for i in range(2, 6)}
    assert {r.submission_id for r in recs} == {"0[].vm"}


@check("openpbs-23.06/a_sub0_json.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.task_id, rec.index, rec.state, rec.raw_state) == ("0[0].vm", 0, RUNNING, "R")
    assert (rec.host, rec.start, rec.exit_code, rec.name) == ("vm", "2026-11-23T12:43:15", None, "arrtest")


@check("openpbs-23.06/a_sub4_json.txt")
def _(path: Path) -> None:
    assert "array_index" not in raw_jobs(path)["0[4].vm"]  # the template copy the README warns about
    (rec,) = live(path)
    assert (rec.index, rec.state, rec.submission_id) == (4, PENDING, "0[].vm")
    assert rec.reason is None  # "Job Array Began ..." is the parent's comment, not a pending reason
    assert rec.start is None and rec.host is None


@check("openpbs-23.06/a_t_json.txt")
def _(path: Path) -> None:
    recs = live(path)
    assert states(recs) == {0: RUNNING, 1: RUNNING, 2: PENDING, 3: PENDING, 4: PENDING, 5: PENDING}
    assert not any("[]" in r.task_id for r in recs)  # the B parent is not a task
    assert {r.host for r in recs if r.state == RUNNING} == {"vm"}


@check("openpbs-23.06/b_parent_json_mid.txt")
def _(path: Path) -> None:
    assert states(live(path)) == {4: PENDING, 5: PENDING}


@check("openpbs-23.06/b_sub0_json_finished_noX.txt", "openpbs-23.06/b_sub0_xjson_finished.txt",
       "openpbs-23.06/c_sub5_xjson_done.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.state, rec.exit_code, rec.elapsed_s) == (COMPLETED, 0, 20.0)
    assert rec.raw_state == ("F" if path.name.startswith("c_") else "X")
    assert rec.end and rec.start and rec.end > rec.start


@check("openpbs-23.06/c_array_xtjson_done.txt")
def _(path: Path) -> None:
    recs = live(path)
    assert states(recs) == {i: COMPLETED for i in range(6)}
    assert {(r.raw_state, r.exit_code) for r in recs} == {("F", 0)}


@check("openpbs-23.06/c_parent_json_done_noX.txt")
def _(path: Path) -> None:
    result = captures.captured_result(path)
    assert result.returncode == 35 and "Job has finished, use -x or -H" in result.stderr
    assert S.parse_live(result) == []


@check("openpbs-23.06/c_parent_xjson_done.txt")
def _(path: Path) -> None:
    # Finished parent, no subjob detail, Exit_status 0 = every subjob exited 0.
    recs = live(path)
    assert states(recs) == {i: COMPLETED for i in range(6)}
    assert {r.exit_code for r in recs} == {0}


@check("openpbs-23.06/d_array_xtjson_after_qdel.txt")
def _(path: Path) -> None:
    recs = by_index(live(path))
    assert set(recs) == {1, 2, 3, 4}
    assert all(r.state == CANCELLED for r in recs.values())
    assert (recs[2].exit_code, recs[3].exit_code) == (271, 143)  # running subjobs killed by the qdel
    # "Subjob finished" copies carry the parent's Exit_status 1, not their own: no exit code is claimed.
    assert recs[1].exit_code is None and recs[4].exit_code is None
    assert "Subjob finished" in (recs[4].reason or "")


@check("openpbs-23.06/d_parent_json_before_qdel.txt")
def _(path: Path) -> None:
    assert raw_jobs(path)["1[].vm"]["array_indices_remaining"] == 4  # a bare number, not "4"
    assert states(live(path)) == {4: PENDING}


@check("openpbs-23.06/e_throttle_parent_json.txt")
def _(path: Path) -> None:
    assert raw_jobs(path)["2[].vm"]["max_run_subjobs"] == 5
    assert states(live(path)) == {i: PENDING for i in range(5, 100)}


@check("openpbs-23.06/f_parent_Q_json_maxrun0.txt")
def _(path: Path) -> None:
    recs = live(path)
    assert states(recs) == {i: PENDING for i in range(10)}
    assert {r.reason for r in recs} == {"Not Running: Number of concurrent running subjobs limit reached"}


@check("openpbs-23.06/g_mixed_exit_xtjson.txt")
def _(path: Path) -> None:
    recs = by_index(live(path))
    assert {i: (r.state, r.exit_code) for i, r in recs.items()} == {
        0: (COMPLETED, 0), 1: (FAILED, 3), 2: (TIMEOUT, -29)}
    assert "walltime" in (recs[2].reason or "")


@check("openpbs-23.06/h_weird_json.txt")
def _(path: Path) -> None:
    assert live(path) == []
    text = captures.read(path)
    assert not text.endswith("\n")
    for rc, err in ((153, "qstat: Unknown Job Id 7[].vm\n"),
                    (35, "qstat: 7[].vm Job has finished, use -x or -H to obtain historical job information\n")):
        assert S.parse_live(CommandResult(["qstat"], rc, text, err)) == []


@check("pbspro/aiida_pbspro12_2013_qstat_f_deps_held.txt")
def _(path: Path) -> None:
    recs = by_id(live(path))
    assert {jid: (r.raw_state, r.state) for jid, r in recs.items()} == {
        "68350.mycluster": ("Q", PENDING), "68351.mycluster": ("Q", PENDING),
        "69301.mycluster": ("R", RUNNING), "69302.mycluster": ("H", PENDING),
        "74164.mycluster": ("R", RUNNING), "74165.mycluster": ("H", PENDING)}
    assert recs["68350.mycluster"].reason == "Not Running: Node is in an ineligible state: offline"
    assert recs["69302.mycluster"].reason
    assert (recs["69301.mycluster"].host, recs["69301.mycluster"].elapsed_s) == ("b141", 64 * 3600 + 26 * 60 + 16)
    attrs = parse_qstat_f_text(captures.read(path))["68350.mycluster"]
    assert attrs["Error_Path"] == "mycluster.cluster:/home/usernum1/scratch/cptest/scaletest/PTOscaletest/testjob.err"


@check("pbspro/bawserver_qut_pbspro2025_qstat_stderr_no_route.txt")
def _(path: Path) -> None:
    with pytest.raises(SchedulerError) as err:
        S.parse_live(captures.stderr_result(path, 255))
    assert err.value.kind == "transient"


@check("pbspro/buildtest_openpbs19_container_qstat_xf_json_H.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.task_id, rec.index, rec.state, rec.raw_state) == ("157.pbs", None, PENDING, "H")
    assert rec.reason == "held (Hold_Types=u)"


@check("pbspro/clusterjob_copper_qsub_jobid.txt")
def _(path: Path) -> None:
    assert S.parse_submit(captures.stdout_result(path, ("qsub",))) == "436036.sdb"


@check("pbspro/gadi_qstat_f_3jobs_R_Q.txt")
def _(path: Path) -> None:
    recs = by_id(live(path))
    assert {jid: r.state for jid, r in recs.items()} == {
        "80005196.gadi-pbs": RUNNING, "80005197.gadi-pbs": PENDING, "80005198.gadi-pbs": PENDING}
    # 8-space continuation lines (the editor ate the TABs) are joined without a separator.
    attrs = parse_qstat_f_text(captures.read(path))["80005196.gadi-pbs"]
    assert attrs["Error_Path"].endswith("/test1/test1.e80005196")


@check("pbspro/issue_azhop14_openpbs_qstat_fx_err_no_job_history.txt")
def _(path: Path) -> None:
    with pytest.raises(SchedulerError) as err:
        S.parse_live(captures.stderr_result(path, 1))
    assert err.value.kind == "rejected" and "history" in err.value.message
    assert "-x" not in PbsProScheduler(history=False).live_argv("bob", ["0[].vm"])


@check("pbspro/issue_bawserver877_qut_qsub_err_communication_failure.txt")
def _(path: Path) -> None:
    with pytest.raises(SchedulerError) as err:
        S.parse_submit(captures.stderr_result(path, 183, ("qsub",)))
    assert err.value.kind == "transient"


@check("pbspro/issue_opencomposer9_nscc_pbspro2024_qstat_err_unknown_job_id.txt",
       "pbspro/sih_artemis_qstat_err_unknown_job_id.txt")
def _(path: Path) -> None:
    assert S.parse_live(captures.stderr_result(path, 153)) == []


@check("pbspro/issue_reframe2936_pbspro19_qstat_version.txt")
def _(path: Path) -> None:
    version = S.parse_version(captures.stdout_result(path))
    assert version == "19.2.8.20200925072630"
    assert S.throttle_supported(version) is False


@check("pbspro/katana_unsw_pbspro_qstat_xf_F_interactive_exit0.txt",
       "pbspro/palmetto_pbspro14_qstat_xf_F_exit0.txt", "pbspro/swc_gadi_pbspro_qstat_fx_F_exit0.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.state, rec.raw_state, rec.exit_code, rec.index) == (COMPLETED, "F", 0, None)
    assert rec.host and rec.elapsed_s is not None and rec.start


def test_text_parser_rejoins_wrapped_values_across_an_empty_continuation() -> None:
    path = ELSEWHERE / "palmetto_pbspro14_qstat_xf_F_exit0.txt"
    attrs = parse_qstat_f_text(captures.read(path))["7600424.pbs02"]
    assert attrs["Error_Path"] == "login001.palmetto.clemson.edu:/home/atrikut/MPI/pi-mpi.e7600424"
    assert attrs["Output_Path"] == "login001.palmetto.clemson.edu:/home/atrikut/MPI/pi-mpi.o7600424"
    assert attrs["exec_host"] == "node0088/1*2+node0094/1*2+node0094/2*2+node0085/0*2"
    assert attrs["Exit_status"] == "0"


@check("pbspro/sih_artemis_qstat_f_array_parent_grep_array.txt")
def _(path: Path) -> None:
    # A grep'd fragment: no "Job Id:" header, so nothing can be attributed to a job.
    with pytest.raises(SchedulerError):
        S.parse_live(captures.stdout_result(path))
    attrs = parse_qstat_f_text("Job Id: 2597100[].pbsserver\n" + captures.read(path))["2597100[].pbsserver"]
    assert expand_indices(attrs["array_indices_submitted"]) == list(range(1, 11))


@check("pbspro/swrap_metacentrum_pbs19_qstat_xf_json_R.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.state, rec.host, rec.start) == (RUNNING, "charon24", "2022-10-04T21:23:33")
    assert submission_key(rec.submission_id) == "12860476"


def _all_captures() -> List[str]:
    names = []
    for folder, label in ((OPENPBS, "openpbs-23.06"), (ELSEWHERE, "pbspro")):
        names += [f"{label}/{n}" for n in captures.fixture_files(folder)]
    return names


def _path(name: str) -> Path:
    label, file = name.split("/", 1)
    return (OPENPBS if label == "openpbs-23.06" else ELSEWHERE) / file


def test_every_capture_has_a_check() -> None:
    assert set(_all_captures()) == set(CHECKS)


@pytest.mark.parametrize("name", _all_captures())
def test_capture(name: str) -> None:
    CHECKS[name](_path(name))


# ---------------------------------------------------------------------------------------------------------
# Broken and unusual JSON
# ---------------------------------------------------------------------------------------------------------

BASH_FUNC = ('                "BASH_FUNC_module%%":"() {  eval $($LMOD_CMD bash "$@");\n'
             ' [ $? = 0 ] && eval $(${LMOD_SETTARG_CMD:-:} -s sh)\n}",\n'
             '                "foo":005,\n')


def _clean_states() -> Dict[str, tuple]:
    return {r.task_id: (r.state, r.exit_code) for r in live(OPENPBS / "g_mixed_exit_xtjson.txt")}


def _break(text: str, where: str, insert: str) -> str:
    pos = text.index(where)
    return text[:pos] + insert + text[pos:]


def test_exported_shell_functions_in_variable_list_are_repaired() -> None:
    text = captures.read(OPENPBS / "g_mixed_exit_xtjson.txt")
    broken = _break(text, '                "PBS_O_HOME"', BASH_FUNC)
    with pytest.raises(ValueError):
        json.loads(broken)
    got = S.parse_live(CommandResult(["qstat"], 0, broken, ""))
    assert {r.task_id: (r.state, r.exit_code) for r in got} == _clean_states()


def test_broken_variable_list_as_last_key_is_dropped_cleanly() -> None:
    text = captures.read(OPENPBS / "a_sub0_json.txt")
    # Move Variable_List to the end of the job and break it.
    start = text.index('            "Variable_List"')
    end = text.index("            },\n", start) + len("            },\n")
    block = text[start:end].replace('"PBS_O_HOME"', BASH_FUNC.strip() + '\n                "PBS_O_HOME"', 1)
    body = text[:start] + text[end:]
    tail = '            "Submit_Host":"vm"\n'
    broken = body.replace(tail, tail.rstrip("\n") + ",\n" + block.rstrip(",\n") + "\n")
    (rec,) = S.parse_live(CommandResult(["qstat"], 0, broken, ""))
    assert (rec.index, rec.state) == (0, RUNNING)


def test_breakage_outside_variable_list_uses_the_tolerant_reader() -> None:
    text = captures.read(OPENPBS / "g_mixed_exit_xtjson.txt")
    broken = text.replace('"Submit_arguments":"-J 0-2', '"Submit_arguments":"-v "X=1" -J 0-2')
    with pytest.raises(ValueError):
        json.loads(broken)
    got = S.parse_live(CommandResult(["qstat"], 0, broken, ""))
    assert {r.task_id: (r.state, r.exit_code) for r in got} == _clean_states()


def test_tab_indented_json_layout() -> None:
    doc = json.loads(captures.read(OPENPBS / "g_mixed_exit_xtjson.txt"))
    tabbed = json.dumps(doc, indent="\t", separators=(",", ":\t"))
    got = S.parse_live(CommandResult(["qstat"], 0, tabbed, ""))
    assert {r.task_id: (r.state, r.exit_code) for r in got} == _clean_states()


def test_unknown_ids_do_not_hide_the_others() -> None:
    text = captures.read(OPENPBS / "a_sub0_json.txt")
    (rec,) = S.parse_live(CommandResult(["qstat"], 153, text, "qstat: Unknown Job Id 7[].vm\n"))
    assert rec.task_id == "0[0].vm"


def test_ids_answered_by_nothing_at_all_change_nothing() -> None:
    text = captures.read(OPENPBS / "a_t_json.txt")
    argv = S.live_argv("bob", ["0[].vm", "1[].vm"])
    with pytest.raises(SchedulerError) as err:  # openpbs#2672: only the first job comes back
        S.parse_live(CommandResult(argv, 0, text, ""))
    assert err.value.kind == "transient" and "1[].vm" in err.value.message
    said = S.parse_live(CommandResult(argv, 153, text, "qstat: Unknown Job Id 1[].vm\n"))
    assert len(said) == 6
    # A subjob id is answered by its array's records; the server part may be spelt differently.
    assert len(S.parse_live(CommandResult(S.live_argv("bob", ["0[3].vm", "0[]"]), 0, text, ""))) == 6


def test_unknown_failure_changes_nothing() -> None:
    with pytest.raises(SchedulerError) as err:
        S.parse_live(CommandResult(["qstat"], 2, "", "qstat: illegally formed job identifier: x\n"))
    assert err.value.kind == "transient"
    with pytest.raises(SchedulerError):
        S.parse_live(CommandResult(["qstat"], 1, "", ""))
    with pytest.raises(SchedulerError):
        S.parse_live(CommandResult(["qstat"], 0, "garbage that is not qstat output\n", ""))
    assert S.parse_live(CommandResult(["qstat"], 0, "", "")) == []


@pytest.mark.parametrize("stderr", [
    "qstat: cannot connect to server vm (errno=15010)\n",
    "Connection refused\nqstat: cannot connect to server vm (errno=111)\n",
    "No route to host\nqstat: cannot connect to server aqua (errno=15010)\n",
])
def test_unreachable_server_is_transient(stderr: str) -> None:
    with pytest.raises(SchedulerError) as err:
        S.parse_live(CommandResult(["qstat"], 255, "", stderr))
    assert err.value.kind == "transient"


# ---------------------------------------------------------------------------------------------------------
# State and exit-code mapping (the table in the reply / README)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("letter,exit_status,expected", [
    ("Q", None, PENDING), ("H", None, PENDING), ("W", None, PENDING), ("T", None, PENDING),
    ("S", None, PENDING), ("M", None, PENDING), ("U", None, PENDING),
    ("R", None, RUNNING), ("E", None, RUNNING), ("B", None, RUNNING),
    ("X", 0, COMPLETED), ("F", 0, COMPLETED), ("F", 1, FAILED), ("F", 3, FAILED), ("F", 2, FAILED),
    ("F", -29, TIMEOUT), ("F", -28, TIMEOUT), ("F", -27, OOM), ("F", -26, OOM),
    ("F", 271, CANCELLED), ("F", 265, CANCELLED), ("F", 257, CANCELLED), ("F", 143, CANCELLED),
    ("F", None, CANCELLED), ("F", -3, FAILED), ("Z", None, UNKNOWN),
])
def test_state_mapping(letter: str, exit_status: Optional[int], expected: str) -> None:
    assert pbs_state(letter, exit_status) == expected


def test_exit_mapping_needs_a_finished_state() -> None:
    assert pbs_state("R", 271) == RUNNING
    assert pbs_exit_state(137) == FAILED  # 128+9 from the shell: not told apart from a crash


# ---------------------------------------------------------------------------------------------------------
# argv builders and submit/cancel parsing
# ---------------------------------------------------------------------------------------------------------

def test_identity() -> None:
    assert (S.name, S.index_env, S.task_id_env) == ("pbspro", "PBS_ARRAY_INDEX", "PBS_JOBID")


def test_submit_argv_is_the_script_only() -> None:
    argv = S.submit_argv(SubmitSpec(script="/s/job.sh", job_name="x-g0-1", workdir="/s", indices=(0, 1)))
    assert argv == ["qsub", "/s/job.sh"]
    assert "-V" not in argv


@pytest.mark.parametrize("indices,throttle,expected", [
    (range(6), None, "0-5"), ([3, 1, 2], None, "1-3"), ([0, 2, 4, 6], 3, "0-6:2%3"), ([10, 20], 1, "10-20:10%1"),
])
def test_array_spec(indices: Sequence[int], throttle: Optional[int], expected: str) -> None:
    assert S.array_spec(indices, throttle) == expected


@pytest.mark.parametrize("indices,throttle", [([5], None), ([], None), ([0, 1, 3], None), ([0, 0, 1], None),
                                              ([0, 1], 0), ([-1, 0], None)])
def test_array_spec_refuses(indices: Sequence[int], throttle: Optional[int]) -> None:
    with pytest.raises(ValueError):
        S.array_spec(indices, throttle)


@pytest.mark.parametrize("stdout,expected", [("0[].vm\n", "0[].vm"), ("124.vm\n", "124.vm"),
                                             ("note from a site wrapper\n125[].pbs01.hpc.example\n",
                                              "125[].pbs01.hpc.example")])
def test_parse_submit_ids(stdout: str, expected: str) -> None:
    assert S.parse_submit(CommandResult(["qsub", "j.sh"], 0, stdout, "")) == expected


# Messages and exit codes observed on OpenPBS 23.06 (fixture README, "Observed facts").
@pytest.mark.parametrize("stderr,rc,kind", [
    ("qsub: would exceed complex's per-user limit\n", 38, "limit"),
    ("qsub: would exceed queue generic's per-user limit\n", 38, "limit"),
    ("qsub: Maximum number of jobs already in complex\n", 38, "limit"),
    ("qsub: Maximum number of jobs for user bob already in complex\n", 38, "limit"),
    ("qsub: would exceed per-user limit on resource ngpus in complex\n", 39, "limit"),
    ("qsub: Array job exceeds server or queue size limit\n", 3, "rejected"),
    ("qsub: illegal -J value\n", 2, "rejected"),
    ("qsub: Error (15014) submitting job\n", 166, "rejected"),
    ("qsub: Bad UID for job execution\n", 175, "rejected"),
    ("qsub: Job violates queue and/or server resource limits\n", 1, "rejected"),
    ("Connection refused\nqsub: cannot connect to server vm (errno=111)\n", 1, "transient"),
])
def test_parse_submit_failures(stderr: str, rc: int, kind: str) -> None:
    with pytest.raises(SchedulerError) as err:
        S.parse_submit(CommandResult(["qsub", "j.sh"], rc, "", stderr))
    assert err.value.kind == kind
    assert err.value.message == stderr.strip()


def test_submit_without_an_id_is_transient() -> None:
    with pytest.raises(SchedulerError) as err:
        S.parse_submit(CommandResult(["qsub", "j.sh"], 0, "", ""))
    assert err.value.kind == "transient"


def test_live_argv() -> None:
    assert S.live_argv("bob", ["0[].vm", "5.vm"]) == ["qstat", "-f", "-F", "json", "-x", "-t", "0[].vm", "5.vm"]
    assert PbsProScheduler(history=False).live_argv("bob", ["0[].vm"]) == ["qstat", "-f", "-F", "json", "-t", "0[].vm"]
    assert S.live_argv_text(["0[].vm"]) == ["qstat", "-f", "-x", "-t", "0[].vm"]
    # Nothing recorded yet: no qstat without ids (every user's jobs and history); qselect lists the user's.
    assert S.live_argv("bob", []) == ["qselect", "-u", "bob"]


def test_qselect_listing_counts_as_unfinished_jobs() -> None:
    recs = S.parse_live(CommandResult(["qselect", "-u", "bob"], 0, "12[].vm\n13.vm\n", ""))
    assert [(r.task_id, r.submission_id, r.state) for r in recs] == [("12[].vm", "12[].vm", UNKNOWN),
                                                                    ("13.vm", "13.vm", UNKNOWN)]
    assert S.parse_live(CommandResult(["qselect", "-u", "bob"], 0, "", "")) == []


def test_lookup_by_name() -> None:
    assert S.lookup_argv("bob", "sw-g1-3") == ["qselect", "-x", "-u", "bob", "-N", "sw-g1-3"]
    assert S.parse_lookup(CommandResult(["qselect"], 0, "41[].vm\n", "")) == ["41[].vm"]
    assert S.parse_lookup(CommandResult(["qselect"], 0, "", "")) == []
    with pytest.raises(SchedulerError):
        S.parse_lookup(CommandResult(["qselect"], 255, "", "qselect: cannot connect to server vm (errno=15010)\n"))


def test_cancel_argv() -> None:
    assert S.cancel_argv(["123[].vm", "124[3].vm", "125"]) == ["qdel", "123[].vm", "124[3].vm", "125"]
    for bad in ([], ["all"], ["123[].vm", "-W force"], ["bob"]):
        with pytest.raises(ValueError):
            S.cancel_argv(bad)


@pytest.mark.parametrize("stderr,rc,kind", [
    ("qdel: Job has finished 0[].vm\n", 35, None), ("qdel: Unknown Job Id 999.vm\n", 153, None),
    ("", 0, None), ("qdel: Unauthorized Request \n", 159, "rejected"),
    ("qdel: cannot connect to server vm (errno=15010)\n", 255, "transient"),
])
def test_parse_cancel(stderr: str, rc: int, kind: Optional[str]) -> None:
    result = CommandResult(["qdel", "0[].vm"], rc, "", stderr)
    if kind is None:
        S.parse_cancel(result)
    else:
        with pytest.raises(SchedulerError) as err:
            S.parse_cancel(result)
        assert err.value.kind == kind


# ---------------------------------------------------------------------------------------------------------
# Limits and version (qstat -Bf / -Qf text in the documented attribute syntax; not a capture)
# ---------------------------------------------------------------------------------------------------------

SERVER_TEXT = """Server: vm
    server_state = Active
    max_queued = [o:PBS_ALL=400],[u:PBS_GENERIC=10],[u:bob=3],[g:PBS_GENERIC=50
\t]
    max_array_size = 10000
    pbs_version = 23.06.06

"""
QUEUE_TEXT = """Queue: gpu
    queue_type = Execution
    max_queued = [u:PBS_GENERIC=5]
    max_array_size = 500
    enabled = True

"""


def test_limits_argvs() -> None:
    assert S.limits_argvs("bob") == [["qstat", "-Bf"]]
    assert S.limits_argvs("bob", "gpu") == [["qstat", "-Bf"], ["qstat", "-Qf", "gpu"]]


@pytest.mark.parametrize("user,expected", [("bob", 3), ("alice", 5)])
def test_parse_limits(user: str, expected: int) -> None:
    sched = PbsProScheduler()
    results = [CommandResult(argv, 0, text, "") for argv, text in
               zip(sched.limits_argvs(user, "gpu"), (SERVER_TEXT, QUEUE_TEXT))]
    limits = sched.parse_limits(results)
    assert (limits.max_queued, limits.max_array_size, limits.throttle_supported) == (expected, 500, True)


def test_parse_limits_server_only_and_old_version() -> None:
    text = SERVER_TEXT.replace("23.06.06", "19.2.8.20200925072630")
    limits = PbsProScheduler().parse_limits([CommandResult(["qstat", "-Bf"], 0, text, "")], user="carol")
    assert (limits.max_queued, limits.max_array_size, limits.throttle_supported) == (10, 10000, False)
    assert PbsProScheduler().parse_limits([]).max_queued is None


@pytest.mark.parametrize("version,ok", [("23.06.06", True), ("22.05.11", True), ("22.04", False),
                                        ("19.2.8.20200925072630", False), ("2024.1.0", True),
                                        ("2021.1.3", False), ("", False)])
def test_throttle_supported(version: str, ok: bool) -> None:
    assert throttle_supported(version) is ok


def test_version_argv() -> None:
    assert S.version_argv() == ["qstat", "--version"]


@pytest.mark.parametrize("spec,expected", [("0-5", list(range(6))), (4, [4]), ("-", []), ("1,3,5-7", [1, 3, 5, 6, 7]),
                                           ("0-10:5", [0, 5, 10]), ("0-99%5", list(range(100)))])
def test_expand_indices(spec: object, expected: List[int]) -> None:
    assert expand_indices(spec) == expected


# ---------------------------------------------------------------------------------------------------------
# The stand-in commands (tests/fakes) speak the captured dialect and parse with the adapter
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    env = fakepbs.environ(tmp_path, "pbspro")
    for key in ("FAKE_PBS_STATE", "FAKE_PBS_LOG", "FAKE_PBS_FLAVOR"):
        monkeypatch.setenv(key, env[key])  # so fakepbs.set_state in this process finds the table
    return env


def run(argv: Sequence[str], env: Dict[str, str]) -> CommandResult:
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=60)
    return CommandResult(list(argv), proc.returncode, proc.stdout, proc.stderr)


def script(tmp_path: Path, directives: str) -> str:
    path = tmp_path / "job.sh"
    path.write_text("#!/bin/bash\n#PBS -N sweep-g0-1\n" + directives + "#PBS -l walltime=00:10:00\necho hi\n")
    return str(path)


def submit(tmp_path: Path, env: Dict[str, str], directives: str) -> str:
    spec = SubmitSpec(script=script(tmp_path, directives), job_name="sweep-g0-1", workdir=str(tmp_path))
    return S.parse_submit(run(S.submit_argv(spec), env))


def fake_jobs(env: Dict[str, str], ids: Sequence[str]) -> Dict[str, dict]:
    return json.loads(run(S.live_argv("bob", ids), env).stdout)["Jobs"]


def poll(env: Dict[str, str], ids: Sequence[str], sched: PbsProScheduler = S) -> Dict[Optional[int], str]:
    return states(sched.parse_live(run(sched.live_argv("bob", ids), env)))


def keys_of(name: str, jid: str) -> List[str]:
    return list(raw_jobs(OPENPBS / name)[jid])


def test_fake_array_lifecycle(tmp_path: Path, fake: Dict[str, str]) -> None:
    sid = submit(tmp_path, fake, "#PBS -J 0-3%2\n")
    assert sid == "0[].vm"
    assert fakepbs.calls()[0] == ["qsub", str(tmp_path / "job.sh")]
    assert poll(fake, [sid]) == {i: PENDING for i in range(4)}
    fakepbs.set_state(sid, 0, "R")
    fakepbs.set_state(sid, 1, "done", 0)
    fakepbs.set_state(sid, 2, "done", -29)
    assert poll(fake, [sid]) == {0: RUNNING, 1: COMPLETED, 2: TIMEOUT, 3: PENDING}
    S.parse_cancel(run(S.cancel_argv([sid]), fake))
    assert poll(fake, [sid]) == {i: CANCELLED for i in range(4)}
    # Without job history the finished array is simply gone: rc 35, no records, no error.
    result = run(PbsProScheduler(history=False).live_argv("bob", [sid]), fake)
    assert result.returncode == 35 and PbsProScheduler(history=False).parse_live(result) == []


def test_fake_json_has_the_captured_shape(tmp_path: Path, fake: Dict[str, str]) -> None:
    sid = submit(tmp_path, fake, "#PBS -J 0-5\n")
    fakepbs.set_state(sid, 0, "R")
    fakepbs.set_state(sid, 1, "R")
    jobs = fake_jobs(fake, [sid])
    assert list(jobs["0[].vm"]) == keys_of("a_t_json.txt", "0[].vm")
    assert list(jobs["0[0].vm"]) == keys_of("a_t_json.txt", "0[0].vm")
    assert list(jobs["0[2].vm"]) == keys_of("a_t_json.txt", "0[2].vm")
    fakepbs.set_state(sid, 0, "done", 0)
    jobs = fake_jobs(fake, [sid])
    assert list(jobs["0[0].vm"]) == keys_of("b_sub0_xjson_finished.txt", "0[0].vm")
    assert list(jobs["0[].vm"]) == keys_of("b_parent_json_mid.txt", "0[].vm")
    for i in range(1, 6):
        fakepbs.set_state(sid, i, "R")
        fakepbs.set_state(sid, i, "done", 0)
    jobs = fake_jobs(fake, [sid])
    assert list(jobs["0[].vm"]) == keys_of("c_array_xtjson_done.txt", "0[].vm")
    assert list(jobs["0[5].vm"]) == keys_of("c_array_xtjson_done.txt", "0[5].vm")


def test_fake_qdel_and_throttle_shapes(tmp_path: Path, fake: Dict[str, str]) -> None:
    sid = submit(tmp_path, fake, "#PBS -J 1-4\n")
    fakepbs.set_state(sid, 1, "R")
    fakepbs.set_state(sid, 1, "done", 0)
    fakepbs.set_state(sid, 2, "R")
    fakepbs.set_state(sid, 3, "R")
    run(S.cancel_argv([sid]), fake)
    jobs = fake_jobs(fake, [sid])
    assert list(jobs["0[].vm"]) == keys_of("d_array_xtjson_after_qdel.txt", "1[].vm")
    assert list(jobs["0[1].vm"]) == keys_of("d_array_xtjson_after_qdel.txt", "1[1].vm")
    assert list(jobs["0[2].vm"]) == keys_of("d_array_xtjson_after_qdel.txt", "1[2].vm")
    assert (jobs["0[1].vm"]["comment"], jobs["0[1].vm"]["Exit_status"]) == ("Subjob finished", 1)
    held = submit(tmp_path, fake, "#PBS -J 0-9%0\n")
    jobs = fake_jobs(fake, [held])
    assert list(jobs[held]) == keys_of("f_parent_Q_json_maxrun0.txt", "5[].vm")


def test_fake_refusals(tmp_path: Path, fake: Dict[str, str]) -> None:
    with pytest.raises(SchedulerError) as err:
        submit(tmp_path, fake, "#PBS -J 5\n")
    assert err.value.kind == "rejected"
    with pytest.raises(SchedulerError) as err:
        submit(tmp_path, fake, "#PBS -t 0-5\n")  # a Torque directive on PBS Pro
    assert err.value.kind == "rejected"
    limited = dict(fake, FAKE_PBS_MAX_QUEUED="3")
    with pytest.raises(SchedulerError) as err:
        submit(tmp_path, limited, "#PBS -J 0-5\n")
    assert err.value.kind == "limit"
    assert submit(tmp_path, limited, "") == "3.vm"  # refused qsubs still used up 0, 1 and 2
    down = dict(fake, FAKE_PBS_DOWN="1")
    for call in (lambda: submit(tmp_path, down, ""), lambda: S.parse_live(run(S.live_argv("bob", ["3.vm"]), down))):
        with pytest.raises(SchedulerError) as err:
            call()
        assert err.value.kind == "transient"


def test_fake_plain_job_and_limits(tmp_path: Path, fake: Dict[str, str]) -> None:
    assert S.parse_live(run(S.live_argv("bob", []), fake)) == []
    sid = submit(tmp_path, fake, "")
    assert sid == "0.vm"
    assert [r.task_id for r in S.parse_live(run(S.live_argv("bob", []), fake))] == ["0.vm"]
    assert S.parse_lookup(run(S.lookup_argv("bob", "sweep-g0-1"), fake)) == ["0.vm"]
    assert S.parse_lookup(run(S.lookup_argv("bob", "other"), fake)) == []
    assert poll(fake, [sid, "99[].vm"]) == {None: PENDING}
    fakepbs.set_state(sid, None, "R")
    fakepbs.set_state(sid, None, "F", 1)
    assert poll(fake, [sid]) == {None: FAILED}
    env = dict(fake, FAKE_PBS_MAX_QUEUED="40")
    limits = S.parse_limits([run(argv, env) for argv in S.limits_argvs("bob", "workq")])
    assert (limits.max_queued, limits.max_array_size, limits.throttle_supported) == (40, 10000, True)
    assert S.parse_version(run(S.version_argv(), env)) == fakepbs.PBS_VERSION


@pytest.mark.parametrize("damage", ["truncated", "brace"])
def test_json_beyond_repair_changes_nothing(damage: str) -> None:
    text = captures.read(OPENPBS / "a_t_json.txt")
    if damage == "truncated":  # qstat killed mid-write: jobs after the cut would silently vanish
        broken = text[: text.index('"0[3].vm":{') + 200]
    else:  # a job's opening line mangled: its attributes would land in the wrong place
        broken = text.replace('"0[0].vm":{', '"0[0].vm":{{', 1)
    with pytest.raises(SchedulerError) as err:
        S.parse_live(CommandResult(["qstat"], 0, broken, ""))
    assert err.value.kind == "transient"
