"""The local adapter's argv builders and parsers, and the runner's pure helpers (no process is started here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_sweep.local.placement import GpuStatus, Settings, _wait_reason, nvidia_smi_command, place
from hpc_sweep.local.processes import proc_stat
from hpc_sweep.local.runner import WALLTIME_HEADER
from hpc_sweep.local.spool import outcome
from hpc_sweep.schedulers import get_scheduler
from hpc_sweep.schedulers.base import CommandResult, SchedulerError, SubmitSpec
from hpc_sweep.schedulers.local import LocalScheduler


def result(stdout: str = "", rc: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(argv=["python"], returncode=rc, stdout=stdout, stderr=stderr)


def test_argv_builders_name_the_sweep(tmp_path: Path) -> None:
    adapter = get_scheduler("local", sweep_dir=tmp_path)
    assert isinstance(adapter, LocalScheduler)
    spec = SubmitSpec(script="/s/script/j.sh", job_name="j", workdir=str(tmp_path), indices=(0, 1, 2, 5))
    assert adapter.submit_argv(spec) == [sys.executable, "-m", "hpc_sweep.local.runner", "submit", "--sweep",
                                         str(tmp_path), "--name", "j", "/s/script/j.sh", "0-2,5"]
    assert adapter.live_argv("me", ["local-1"])[3:] == ["status", "--sweep", str(tmp_path)]
    assert adapter.cancel_argv(["local-1", "local-2_3"])[3:] == ["cancel", "--sweep", str(tmp_path), "local-1",
                                                                 "local-2_3"]
    assert adapter.accounting_argv(["local-1"]) is None and adapter.limits_argvs("me") == []
    assert adapter.task_id("local-4", 7, True) == "local-4_7"


def test_parse_submit() -> None:
    adapter = LocalScheduler()
    assert adapter.parse_submit(result("local-12\n")) == "local-12"
    with pytest.raises(SchedulerError) as refused:
        adapter.parse_submit(result("", 2, "hpc-sweep runner: /x.sh has no map entry for index(es) [3]"))
    assert refused.value.kind == "rejected" and "map entry" in refused.value.message
    with pytest.raises(SchedulerError) as timed_out:
        adapter.parse_submit(result("", 124, "python: timed out after 150 s"))
    assert timed_out.value.kind == "transient"


def test_parse_live_maps_states() -> None:
    tasks = [
        {"task_id": "local-1_0", "submission": "local-1", "index": 0, "name": "j", "state": "queued"},
        {"task_id": "local-1_1", "submission": "local-1", "index": 1, "name": "j", "state": "running",
         "start": "2026-01-01T00:00:00+00:00", "host": "box"},
        {"task_id": "local-1_2", "submission": "local-1", "index": 2, "name": "j", "state": "finished",
         "outcome": "timeout", "exit_code": 143, "reason": "time limit"},
        {"task_id": "local-1_3", "submission": "local-1", "index": 3, "name": "j", "state": "finished",
         "outcome": "completed", "exit_code": 0},
    ]
    records = LocalScheduler().parse_live(result(json.dumps({"runner_alive": True, "tasks": tasks})))
    assert [r.state for r in records] == ["pending", "running", "timeout", "completed"]
    assert records[2].reason == "time limit" and records[2].exit_code == 143 and records[1].host == "box"


@pytest.mark.parametrize("bad", [result("", 1, "Traceback ..."), result("not json"), result('{"x": 1}')])
def test_parse_live_failures_are_transient(bad: CommandResult) -> None:
    with pytest.raises(SchedulerError) as failed:
        LocalScheduler().parse_live(bad)
    assert failed.value.kind == "transient"


def test_outcome_follows_the_stop_reason_not_the_exit_code() -> None:
    assert outcome({"exit_code": 0}) == "completed"
    assert outcome({"exit_code": 1}) == "failed"
    assert outcome({"exit_code": 0, "stop": {"why": "time limit"}}) == "timeout"
    assert outcome({"exit_code": 143, "stop": {"why": "cancelled"}}) == "cancelled"


def test_walltime_header() -> None:
    assert WALLTIME_HEADER.search("#!/bin/bash\n# hpc-sweep-walltime: 900\nset -u\n").group(1) == "900"


def test_nvidia_smi_command_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPC_SWEEP_NVIDIA_SMI", raising=False)
    argv, fields = nvidia_smi_command()
    assert argv[0] == "nvidia-smi" and fields == ("index", "memory.used", "memory.total", "utilization.gpu")
    monkeypatch.setenv("HPC_SWEEP_NVIDIA_SMI", "/opt/fake-smi --query-gpu=gpu_name,memory.free --format=csv")
    argv, fields = nvidia_smi_command()
    assert argv == ["/opt/fake-smi", "--query-gpu=gpu_name,memory.free", "--format=csv"]
    assert fields == ("gpu_name", "memory.free")


def gpu(index: int, used: int, total: int = 16000) -> GpuStatus:
    return GpuStatus(index=index, memory_used_mb=used, memory_total_mb=total, utilization_pct=0)


def test_place() -> None:
    settings = Settings(cpu_slots=1, runs_per_gpu=2, gpu_min_free_mb=4000)
    gpus = [gpu(0, 14000), gpu(1, 1000), gpu(2, 0)]  # GPU 0 has only 2000 MiB free
    two = place({"gpus": 2, "device": "gpu*2"}, gpus, settings, {}, 0)
    assert two.gpu_ids == [1, 2] and two.visible == "1,2"
    busy = place({"gpus": 1, "device": "gpu*1"}, gpus, settings, {1: 2, 2: 2}, 0)
    assert busy is None  # GPU 0 lacks memory, 1 and 2 carry runs_per_gpu runs
    explicit = place({"gpus": 2, "device": "gpu*4:1-2"}, gpus, settings, {1: 1}, 0)
    assert explicit.gpu_ids == [1, 2] and explicit.visible is None
    assert place({"gpus": 1, "device": "gpu*4:0"}, gpus, settings, {}, 0) is None
    assert "not on this machine" in place({"gpus": 1, "device": "gpu*8:7"}, gpus, settings, {}, 0)
    assert place({"gpus": 4, "device": "gpu*4"}, gpus, settings, {}, 0) == "needs 4 GPUs; this machine has 3"
    assert place({"gpus": 0, "device": "cpu"}, gpus, settings, {}, 0).slot == "cpu"
    assert place({"gpus": 0, "device": "cpu"}, gpus, settings, {}, 1) is None
    assert place({"gpus": 1, "device": "gpu*1"}, None, settings, {}, 0).slot == "cpu"  # no GPUs here
    # What status shows as the pending reason of a run that does not fit yet.
    assert _wait_reason({"gpus": 1, "device": "gpu*4:0"}, gpus, settings) == \
        "waiting for GPU(s) of gpu*4:0: at most 2 run(s) per GPU, >= 4000 MiB free"
    assert _wait_reason({"gpus": 0, "device": "cpu"}, gpus, settings) == "waiting for a CPU slot (1 in use)"


def test_proc_stat_reads_past_odd_command_names(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "30"])
    try:
        state, sid, start = proc_stat(proc.pid)
        assert sid == os.getsid(proc.pid) and start > 0 and state in "RSD"
        assert proc_stat(proc.pid)[2] == start  # stable: the identity a cancel checks
    finally:
        proc.kill()
        proc.wait()
    assert proc_stat(proc.pid) is None
