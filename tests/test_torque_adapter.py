"""Torque adapter: every captured Torque output under tests/fixtures, plus the argv builders and fakes."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
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
from hpc_sweep.schedulers.pbs_family import parse_qstat_f_text, submission_key
from hpc_sweep.schedulers.torque import TorqueScheduler, parse_qstat_xml, submission_name, torque_state

FAKES = Path(__file__).resolve().parent / "fakes"
sys.path.insert(0, str(FAKES))

import captures  # noqa: E402
import fakepbs  # noqa: E402

TORQUE = captures.fixture_folder("captured-elsewhere", "torque")

T = TorqueScheduler()


def live(path: Path) -> List[TaskRecord]:
    return T.parse_live(captures.stdout_result(path))


def by_id(records: Sequence[TaskRecord]) -> Dict[str, TaskRecord]:
    out = {r.task_id: r for r in records}
    assert len(out) == len(records)
    return out


def expect_error(kind: str, call: Callable[[], object]) -> SchedulerError:
    with pytest.raises(SchedulerError) as err:
        call()
    assert err.value.kind == kind, err.value.message
    return err.value


# ---------------------------------------------------------------------------------------------------------
# One check per captured file
# ---------------------------------------------------------------------------------------------------------

CHECKS: Dict[str, Callable[[Path], None]] = {}


def check(*names: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(fn: Callable[[Path], None]) -> Callable[[Path], None]:
        for name in names:
            CHECKS[name] = fn
        return fn
    return register


# The cluster-shape captures are checked beside their parsers (issue #15).
from test_cluster_shape import TORQUE_CAPTURE_CHECKS  # noqa: E402

CHECKS.update(TORQUE_CAPTURE_CHECKS)


@check("qtop_ral_torque_qstat_default_excerpt_R_Q_W.txt", "issue_cbio278_qstat_u_R_altformat.txt",
       "ucsf_tipcc_qstat_n1_u_R_altformat.txt", "ucsf_tipcc_qstat_t_array_Q_H_altformat.txt")
def _(path: Path) -> None:
    # Tabular layouts truncate ids: the adapter refuses them, but their states must all map.
    expect_error("transient", lambda: live(path))
    rows = captures.table_rows(path)
    assert rows and all(torque_state(letter) in (PENDING, RUNNING) for _jid, letter in rows)
    if "array_Q_H" in path.name:
        # Subjobs over the %2 slot limit show as H: still pending.
        assert {letter for _jid, letter in rows} == {"Q", "H"}


@check("aiida_ichec_2015_qstat_f_C_exit_status.txt")
def _(path: Path) -> None:
    recs = by_id(live(path))
    assert {jid: r.state for jid, r in recs.items()} == {
        "549159": PENDING, "555716": RUNNING, "556491": RUNNING, "546437": CANCELLED, "547637": PENDING,
        "547683": PENDING, "549004": PENDING, "549005": PENDING, "549008": PENDING, "543984": CANCELLED}
    assert recs["546437"].exit_code == 271 and recs["543984"].exit_code == 271
    assert recs["549159"].reason == "held (Hold_Types=s)"
    assert recs["555716"].start == "2015-06-28T23:20:51"
    # The multi-line sched_hint (unindented lines, blank lines) does not swallow the attributes after it.
    attrs = parse_qstat_f_text(captures.read(path))["543984"]
    assert attrs["exit_status"] == "271" and attrs["start_count"] == "1"
    assert "*** end error output" in attrs["sched_hint"]


@check("bateuph_dkfz_torque_qstat_x_C_exit0_sched_hint.txt", "boliqq07_torque6_qstat_x_C_exit0.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.state, rec.raw_state, rec.exit_code, rec.index) == (COMPLETED, "C", 0, None)
    assert rec.start and rec.end and rec.end >= rec.start and rec.host


@check("bateuph_dkfz_torque_qstat_x_Q.txt", "oscmachete_osc_opt_torque_qstat_x_Q.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.state, rec.raw_state, rec.exit_code, rec.start) == (PENDING, "Q", None, None)


@check("boliqq07_torque6_qstat_x_xmldecl_R_Q.txt")
def _(path: Path) -> None:
    recs = by_id(live(path))
    assert {jid: r.state for jid, r in recs.items()} == {"72.c0": RUNNING, "73.c0": PENDING}
    assert recs["73.c0"].reason == "Not Running: Not enough of the right type of nodes are available"
    assert (recs["72.c0"].host, recs["72.c0"].elapsed_s) == ("c0", 177.0)


@check("bpipe_mcri_torque6_qstat_x_C_exit1.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.task_id, rec.state, rec.exit_code) == ("1000", FAILED, 1)


@check("bpipe_mcri_torque6_qstat_x_stderr_unknown_job_id_error.txt", "gc3pie_qstat_err_unknown_job_id.txt")
def _(path: Path) -> None:
    assert T.parse_live(captures.stderr_result(path, 153)) == []


@check("buildtest_adaptive_torque7_qstat_f_C_exit0.txt")
def _(path: Path) -> None:
    (rec,) = live(path)
    assert (rec.state, rec.exit_code, rec.host) == (COMPLETED, 0, "ac-d160-0-0")
    assert (rec.start, rec.end) == ("2024-03-25T17:42:32", "2024-03-25T17:42:38")
    attrs = parse_qstat_f_text(captures.read(path))["40680075.e4spro-cluster"]
    assert attrs["init_work_dir"].endswith("/hostname_test/b10fea47/stage")  # 8-space continuation


@check("fyrd_stanford_torque6_qstat_x_array_R_Q_C.txt")
def _(path: Path) -> None:
    recs = by_id(live(path))
    assert {jid: (r.index, r.state) for jid, r in recs.items()} == {
        "665199.superserver.stanford.edu": (None, RUNNING),
        "667999.superserver.stanford.edu": (None, PENDING),
        "673174.superserver.stanford.edu": (None, COMPLETED),
        "673175[19].fruster.stanford.edu": (19, COMPLETED),
        "673175[20].fruster.stanford.edu": (20, COMPLETED)}
    # The running job still carries exit_status -3 from a requeued run: not reported as its exit.
    assert recs["665199.superserver.stanford.edu"].exit_code is None
    sub = recs["673175[19].fruster.stanford.edu"]
    # Torque calls the subjob "t.sh-19"; the record carries the submission's name for reconciling by name.
    assert parse_qstat_xml(captures.read(path))[sub.task_id]["Job_Name"] == "t.sh-19"
    assert sub.name == "t.sh" == submission_name("t.sh-19", 19)
    # The parent and its subjobs spell the server differently in this capture: match by submission_key.
    assert submission_key(sub.submission_id) == submission_key("673175[].superserver.stanford.edu")


@check("gc3pie_qdel_err_unauthorized.txt", "ucsf_tipcc_qdel_all_err_unauthorized.txt")
def _(path: Path) -> None:
    expect_error("rejected", lambda: T.parse_cancel(captures.stderr_result(path, 159, ("qdel",))))


@check("ucsf_tipcc_qdel_err_could_not_connect_to_mom.txt")
def _(path: Path) -> None:
    expect_error("transient", lambda: T.parse_cancel(captures.stderr_result(path, 1, ("qdel",))))


@check("gc3pie_qsub_err_acl_rejected.txt", "issue_juicer105_qsub_err_illegal_dependency_usage.txt",
       "issue_rp340_qsub_err_submit_filter.txt")
def _(path: Path) -> None:
    err = expect_error("rejected", lambda: T.parse_submit(captures.stderr_result(path, 159, ("qsub",))))
    assert err.message == captures.read(path).strip()


@check("gc3pie_qsub_err_exceeds_queue_limits.txt", "issue_cbio93_qsub_submit_error_max_mem.txt",
       "issue_e3sm1318_qsub_err_max_walltime.txt", "issue_rp58_qsub_err_cannot_locate_feasible_nodes.txt")
def _(path: Path) -> None:
    # PBSE_EXCQRESC: the REQUEST exceeds a queue maximum (mem, walltime, nodes). Waiting will not help, so
    # this is "rejected" (the user must change the resources), not "limit".
    assert "exceeds queue resource limits" in captures.read(path)
    expect_error("rejected", lambda: T.parse_submit(captures.stderr_result(path, 190, ("qsub",))))


@check("issue_juicer105_qsub_err_trqauthd.txt")
def _(path: Path) -> None:
    expect_error("transient", lambda: T.parse_submit(captures.stderr_result(path, 1, ("qsub",))))


@check("issue_cbio178_qstat_err_cannot_connect.txt")
def _(path: Path) -> None:
    expect_error("transient", lambda: T.parse_live(captures.stderr_result(path, 1)))


@check("ucsf_tipcc_qsub_array_jobid.txt")
def _(path: Path) -> None:
    assert T.parse_submit(captures.stdout_result(path, ("qsub",))) == "1816232[].cclc01.som.ucsf.edu"


def _all_captures() -> List[str]:
    return captures.fixture_files(TORQUE)


def test_every_capture_has_a_check() -> None:
    assert set(_all_captures()) == set(CHECKS)


@pytest.mark.parametrize("name", _all_captures())
def test_capture(name: str) -> None:
    CHECKS[name](TORQUE / name)


# ---------------------------------------------------------------------------------------------------------
# XML robustness
# ---------------------------------------------------------------------------------------------------------


def test_variable_list_may_hold_anything() -> None:
    text = captures.read(TORQUE / "boliqq07_torque6_qstat_x_C_exit0.txt")
    broken = text.replace("PBS_O_QUEUE=master,", "PBS_O_QUEUE=master,BASH_FUNC_f%%=() { a <b && c; },", 1)
    with pytest.raises(ET.ParseError):
        ET.fromstring(broken)
    (rec,) = T.parse_live(CommandResult(["qstat"], 0, broken, ""))
    assert (rec.state, rec.exit_code) == (COMPLETED, 0)


def test_unescaped_text_outside_variable_list_falls_back_to_tag_reading() -> None:
    text = captures.read(TORQUE / "boliqq07_torque6_qstat_x_xmldecl_R_Q.txt")
    broken = text.replace("<submit_args>pbs.run</submit_args>", "<submit_args>pbs.run -v A=1&B<2</submit_args>")
    jobs = parse_qstat_xml(broken)
    assert {jid: a["job_state"] for jid, a in jobs.items()} == {"72.c0": "R", "73.c0": "Q"}
    assert jobs["72.c0"]["resources_used.walltime"] == "00:02:57"


def test_empty_output_and_failures() -> None:
    assert T.parse_live(CommandResult(["qstat", "-x", "-t"], 0, "", "")) == []
    expect_error("transient", lambda: T.parse_live(CommandResult(["qstat"], 1, "", "")))
    expect_error("transient", lambda: T.parse_live(CommandResult(["qstat"], 2, "", "qstat: some new failure\n")))
    expect_error("transient", lambda: T.parse_live(CommandResult(["qstat"], 0, "not xml\n", "")))


# ---------------------------------------------------------------------------------------------------------
# State mapping
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("letter,exit_status,expected", [
    ("Q", None, PENDING), ("H", None, PENDING), ("W", None, PENDING), ("T", None, PENDING), ("S", None, PENDING),
    ("R", None, RUNNING), ("E", None, RUNNING), ("R", -3, RUNNING),
    ("C", 0, COMPLETED), ("C", 1, FAILED), ("C", -11, TIMEOUT), ("C", -12, TIMEOUT), ("C", -10, OOM),
    ("C", 271, CANCELLED), ("C", 265, CANCELLED), ("C", 143, CANCELLED), ("C", None, CANCELLED),
    ("C", -29, FAILED), ("B", None, UNKNOWN),
])
def test_state_mapping(letter: str, exit_status: Optional[int], expected: str) -> None:
    assert torque_state(letter, exit_status) == expected


# ---------------------------------------------------------------------------------------------------------
# argv builders
# ---------------------------------------------------------------------------------------------------------

def test_identity_and_argv() -> None:
    assert (T.name, T.index_env, T.task_id_env) == ("torque", "PBS_ARRAYID", "PBS_JOBID")
    assert T.submit_argv(SubmitSpec("/s/j.sh", "n", "/s", (0, 1))) == ["qsub", "/s/j.sh"]
    assert T.live_argv("bob", ["1[].h"]) == ["qstat", "-x", "-t"]
    assert T.limits_argvs("bob", "batch") == [["qmgr", "-c", "list server"], ["qstat", "-Qf", "batch"]]
    assert T.version_argv() == ["qstat", "--version"]


@pytest.mark.parametrize("indices,throttle,expected", [
    (range(100), 5, "0-99%5"), ([1, 10] + list(range(50, 101)), None, "1,10,50-100"), ([7], None, "7"),
    ([0, 2, 4], None, "0,2,4"), ([3, 1, 2], 1, "1-3%1"),
])
def test_array_spec(indices: Sequence[int], throttle: Optional[int], expected: str) -> None:
    assert T.array_spec(indices, throttle) == expected


@pytest.mark.parametrize("indices,throttle", [([], None), ([1, 1], None), ([0, 1], 0), ([-2], None)])
def test_array_spec_refuses(indices: Sequence[int], throttle: Optional[int]) -> None:
    with pytest.raises(ValueError):
        T.array_spec(indices, throttle)


def test_cancel_argv_takes_exact_ids_only() -> None:
    assert T.cancel_argv(["5[].h", "6[2].h"]) == ["qdel", "5[].h", "6[2].h"]
    for bad in ([], ["all"], ["ALL"], ["-p", "5"]):
        with pytest.raises(ValueError):
            T.cancel_argv(bad)


@pytest.mark.parametrize("stderr,kind", [
    ("qsub: submit error (Maximum number of jobs already in queue for user MSG=total number of jobs in queue "
     "exceeds the queue limit: user bob@h, queue batch)\n", "limit"),
    # Constructed (no capture): a detail naming the count-limit attribute decides, whatever the headline.
    ("qsub: submit error (Job violates queue and/or server resource limits MSG=max_user_queuable exceeded)\n",
     "limit"),
    ("qsub: cannot connect to server h (errno=111) Connection refused\n", "transient"),
])
def test_parse_submit_failures(stderr: str, kind: str) -> None:
    expect_error(kind, lambda: T.parse_submit(CommandResult(["qsub"], 1, "", stderr)))


def test_parse_limits() -> None:
    # qmgr prints TAB-indented "key = value" lines; qstat -Qf the usual 4-space ones (documented syntax).
    server = "#\n# Set server attributes.\nServer h\n\tserver_state = Active\n\tmax_user_queuable = 500\n" \
             "\tmax_job_array_size = 2000\n"
    queue = "Queue: batch\n    queue_type = Execution\n    max_user_queuable = 200\n    max_queuable = 1000\n"
    results = [CommandResult(a, 0, t, "") for a, t in zip(T.limits_argvs("bob", "batch"), (server, queue))]
    limits = T.parse_limits(results)
    assert (limits.max_queued, limits.max_array_size) == (200, 2000)
    assert T.parse_limits([]).max_queued is None


# ---------------------------------------------------------------------------------------------------------
# The stand-in commands in Torque mode
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    env = fakepbs.environ(tmp_path, "torque")
    for key in ("FAKE_PBS_STATE", "FAKE_PBS_LOG", "FAKE_PBS_FLAVOR"):
        monkeypatch.setenv(key, env[key])
    return env


def run(argv: Sequence[str], env: Dict[str, str]) -> CommandResult:
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=60)
    return CommandResult(list(argv), proc.returncode, proc.stdout, proc.stderr)


def submit(tmp_path: Path, env: Dict[str, str], directives: str) -> str:
    path = tmp_path / "job.sh"
    path.write_text("#!/bin/bash\n#PBS -N sweep-g0-1\n" + directives + "#PBS -l nodes=1:ppn=1,walltime=1:00:00\n"
                    "echo $PBS_ARRAYID\n")
    return T.parse_submit(run(T.submit_argv(SubmitSpec(str(path), "sweep-g0-1", str(tmp_path))), env))


def poll(env: Dict[str, str]) -> Dict[Optional[int], str]:
    return {r.index: r.state for r in T.parse_live(run(T.live_argv("bob"), env))}


def tags(xml_job: str) -> List[str]:
    return [child.tag for child in ET.fromstring(xml_job)]


def capture_jobs(name: str) -> Dict[str, str]:
    text = re.sub(r"<Variable_List>.*?</Variable_List>", "<Variable_List/>", captures.read(TORQUE / name), flags=re.S)
    return {re.search(r"<Job_Id>(.*?)</Job_Id>", j).group(1): j for j in re.findall(r"<Job>.*?</Job>", text)}


def fake_jobs(env: Dict[str, str]) -> Dict[str, str]:
    text = re.sub(r"<Variable_List>.*?</Variable_List>", "<Variable_List/>", run(["qstat", "-x", "-t"], env).stdout)
    return {re.search(r"<Job_Id>(.*?)</Job_Id>", j).group(1): j for j in re.findall(r"<Job>.*?</Job>", text)}


def test_fake_torque_lifecycle(tmp_path: Path, fake: Dict[str, str]) -> None:
    assert T.parse_live(run(T.live_argv("bob"), fake)) == []  # empty queue: Torque prints nothing
    sid = submit(tmp_path, fake, "#PBS -t 0-3%2\n")
    assert sid == "0[].vm"
    assert poll(fake) == {i: PENDING for i in range(4)}
    fakepbs.set_state(sid, 0, "R")
    fakepbs.set_state(sid, 1, "C", 0)
    fakepbs.set_state(sid, 2, "C", -11)
    assert poll(fake) == {0: RUNNING, 1: COMPLETED, 2: TIMEOUT, 3: PENDING}
    T.parse_cancel(run(T.cancel_argv([sid]), fake))
    assert poll(fake) == {0: CANCELLED, 1: COMPLETED, 2: TIMEOUT, 3: CANCELLED}
    gone = dict(fake, FAKE_TORQUE_KEEP_COMPLETED="0")  # the real default: completed jobs vanish
    assert poll(gone) == {}


def test_fake_torque_slot_limit_and_errors(tmp_path: Path, fake: Dict[str, str]) -> None:
    sid = submit(tmp_path, fake, "#PBS -t 1,3,5-7%2\n")
    recs = T.parse_live(run(T.live_argv("bob"), fake))
    assert {r.index: r.raw_state for r in recs} == {1: "Q", 3: "Q", 5: "H", 6: "H", 7: "H"}
    assert {r.name for r in recs} == {"sweep-g0-1"}
    assert {r.submission_id for r in recs} == {sid}
    expect_error("rejected", lambda: submit(tmp_path, fake, "#PBS -J 0-3\n"))  # PBS Pro syntax on Torque
    expect_error("limit", lambda: submit(tmp_path, dict(fake, FAKE_PBS_MAX_QUEUED="6"), "#PBS -t 0-3\n"))
    down = dict(fake, FAKE_PBS_DOWN="1")
    expect_error("transient", lambda: T.parse_live(run(T.live_argv("bob"), down)))
    expect_error("transient", lambda: submit(tmp_path, down, ""))


def test_fake_torque_limits(fake: Dict[str, str]) -> None:
    (server,) = T.limits_argvs("bob")  # qmgr -c 'list server'; no queue asked for
    assert T.parse_limits([run(server, fake)]).max_queued is None
    assert T.parse_limits([run(server, dict(fake, FAKE_PBS_MAX_QUEUED="6"))]).max_queued == 6


def test_fake_torque_xml_has_the_captured_shape(tmp_path: Path, fake: Dict[str, str]) -> None:
    sid = submit(tmp_path, fake, "#PBS -t 1-2\n")
    for i in (1, 2):
        fakepbs.set_state(sid, i, "R")
        fakepbs.set_state(sid, i, "C", 0)
    got = fake_jobs(fake)
    ref = capture_jobs("fyrd_stanford_torque6_qstat_x_array_R_Q_C.txt")
    assert tags(got["0[].vm"]) == tags(ref["673175[].superserver.stanford.edu"])
    assert tags(got["0[1].vm"]) == tags(ref["673175[19].fruster.stanford.edu"])
    assert run(["qstat", "-x", "-t"], fake).stdout.startswith('<?xml version="1.0"?>\n<Data><Job>')
