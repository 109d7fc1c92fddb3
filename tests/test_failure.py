"""failure_reason / diagnose on the messages schedulers, CUDA, JAX, torchrun and Python print."""

from __future__ import annotations

import pytest

from hpc_sweep.track.failure import diagnose, failure_reason

TRACEBACK = """\
[ 11.20-11:55:40 ] [dataloader] Train size: `3000`. Val size: `1000`. Test size: `999`.
Traceback (most recent call last):
  File "/venv/bin/deeph-train", line 8, in <module>
    sys.exit(main())
  File "/venv/lib/python3.11/site-packages/deepx/train.py", line 120, in main
    raise ValueError(msg)
ValueError: The sum of train_size, validate_size and test_size exceeds the dataset (5000 > 4999)
"""

CHAINED = """\
Traceback (most recent call last):
  File "a.py", line 1, in <module>
KeyError: 'energy'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 3, in <module>
RuntimeError: target 'energy' missing from data.lmdb
"""

TORCHRUN_CHILD = """\
[rank0]: Traceback (most recent call last):
[rank0]:   File "/venv/bin/xeq", line 8, in <module>
[rank0]:     sys.exit(main())
[rank0]: AssertionError: batch size must be divisible by world size
E0415 18:52:06.123000 1234 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1) local_rank: 0
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
    sys.exit(main())
  File "/venv/lib/python3.11/site-packages/torch/distributed/launcher/api.py", line 263, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
xeq FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2025-04-15_18:52:06
  host      : gpu017
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 78970)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""

TORCHRUN_SIGKILL = TORCHRUN_CHILD.split("E0415", 1)[1].replace(
    "exitcode  : 1 (pid: 78970)", "exitcode  : -9 (pid: 78970)").replace(
    "traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html",
    "traceback : Signal 9 (SIGKILL) received by PID 78970")


@pytest.mark.parametrize("text,kind,reason", [
    ("epoch 5\nslurmstepd-vm: error: *** JOB 46 ON vm CANCELLED AT 2026-11-23T12:50:53 DUE TO TIME LIMIT ***\n",
     "timeout", "time limit"),
    ("slurmstepd: error: *** STEP 3495064.0 ON orion-01-01 CANCELLED AT 2021-10-27T19:35:36 DUE TO TIME LIMIT ***",
     "timeout", "time limit"),
    ("slurmstepd: error: *** JOB 812 ON gpu03 CANCELLED AT 2025-01-02T03:04:05 DUE TO PREEMPTION ***",
     "preempted", "preempted"),
    ("slurmstepd: error: *** JOB 812 ON gpu03 CANCELLED AT 2025-01-02T03:04:05 DUE TO NODE FAILURE ***",
     "node_fail", "node failure"),
    ("slurmstepd: error: *** JOB 812 ON gpu03 CANCELLED AT 2025-01-02T03:04:05 ***", "cancelled", "cancelled"),
    ("Thread 04 processes reads\n=>> PBS: job killed: walltime 86415 exceeded limit 86400\n",
     "timeout", "walltime exceeded"),
    ("=>> PBS: job killed: walltime 3620 exceeded limit 3600", "timeout", "walltime exceeded"),
    ("Running job 1\n=>> PBS: job killed: mem 38427376kb exceeded limit 33554432kb\n",
     "oom", "out of memory (PBS: mem 38427376kb exceeded limit 33554432kb)"),
    ("=>> PBS: job killed: vmem 3372163072 exceeded limit 2147483648", "oom",
     "out of memory (PBS: vmem 3372163072 exceeded limit 2147483648)"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
     "79.15 GiB of which 1.20 GiB is free.", "oom", "out of memory (GPU: Tried to allocate 2.00 GiB)"),
    ("RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 10.76 GiB total capacity)",
     "oom", "out of memory (GPU: Tried to allocate 20.00 MiB)"),
    ("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
     "7406166528 bytes.\nBufferAssignment OOM Debugging.\n",
     "oom", "out of memory (GPU, XLA: allocating 7406166528 bytes)"),
    ("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 20029400304 bytes.",
     "oom", "out of memory (GPU, XLA: allocating 20029400304 bytes)"),
    ("/var/spool/slurmd/job00191/slurm_script: line 28:  8156 Killed                  python3 main.py\n"
     "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=191.batch cgroup. Some of your processes may have "
     "been killed by the cgroup out-of-memory handler.",
     "oom", "out of memory (host memory: killed by the OOM killer)"),
    ("slurmstepd: error: Detected 2 oom_kill events in StepId=JOBID.13. Some of the step tasks have been OOM Killed.\n"
     "srun: error: NODE: task 0: Out Of Memory", "oom", "out of memory (host memory: killed by the OOM killer)"),
    ("/home/u/job.sh: line 12: 40213 Killed                  deeph-train config001.toml", "failed",
     "killed by SIGKILL (often the kernel's OOM killer)"),
    (TRACEBACK, "failed",
     "ValueError: The sum of train_size, validate_size and test_size exceeds the dataset (5000 > 4999)"),
    (CHAINED, "failed", "RuntimeError: target 'energy' missing from data.lmdb"),
    (TORCHRUN_CHILD, "failed", "AssertionError: batch size must be divisible by world size"),
    (TORCHRUN_SIGKILL, "failed",
     "torchrun: rank 0 (local_rank: 0) failed, exitcode -9 (Signal 9 (SIGKILL) received by PID 78970)"),
])
def test_known_messages(text, kind, reason):
    assert diagnose(text) == (kind, reason)
    assert failure_reason(text) == reason


def test_time_limit_wins_over_the_traceback_it_causes():
    text = TRACEBACK + "slurmstepd: error: *** JOB 9 ON n1 CANCELLED AT 2025-01-01T00:00:00 DUE TO TIME LIMIT ***\n"
    assert failure_reason(text) == "time limit"


def test_cuda_oom_wins_over_its_traceback():
    text = TRACEBACK.replace("ValueError: The sum", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate "
                                                    "512.00 MiB. The sum")
    assert diagnose(text)[0] == "oom"


@pytest.mark.parametrize("text", ["", "all good\nEpoch 3 | Time 2 s\n", "Killedfoo", "the job was not Killed"])
def test_nothing_recognisable(text):
    assert failure_reason(text) is None


def test_long_reasons_are_cut():
    text = "Traceback (most recent call last):\n  File 'x'\nValueError: " + "x" * 5000
    assert len(failure_reason(text)) == 300
