"""nvidia-smi parsing on real captured output (tests/data/nvidia-smi/README.md says where each came from),
plus the tolerance rules and the slot choice of the local backend."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpc_sweep.local.placement import (
    DEFAULT_FIELDS,
    NVIDIA_SMI_ARGV,
    GpuStatus,
    free_slots,
    nvidia_smi_argv,
    parse_nvidia_smi,
    parse_rows,
    query_gpus,
)

DATA = Path(__file__).parent / "data" / "nvidia-smi"

I3PY_FIELDS = "memory.total,memory.free,memory.used,temperature.gpu,fan.speed,utilization.gpu,utilization.memory"
GPU_UTILS_FIELDS = ("power.limit,power.min_limit,power.max_limit,memory.total,vbios_version,driver_version,name,"
                    "gpu_uuid,power.draw,temperature.gpu,temperature.memory,clocks.current.graphics,clocks.sm,"
                    "clocks.mem,utilization.gpu,utilization.memory,fan.speed,pcie.link.width.current,pstate")

# file -> the field list its query used (as recorded in the README)
CAPTURES = {
    "i3pystatus-pr776-new-driver.csv": I3PY_FIELDS,
    "i3pystatus-pr776-old-driver.csv": I3PY_FIELDS,
    "gpu-utils-issue83-rtx2080.csv": GPU_UTILS_FIELDS,
    "clic-issue89-two-gpus.csv": "gpu_name,memory.free",
}


def capture(name: str) -> list[GpuStatus]:
    return parse_nvidia_smi((DATA / name).read_text(), CAPTURES[name].split(","))


def test_every_capture_is_documented_and_parses() -> None:
    readme = (DATA / "README.md").read_text()
    files = sorted(p.name for p in DATA.glob("*.csv"))
    assert files == sorted(CAPTURES)
    for name in files:
        assert f"`{name}`" in readme
        assert capture(name), name


def test_argv_is_the_documented_query() -> None:
    assert NVIDIA_SMI_ARGV == ["nvidia-smi", "--query-gpu=index,memory.used,memory.total,utilization.gpu",
                               "--format=csv,noheader,nounits"]
    assert nvidia_smi_argv() == NVIDIA_SMI_ARGV
    assert nvidia_smi_argv(["index", "memory.free"])[1] == "--query-gpu=index,memory.free"


@pytest.mark.parametrize("name", ["i3pystatus-pr776-new-driver.csv", "i3pystatus-pr776-old-driver.csv"])
def test_unsupported_values_in_either_driver_spelling_are_ignored(name: str) -> None:
    # fan.speed is [N/A] in one driver and [Not Supported] in the other; the fields we use are intact.
    assert capture(name) == [GpuStatus(index=0, memory_used_mb=0, memory_total_mb=2004, utilization_pct=0,
                                       memory_free_reported_mb=2004)]
    assert parse_rows((DATA / name).read_text(), I3PY_FIELDS.split(","))[0]["fan.speed"] is None


def test_many_fields_bare_na_and_no_memory_used() -> None:
    [gpu] = capture("gpu-utils-issue83-rtx2080.csv")
    assert gpu.index == 0  # -i picked one GPU; without an index field the row number stands in
    assert gpu.name == "GeForce RTX 2080"
    assert gpu.memory_total_mb == 7979
    assert gpu.utilization_pct == 86
    assert gpu.memory_used_mb is None and gpu.memory_free_mb is None
    row = parse_rows((DATA / "gpu-utils-issue83-rtx2080.csv").read_text(), GPU_UTILS_FIELDS.split(","))[0]
    assert row["temperature.memory"] is None  # old drivers print a bare N/A
    assert row["power.draw"] == "176.98"


def test_two_gpus_without_index_use_row_order_and_reported_free() -> None:
    gpus = capture("clic-issue89-two-gpus.csv")
    assert [(g.index, g.name, g.memory_free_mb) for g in gpus] == [
        (0, "NVIDIA GeForce GTX 1050 Ti", 2131),
        (1, "NVIDIA GeForce RTX 3080 Ti", 16000),
    ]
    assert free_slots(gpus, min_free_mb=4000, runs_per_gpu=2, running_per_gpu={}) == [1]
    assert free_slots(gpus, min_free_mb=2000, runs_per_gpu=2, running_per_gpu={}) == [1, 0]


def test_capture_with_unknown_memory_is_decided_by_run_count() -> None:
    gpus = capture("gpu-utils-issue83-rtx2080.csv")
    assert free_slots(gpus, min_free_mb=4000, runs_per_gpu=2, running_per_gpu={0: 1}) == [0]
    assert free_slots(gpus, min_free_mb=4000, runs_per_gpu=2, running_per_gpu={0: 2}) == []


# --- tolerance rules (synthetic text, shaped like the captures) --------------------------------------------------

def test_default_fields_blank_lines_and_noise() -> None:
    text = ("\n0, 1024, 81559, 37\n\n1, [N/A], 81559, [Not Supported]\n"
            "WARNING: infoROM is corrupted at gpu 0000:04:00.0\n")
    gpus = parse_nvidia_smi(text)
    assert gpus == [GpuStatus(0, 1024, 81559, 37), GpuStatus(1, None, 81559, None)]
    assert gpus[0].memory_free_mb == 80535


def test_error_output_gives_no_gpus() -> None:
    assert parse_nvidia_smi("No devices were found\n") == []
    assert parse_nvidia_smi("No devices were found\n", ["index"]) == []
    failed = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
              "Make sure that the latest NVIDIA driver is installed and running.\n")
    assert parse_nvidia_smi(failed) == []
    assert parse_nvidia_smi("") == []


def test_header_and_units_are_tolerated() -> None:
    text = ("index, memory.used [MiB], memory.total [MiB], utilization.gpu [%]\n"
            "0, 3 MiB, 11264 MiB, 0 %\n1, 5499 MiB, 11264 MiB, 100 %\n")
    assert parse_nvidia_smi(text) == [GpuStatus(0, 3, 11264, 0), GpuStatus(1, 5499, 11264, 100)]


def test_field_order_follows_the_field_list() -> None:
    text = "81559, 2, 40000\n"
    [gpu] = parse_nvidia_smi(text, ["memory.total", "index", "memory.used"])
    assert (gpu.index, gpu.memory_total_mb, gpu.memory_used_mb, gpu.utilization_pct) == (2, 81559, 40000, None)


# --- slot choice --------------------------------------------------------------------------------------------------

GPUS = [GpuStatus(0, 70000, 81559, 90), GpuStatus(1, 1000, 81559, 0), GpuStatus(2, 20000, 81559, 50),
        GpuStatus(3, 500, 81559, 0)]


def test_free_slots_memory_threshold_and_run_cap() -> None:
    assert free_slots(GPUS, min_free_mb=20000, runs_per_gpu=3, running_per_gpu={}) == [3, 1, 2]
    assert free_slots(GPUS, min_free_mb=20000, runs_per_gpu=3, running_per_gpu={3: 3}) == [1, 2]
    # fewest of our runs first, so a second GPU is used before one is doubled up
    assert free_slots(GPUS, min_free_mb=20000, runs_per_gpu=3, running_per_gpu={3: 1}) == [1, 2, 3]


def test_free_slots_only_the_configs_ids() -> None:
    assert free_slots(GPUS, min_free_mb=0, runs_per_gpu=1, running_per_gpu={}, only=[0, 2]) == [2, 0]
    assert free_slots(GPUS, min_free_mb=0, runs_per_gpu=0, running_per_gpu={}) == []


def test_query_gpus_without_nvidia_smi_or_on_failure() -> None:
    def missing(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        raise FileNotFoundError("nvidia-smi")

    def hung(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        raise subprocess.TimeoutExpired("nvidia-smi", 15)

    def failing(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(argv, 9, "", "NVIDIA-SMI has failed")

    def working(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert argv == NVIDIA_SMI_ARGV
        return subprocess.CompletedProcess(argv, 0, "0, 10, 100, 0\n", "")

    assert query_gpus(run=missing) is None
    assert query_gpus(run=hung) is None
    assert query_gpus(run=failing) is None
    assert query_gpus(run=working) == [GpuStatus(0, 10, 100, 0)]
    assert DEFAULT_FIELDS == ("index", "memory.used", "memory.total", "utilization.gpu")
