"""Exactly once, and only true states, under generated fault schedules (issue #12).

A hypothesis state machine drives hpc-sweep's CLI (submit, cron polls, ``status --refresh``, cancel, resubmit, a
poll while another process holds the lock) against the stand-in Slurm of tests/standin/, which runs each task's
real job script under bash and can be told, between any two steps, to accept a submission and then time out,
refuse at the cap, time out without queuing, fail or hang its lookups, drop or disable accounting, hide exit
markers, freeze and thaw, fail a node, let time pass; and any hpc-sweep command may be killed at its N-th fault
point (``*@N``). Observed only through ``status --format json``, the stand-in's own ledger and the files (plus,
at the end, which submissions the state database still holds open).

After every step:
- no (config, attempt) ever started twice (the trainer's ledger);
- no (config, attempt) was ever in two tasks the stand-in accepted;
- every task the stand-in accepted is known to status (its config shows that attempt or later, or is pending,
  held for its open submission) unless it was cancelled;
- no write to the state database without the writers' lock (checked against the kernel's lock table);
- no internal error, no argv the stand-in does not model, the user's hand-made job never touched;
- after a poll that ran to its end, no config pending or running whose exit marker is in sight; after a cancel
  that said it was done, none of its configs queued or running.

At the end, once faults stop (controller up, lookups and accounting answering, markers visible, tasks allowed to
finish, cron polls until nothing changes): every config is in a final state, no submission is left open, and
status equals what the stand-in ran: completed iff the last attempt's command ran whole with exit 0, the same
attempt number and job id as the stand-in's last accepted task of the config, cancelled configs not running,
timed-out and failed nodes resumed up to max_retries.

Two machines: ``BasicFaults`` (kills, cap refusals, every way a task ends, resumes, cron overlap, time) and
``ExactlyOnce``, which adds everything else (the faults of #12: timed-out and lost sbatch, failing lookups, frozen
controller, delayed markers, accounting gone).

Profiles: the default (CI) runs 30 schedules of 25 steps per machine with a fixed seed and prints a failing one
as found, without shrinking it, about a minute in all;
``HYPOTHESIS_PROFILE=deep`` runs 400 random schedules of 60 steps per machine and shrinks failures (half an hour
to an hour): ``HYPOTHESIS_PROFILE=deep .venv/bin/python -m pytest -p no:cacheprovider
--hypothesis-show-statistics tests/test_model_exactly_once.py``. A failure prints its steps (``state.submit(kill=10)``
...): paste them into ``with Schedule(ExactlyOnce) as state:`` (without the ``every_step``/``teardown`` lines) to
keep it as a plain test; the schedules found so far are at the end of this file, each naming where the
code before its fix failed ("Failed at").
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import event as hypothesis_event
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from standin.harness import ModelSweep

from hpc_sweep.submit.queries import LIMITS_CACHE_S

FINAL_STATES = {"completed", "failed", "timeout", "oom", "cancelled", "node_fail", "preempted", "lost", "stopped"}
OPEN_STATES = {"generated", "waiting", "pending", "running"}
EXPECTED = {"COMPLETED": "completed", "FAILED": "failed", "TIMEOUT": "timeout", "NODE_FAIL": "node_fail",
            "CANCELLED": "cancelled"}
MAX_RETRIES = 1
SETTLE_ROUNDS = 30

KILL = st.one_of(st.none(), st.integers(1, 20))  # die at the N-th fault point of the command (submit has ~14)
# CI: fixed seed, and a failing schedule is printed as found (shrinking one takes up to five minutes: run the
# deep profile, which shrinks, to get it short).
PROFILES = {
    "ci": dict(max_examples=30, stateful_step_count=25, derandomize=True,
               phases=[Phase.explicit, Phase.reuse, Phase.generate]),
    "deep": dict(max_examples=400, stateful_step_count=60),
}
PROFILE = PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), PROFILES["ci"])


def event(text: str) -> None:
    """Counted in --hypothesis-show-statistics; nothing when a schedule is replayed as a plain test."""
    if currently_in_test_context():
        hypothesis_event(text)


def step(method):
    """A rule: a failure inside it marks the run broken, so teardown only cleans up (no final phase)."""
    @functools.wraps(method)
    def wrapped(self, **kwargs):
        self.broken = True
        method(self, **kwargs)
        self.broken = False
    return wrapped


class BasicFaults(RuleBasedStateMachine):
    """What passes before the #12 protocol fix: kills at any fault point of submit, cron polls and resubmit,
    refusals at the cap, tasks ending in every way (node failures included) and being resumed, cron overlap,
    time passing, a site without accounting. :class:`ExactlyOnce` adds the rest. Accepted tasks are compared
    with status once things settled, not after every step (today the configs of a submission whose outcome is
    open show waiting or generated)."""

    KNOWN_EVERY_STEP = False
    EARLY_STOP = False

    def __init__(self):
        super().__init__()
        self.sweep: Optional[ModelSweep] = None
        self.tmp: Optional[Path] = None
        self.broken = False
        self.poll_finished = False  # the last step was a poll that ran to its end
        self.cancelled_by_user: dict = {}  # config -> number of tasks accepted when a cancel naming it ran

    # -- the sweep and its site ----------------------------------------------------------------------------------
    @initialize(configs=st.integers(2, 4), cap=st.sampled_from([None, 2, 3]), accounting=st.booleans(),
                throttle=st.sampled_from([None, 1]), foreign_job=st.booleans())
    @step
    def site(self, configs, cap, accounting, throttle, foreign_job):
        self.tmp = Path(tempfile.mkdtemp(prefix="hpcs-model-"))
        self.sweep = ModelSweep(self.tmp, configs=configs, cap=cap, accounting=accounting, throttle=throttle,
                                foreign_job=foreign_job, max_retries=MAX_RETRIES, early_stop=self.EARLY_STOP)

    @property
    def slurm(self):
        return self.sweep.slurm

    def tool(self, *args: str, kill: Union[int, str, None] = None):
        refused = self.slurm.refused
        done = self.sweep.cli(args[0], str(self.sweep.root), *args[1:], kill_at=kill)
        if done.killed_at:
            event(f"{args[0]} killed at {done.killed_at}")
        if self.slurm.refused > refused:
            event("sbatch refused at the cap")
        return done

    # -- hpc-sweep commands ----------------------------------------------------------------------------------
    @rule(kill=KILL)
    @step
    def submit(self, kill):
        self.tool("submit", kill=kill)

    @rule(kill=KILL, force=st.booleans())
    @step
    def cron_poll(self, kill, force):
        done = self.tool("poll", *(["--force"] if force else []), kill=kill)
        self.poll_finished = done.rc == 0

    @rule(kill=KILL, which=st.integers(0, 3), fresh=st.booleans())
    @step
    def resubmit(self, kill, which, fresh):
        name = self.sweep.names[which % len(self.sweep.names)]
        self.tool("resubmit", name, *(["--fresh"] if fresh else []), kill=kill)

    # Rules are drawn most often in hypothesis's order (fewest arguments, then by name): these two start a
    # process each, hence an argument and a name that put them last.
    @rule(force=st.booleans())
    @step
    def while_locked_poll(self, force):
        """A cron poll while another hpc-sweep (a real second process) holds the writers' lock: it exits 0 and
        does nothing."""
        calls = len(self.slurm.calls)
        with self.sweep.lock_holder():
            done = self.tool("poll", *(["--force"] if force else []))
        assert done.rc == 0, f"poll while another process held the lock: rc {done.rc}: {done.err}"
        assert len(self.slurm.calls) == calls, \
            f"a poll that did not get the lock ran scheduler commands: {self.slurm.calls[calls:]}"

    # -- the cluster -----------------------------------------------------------------------------------------
    @rule(count=st.integers(1, 3))
    @step
    def tasks_start(self, count):
        self.slurm.start_pending(count)

    @precondition(lambda self: self.sweep is not None and self.slurm.running())
    @rule(pick=st.integers(0, 7), outcome=st.sampled_from(["exit0", "exit0", "exit1", "timeout", "node_fail"]))
    @step
    def task_ends(self, pick, outcome):
        running = self.slurm.running()
        if outcome == "timeout" and self.slurm.frozen:
            outcome = "node_fail"  # a frozen controller enforces no time limit
        event(f"task ends: {outcome}")
        self.slurm.finish(running[pick % len(running)], outcome)

    @rule(seconds=st.sampled_from([60, 400, 700]))
    @step
    def time_passes(self, seconds):
        self.sweep.clock.advance(seconds)

    @rule(cap=st.sampled_from([1, 2, 3, None]))
    @step
    def cap_changes(self, cap):
        """The site changes the user's MaxSubmitJobs (hpc-sweep keeps the limits it read for an hour: until then
        sbatch may refuse at the cap); back to the site's own once the faults stop."""
        self.slurm.cap = cap

    # -- after every step ------------------------------------------------------------------------------------
    @invariant()
    def every_step(self):
        if self.sweep is None:
            return
        self.broken = True
        check_every_step(self.sweep, self.KNOWN_EVERY_STEP)
        if self.EARLY_STOP:
            check_stops(self.sweep)
        if self.poll_finished:
            check_exit_markers_end_runs(self.sweep)
        self.poll_finished = False
        self.broken = False

    # -- the end ----------------------------------------------------------------------------------------------
    def teardown(self):
        try:
            if self.sweep is not None and not self.broken:
                check_settled(self.sweep, self.cancelled_by_user, settle(self.sweep))
        finally:
            if self.sweep is not None:
                self.sweep.close()
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)


class ExactlyOnce(BasicFaults):
    """Every fault the stand-in can show, every command: adds sbatch and squeue time-outs and failures, frozen
    controllers (#12 item 2), status --refresh (3), dropped or failing accounting and hidden exit markers (5, 6),
    cancel (7); and accepted tasks are compared with status after every step."""

    KNOWN_EVERY_STEP = True

    @rule(kill=KILL)
    @step
    def status_refresh(self, kill):
        done = self.tool("status", "--refresh", kill=kill)
        self.poll_finished = done.rc == 0

    @rule(fmt=st.sampled_from(["table", "json"]))
    @step
    def while_locked_status_refresh(self, fmt):
        """status --refresh while another process holds the writers' lock (a cron poll running)."""
        with self.sweep.lock_holder():
            self.tool("status", "--refresh", "--format", fmt)

    @rule(kill=KILL, which=st.sets(st.integers(0, 3), max_size=2))
    @step
    def cancel(self, kill, which):
        names = sorted({self.sweep.names[i % len(self.sweep.names)] for i in which})  # none: cancel all
        done = self.tool("cancel", *names, "--yes", kill=kill)
        for name in names or self.sweep.names:  # asked for, whether it got done or was killed half-way
            self.cancelled_by_user[name] = len(self.slurm.accepted)
        if done.rc == 0:
            check_cancel_done(self.sweep, names or self.sweep.names)

    @rule(mode=st.sampled_from(["ok", "accept_timeout", "accept_killed", "lost_timeout"]))
    @step
    def sbatch_behaves(self, mode):
        self.slurm.sbatch_mode = mode

    @rule(mode=st.sampled_from(["ok", "fail", "hang", "flaky"]))
    @step
    def squeue_behaves(self, mode):
        self.slurm.squeue_mode = mode

    @rule(mode=st.sampled_from(["ok", "drop", "fail"]))
    @step
    def sacct_behaves(self, mode):
        self.slurm.sacct_mode = mode

    @precondition(lambda self: self.sweep is not None and not self.slurm.frozen)
    @rule(lands=st.booleans(), at_next_sbatch=st.booleans())
    @step
    def freeze(self, lands, at_next_sbatch):
        """The controller stops answering, now or as the next sbatch arrives; an sbatch sent meanwhile lands
        at the thaw (lands) or is lost."""
        if at_next_sbatch:
            self.slurm.freeze_at_sbatch = lands
        else:
            self.slurm.freeze(lands)

    @precondition(lambda self: self.sweep is not None and self.slurm.frozen)
    @rule()
    @step
    def thaw(self):
        self.slurm.thaw()

    @rule(hide=st.booleans())
    @step
    def nfs_delay(self, hide):
        """From now on exit markers stay out of sight (hide), or every hidden one appears (not hide)."""
        self.slurm.hide_exit_markers = hide
        if not hide:
            self.slurm.reveal_markers()


# ------------------------------------------------------------------------------------------------------------
# the checks


def check_every_step(sweep: ModelSweep, known: bool = True) -> None:
    """The invariants of the module docstring that hold after every step."""
    slurm = sweep.slurm
    assert not slurm.errors, f"the stand-in was sent argv it does not model: {slurm.errors}"
    internal = [o for o in sweep.outcomes if "internal error" in o.err]
    assert not internal, f"internal error: {internal[0].args}: {internal[0].err.strip()}"
    assert not sweep.audit.violations, f"state written without the writers' lock: {sweep.audit.violations[:3]}"
    runs = sweep.ws.ledger_lines()
    twice = _repeated((config, attempt) for config, attempt, _ in runs)
    assert not twice, f"(config, attempt) ran twice: {twice}; ledger {runs}"
    accepted = [(a.config, a.attempt) for a in slurm.accepted if a.config is not None]
    twice = _repeated(accepted)
    assert not twice, f"(config, attempt) submitted twice: {twice}; accepted {_accepted(slurm)}"
    if sweep.foreign is not None:
        touched = [i for i in slurm.scancelled_ids if i.split("_")[0] == sweep.foreign.job_id]
        assert not touched, f"scancel of the user's own hand-made job {touched}"
    if known:
        check_accepted_are_known(sweep)


def check_stops(sweep: ModelSweep) -> None:
    """[early_stop]: config001 (the best first epoch of all) is never stopped; a stopped config's last task was
    cancelled by the stand-in (its own task only: no other config of that array ended with it) after its first
    epoch, and its command did not run whole."""
    status = sweep.status()
    assert status["config001"]["state"] != "stopped", f"the best run was stopped: {status['config001']}"
    for name, shown in status.items():
        if shown["state"] != "stopped":
            continue
        assert shown["reason"].startswith("early stop: "), shown
        assert not sweep.ran_whole(name, shown["attempt"]), f"{name} is stopped but its command ran whole"
        task = [t for t in sweep.slurm.tasks() if t.task_id == shown["job_id"]]
        assert task and task[0].state == "CANCELLED", f"{name} is stopped; the stand-in has {task}"


def check_accepted_are_known(sweep: ModelSweep) -> None:
    slurm, status = sweep.slurm, sweep.status()
    for task in slurm.tasks():
        if task.config is None or task.scancelled:
            continue
        shown = status[task.config]
        known = shown["attempt"] >= task.attempt or shown["state"] in ("pending", "running")
        assert known, (f"{task.task_id} ({task.config} attempt {task.attempt}, {task.state}) was accepted, but "
                       f"status shows {task.config} {shown['state']} at attempt {shown['attempt']}")


def check_cancel_done(sweep: ModelSweep, names: list) -> None:
    """After a cancel that said it was done: none of these configs has a task queued or running."""
    for name in names:
        live = [t.task_id for t in sweep.slurm.tasks() if t.config == name and t.active]
        assert not live, f"cancel said done, but {name}'s tasks {live} are still queued or running"


def check_exit_markers_end_runs(sweep: ModelSweep) -> None:
    """After a poll that finished: no config is shown pending or running at an attempt whose job script wrote
    its exit marker, now in sight (the README: markers end runs, with the controller down too)."""
    status = sweep.status()
    for task in sweep.slurm.tasks():
        if task.config is None or not sweep.slurm.visible_exit_marker(task):
            continue
        shown = status[task.config]
        assert not (shown["attempt"] == task.attempt and shown["state"] in ("pending", "running")), \
            (f"{task.task_id} ({task.config} attempt {task.attempt}) ended and its exit marker is in sight, but "
             f"after a poll status still says {shown['state']}")


def settle(sweep: ModelSweep) -> Optional[str]:
    """Faults stop: the controller thaws, lookups and accounting answer, hidden markers appear, the cap is the
    site's again; then rounds of time passing, every task starting and ending with exit 0, and a cron poll,
    until two polls in a row find nothing to do or say. None then, else what the last poll said."""
    slurm = sweep.slurm
    slurm.cap = sweep.site_cap
    slurm.freeze_at_sbatch = None
    if slurm.frozen:
        slurm.thaw()
    slurm.sbatch_mode = slurm.squeue_mode = slurm.sacct_mode = "ok"
    slurm.hide_exit_markers = False
    slurm.reveal_markers()
    # hpc-sweep keeps the limits it read for LIMITS_CACHE_S: a cap lowered during the faults holds configs back
    # until then (polite to the scheduler, by design); the settling starts once that copy has expired.
    sweep.clock.advance(LIMITS_CACHE_S)
    quiet = 0
    for _ in range(SETTLE_ROUNDS):
        sweep.clock.advance(120)
        slurm.start_pending()
        for task in slurm.running():
            slurm.finish(task, "exit0")
        done = sweep.cli("poll", str(sweep.root))
        assert done.rc == 0, f"poll after the faults stopped: rc {done.rc}: {done.err}"
        busy = any(t.active for t in slurm.tasks()) or any(
            c["state"] in OPEN_STATES for c in sweep.status().values())
        quiet = quiet + 1 if not busy and not done.out.strip() else 0
        if quiet >= 2:
            return None
    return done.out


def check_settled(sweep: ModelSweep, cancelled_by_user: dict, still_saying: Optional[str] = None) -> None:
    slurm, status = sweep.slurm, sweep.status()
    for shown in status.values():
        event(f"ends {shown['state']} at attempt {shown['attempt']}")
    check_every_step(sweep)  # with accepted tasks known: the end is a step like any other
    stuck = {name: (c["state"], c["reason"]) for name, c in status.items() if c["state"] not in FINAL_STATES}
    assert not stuck, f"once the faults stopped, configs never reached a final state: {stuck}"
    assert not sweep.open_submissions(), f"submissions left open: {sweep.open_submissions()}"
    assert still_saying is None, f"polls never went quiet; after {SETTLE_ROUNDS} the last said {still_saying!r}"
    for name, shown in status.items():
        tasks = [t for t in slurm.tasks() if t.config == name]
        if not tasks:
            assert shown["state"] == "cancelled" and name in cancelled_by_user, \
                f"no task of {name} was ever accepted, but status says {shown['state']} ({shown['reason']})"
            continue
        last = max(tasks, key=lambda t: t.attempt)
        what = f"{name}: the stand-in's last task is {last.task_id} (attempt {last.attempt}, {last.state}), " \
               f"status says {shown['state']} at attempt {shown['attempt']} as {shown['job_id']}"
        assert (shown["attempt"], shown["job_id"]) == (last.attempt, last.task_id), what
        whole = sweep.ran_whole(name, last.attempt)
        assert (shown["state"] == "completed") == whole, \
            what + ("; its command ran whole" if whole else "; its command did not run whole")
        allowed = {EXPECTED[last.state]}
        if last.state == "NODE_FAIL" and not slurm.accounting:
            allowed.add("lost")  # no accounting, no exit marker: nobody can know more
        if cancelled_by_user.get(name, -1) >= _accepted_index(slurm, last) and not whole:
            allowed.add("cancelled")  # cancelled by the user after this task was accepted
        if last.state == "CANCELLED" and not whole and sweep.early_stop:
            allowed.add("stopped")  # [early_stop] cancelled its task (check_stops says it was a loser)
            if name not in cancelled_by_user:  # only a stop cancels: a poll killed around it must still say so
                allowed.discard("cancelled")
        assert shown["state"] in allowed, what
        if last.state in ("TIMEOUT", "NODE_FAIL") and shown["state"] not in ("cancelled", "lost"):
            assert last.attempt > MAX_RETRIES, what + f"; not resumed though max_retries is {MAX_RETRIES}"


def _accepted_index(slurm, task) -> int:
    """How many tasks had been accepted when ``task`` was (1-based)."""
    for i, accepted in enumerate(slurm.accepted, 1):
        if (accepted.job_id, accepted.index) == (task.array.job_id, task.index):
            return i
    raise AssertionError(f"{task.task_id} not in the stand-in's ledger")


def _repeated(items) -> list:
    seen, twice = set(), []
    for item in items:
        if item in seen:
            twice.append(item)
        seen.add(item)
    return twice


def _accepted(slurm) -> list:
    return [(f"{a.job_id}_{a.index}", a.config, a.attempt) for a in slurm.accepted if a.config is not None]


# ------------------------------------------------------------------------------------------------------------
# the generated schedules

_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True, **PROFILE)

TestBasicFaults = BasicFaults.TestCase
TestBasicFaults.settings = _SETTINGS

TestExactlyOnce = ExactlyOnce.TestCase
TestExactlyOnce.settings = _SETTINGS


class EarlyStops(BasicFaults):
    """BasicFaults on a sweep with [early_stop] (asha at epoch 1): polls stop losing runs through scancel of their
    own task while kills, refusals, resumes and resubmits go on; every invariant holds, and check_stops."""

    EARLY_STOP = True


TestEarlyStops = EarlyStops.TestCase
TestEarlyStops.settings = _SETTINGS


# ------------------------------------------------------------------------------------------------------------
# schedules found, kept as plain tests (steps as hypothesis prints them; every invariant after each step, the
# final phase at the end). On the code before the #12 protocol fix each fails at the invariant its docstring names.


class Schedule:
    """Runs rules of a machine one by one, the invariants after each, the final phase and checks at the end."""

    def __init__(self, machine_class, **flags):
        self.machine = type("Replayed", (machine_class,), {k.upper(): v for k, v in flags.items()})()

    def __getattr__(self, rule_name):
        def run(**arguments):
            getattr(self.machine, rule_name)(**arguments)
            self.machine.every_step()
        return run

    def __enter__(self) -> "Schedule":
        return self

    def __exit__(self, kind, *exc) -> None:
        self.machine.broken = self.machine.broken or kind is not None
        self.machine.teardown()


SBATCH_RETURNED = "after_submit"  # the fault point just after sbatch returned, before its answer is recorded


def test_timed_out_sbatch_with_failing_lookup_is_not_sent_again():
    """#12 item 2. sbatch queues the array, then times out; the lookup by name fails (every second squeue
    does); submit sends the same sbatch again, which is queued too, and records only one of them. Failed at:
    (config, attempt) submitted twice."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.sbatch_behaves(mode="accept_timeout")
        state.squeue_behaves(mode="flaky")
        state.submit(kill=None)


def test_frozen_controller_during_sbatch_does_not_queue_the_configs_again():
    """#12 item 2, as reproduced on the real cluster: slurmctld stops as sbatch starts and continues later; every
    sbatch sent meanwhile lands at the thaw. submit retried sbatch behind lookups that could not answer. Fails
    at: (config, attempt) submitted twice, at the thaw."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.freeze(lands=True, at_next_sbatch=True)
        state.submit(kill=None)
        state.thaw()


def test_refusal_after_a_timed_out_sbatch_is_no_proof_nothing_was_queued():
    """#12 item 2. The first sbatch is queued (filling the cap) and times out, the lookup fails, the retry is
    refused at the cap and taken as "nothing queued": the configs wait and a later poll submits them again.
    Failed at: (config, attempt) submitted twice (with accepted tasks compared to status only at the end)."""
    with Schedule(ExactlyOnce, known_every_step=False) as state:
        state.site(configs=2, cap=2, accounting=True, throttle=None, foreign_job=False)
        state.sbatch_behaves(mode="accept_timeout")
        state.squeue_behaves(mode="flaky")
        state.submit(kill=None)
        state.sbatch_behaves(mode="ok")
        state.squeue_behaves(mode="ok")
        state.tasks_start(count=2)
        state.task_ends(pick=0, outcome="exit0")
        state.task_ends(pick=0, outcome="exit0")
        state.cron_poll(kill=None, force=False)


def test_configs_of_a_submission_whose_outcome_is_open_show_pending():
    """The array was queued but hpc-sweep died before recording its id: until a lookup answers, status must
    not show its configs as waiting at their old attempt (they are pending, held). Failed at: 1000_0 was
    accepted, but status shows config001 generated at attempt 0."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.submit(kill=SBATCH_RETURNED)


def test_cancel_cancels_a_submission_of_unknown_outcome():
    """#12 item 7. The array was queued, hpc-sweep died before recording it; cancel marks the configs
    cancelled without a scancel, and the tasks run. Failed at: cancel said done, but config001's tasks
    ['1000_0'] are still queued or running."""
    with Schedule(ExactlyOnce, known_every_step=False) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.submit(kill=SBATCH_RETURNED)
        state.cancel(kill=None, which=set())


def test_cancelled_is_not_said_of_an_unrecorded_run_that_completed_whole():
    """#12 item 7, seen from the end: the unrecorded array ran and completed whole before cancel, which marks
    the config cancelled without a scancel; the next poll finds the submission by its start marker, and status
    must end completed (today it does: reconciling sets the config back; after the fix cancel asks by name)."""
    with Schedule(ExactlyOnce, known_every_step=False) as state:
        state.site(configs=1, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.submit(kill=SBATCH_RETURNED)
        state.tasks_start(count=1)
        state.task_ends(pick=0, outcome="exit0")
        state.cancel(kill=None, which=set())


def test_exit_markers_end_runs_while_the_controller_is_down():
    """#12 item 6. A task ends while slurmctld does not answer; its exit marker is there, but the poll, whose
    squeue failed, leaves the config running. Failed at: ended and its exit marker is in sight, but after a poll
    status still says running."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.submit(kill=None)
        state.tasks_start(count=2)
        state.cron_poll(kill=None, force=False)
        state.freeze(lands=False, at_next_sbatch=False)
        state.task_ends(pick=0, outcome="exit0")
        state.cron_poll(kill=None, force=False)


def test_lost_corrects_itself_when_the_exit_marker_appears():
    """#12 item 5. A long run ends; its exit marker is delayed (NFS attribute cache) and there is no accounting.
    The grace period counted from the start marker, so the first poll after the end says lost; the marker
    appears, but lost is never looked at again. Failed at the end: status says lost; its command ran whole."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=False, throttle=None, foreign_job=False)
        state.submit(kill=None)
        state.tasks_start(count=1)
        state.time_passes(seconds=700)
        state.cron_poll(kill=None, force=False)
        state.nfs_delay(hide=True)
        state.task_ends(pick=0, outcome="exit0")
        state.cron_poll(kill=None, force=False)
        state.nfs_delay(hide=False)
        state.cron_poll(kill=None, force=False)


def test_lost_corrects_itself_when_accounting_answers_again():
    """#12 item 5, found by the machine: a cancel dies just after its scancel; the next poll, with sacct failing
    and the task gone from squeue, says lost; once sacct answers (CANCELLED) nothing looks again. Failed at the
    end: the stand-in's last task is 1000_0 (CANCELLED), status says lost."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.submit(kill=None)
        state.cancel(kill="after_call", which={0})  # killed right after its scancel
        state.sacct_behaves(mode="fail")
        state.time_passes(seconds=700)
        state.cron_poll(kill=None, force=False)


def test_status_refresh_takes_the_writers_lock():
    """#12 item 3. status --refresh polls and submits; with a cron poll holding the lock it writes the state
    (and runs sbatch) all the same. Failed at: state written without the writers' lock."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.while_locked_status_refresh(fmt="table")


def test_cancel_of_a_task_that_already_completed_leaves_it_completed():
    """Found by the machine (not in #12's list): the task completed whole, no poll saw it yet; cancel's scancel
    answers "already completing or completed", and cancel marks the config cancelled all the same, for good.
    Failed at the end: status says cancelled; its command ran whole."""
    with Schedule(ExactlyOnce) as state:
        state.site(configs=2, cap=None, accounting=True, throttle=None, foreign_job=False)
        state.submit(kill=None)
        state.tasks_start(count=1)
        state.task_ends(pick=0, outcome="exit0")
        state.cancel(kill=None, which={0})


def test_a_cap_lowered_by_the_site_holds_configs_back_only_while_the_limits_are_cached():
    """Found by the deep profile: with the user's own job filling a cap lowered to 1, the poll keeps the configs
    waiting; once the site's cap is back they run after the cached limits expire (an hour, by design). The
    settling used to give up before that and report config003 pending for ever."""
    with Schedule(BasicFaults) as state:
        state.site(configs=3, cap=None, accounting=False, throttle=1, foreign_job=True)
        state.cap_changes(cap=1)
        state.cron_poll(kill=None, force=False)


def test_a_loser_that_times_out_before_its_stop_was_sent_is_not_called_stopped():
    """Found by the deep profile (EarlyStops): a poll decides config002 is a loser, writes the stop down and is
    killed before its scancel; the task then hits its time limit on its own. The next poll called the timeout
    stopped (no scancel was ever sent). Failed at: config002 is stopped; the stand-in has its task TIMEOUT."""
    with Schedule(EarlyStops) as state:
        state.site(configs=2, cap=None, accounting=False, throttle=None, foreign_job=False)
        state.submit(kill=None)
        state.tasks_start(count=1)
        state.task_ends(outcome="exit0", pick=0)
        state.tasks_start(count=1)
        state.cron_poll(force=False, kill=10)
        state.resubmit(fresh=False, kill=None, which=0)
        state.task_ends(outcome="timeout", pick=0)
        state.cron_poll(force=False, kill=None)
