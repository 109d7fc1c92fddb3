"""Stand-in Slurm commands for the exactly-once tests: ``sbatch``, ``squeue``, ``sacct``, ``scancel``, ``scontrol``,
``sacctmgr``, ``sinfo`` (symlinks to this file, made by :func:`install`). State lives in ``$FAKE_SLURM_DIR``:

- ``queue.json``: every job accepted, with its name and each task's state;
- ``calls.log``: one line per call (the argv);
- ``modes/<command>``: what the next calls of that command do, one word a line, consumed in order (nothing left:
  ``ok``). sbatch: ``ok`` | ``queue-timeout`` (queues, then answers like a controller that timed out) |
  ``timeout`` (queues nothing, same answer) | ``limit`` (refused for the submit limit). squeue / sacct / scancel:
  ``ok`` | ``fail`` (the controller or slurmdbd does not answer). sacct also: ``disabled``.

Output follows the real captures (tests/fixtures/slurm-22.05): sbatch --parsable prints the id, squeue -r one
line per task in the asked format, sacct -P rows with a header unless -n.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "sacctmgr", "sinfo")
TIMEOUT_TEXT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n"
LIMIT_TEXT = ("sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job submission failed: Job violates "
              "accounting/QOS policy (job submit limit, user's size and/or time limits)\n")
DOWN_TEXT = "slurm_load_jobs error: Socket timed out on send/recv operation\n"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def install(bin_dir: Path) -> None:
    """Make the stand-in commands in ``bin_dir`` (put it first on PATH and set FAKE_SLURM_DIR)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                          f"import fakeslurm\nsys.exit(fakeslurm.main({name!r}, sys.argv[1:]))\n")
        script.chmod(0o755)


class Cluster:
    """The stand-in's state, for tests to read and steer."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        (self.folder / "modes").mkdir(parents=True, exist_ok=True)

    def load(self) -> dict:
        path = self.folder / "queue.json"
        return json.loads(path.read_text()) if path.exists() else {"next_id": 100, "jobs": []}

    def save(self, data: dict) -> None:
        tmp = self.folder / "queue.json.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.folder / "queue.json")

    def set_modes(self, command: str, *modes: str) -> None:
        (self.folder / "modes" / command).write_text("".join(f"{m}\n" for m in modes))

    def next_mode(self, command: str) -> str:
        path = self.folder / "modes" / command
        lines = path.read_text().splitlines() if path.exists() else []
        if not lines:
            return "ok"
        path.write_text("".join(f"{line}\n" for line in lines[1:]))
        return lines[0]

    def calls(self, command: str = "") -> list:
        path = self.folder / "calls.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if not command or json.loads(line)[0] == command]

    def jobs(self, prefix: str = "") -> list:
        return [job for job in self.load()["jobs"] if job["name"].startswith(prefix)]

    def set_reason(self, reason: str, job_id: str = "") -> None:
        """The pending reason squeue shows for a job's pending tasks (default: Priority)."""
        data = self.load()
        for job in data["jobs"]:
            if not job_id or job["id"] == job_id:
                job["reason"] = reason
        self.save(data)

    def set_task_states(self, state: str, job_id: str = "") -> None:
        data = self.load()
        for job in data["jobs"]:
            if not job_id or job["id"] == job_id:
                job["tasks"] = {index: state for index in job["tasks"]}
        self.save(data)


def _directive(script: Path, key: str) -> str:
    for line in script.read_text().splitlines():
        if line.startswith(f"#SBATCH --{key}="):
            return line.split("=", 1)[1].strip()
    return ""


def _indices(spec: str) -> list:
    spec = spec.split("%")[0]
    out = []
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out or [0]


def sbatch(cluster: Cluster, args: list) -> tuple:
    mode = cluster.next_mode("sbatch")
    if mode == "limit":
        return 1, "", LIMIT_TEXT
    if mode == "timeout":
        return 1, "", TIMEOUT_TEXT
    script = Path(args[-1])
    data = cluster.load()
    job_id = str(data["next_id"])
    data["next_id"] += 1
    array = _directive(script, "array")
    data["jobs"].append({"id": job_id, "name": _directive(script, "job-name"), "array": bool(array),
                         "tasks": {str(i): "PENDING" for i in _indices(array)}})
    cluster.save(data)
    if mode == "queue-timeout":
        return 1, "", TIMEOUT_TEXT
    return 0, f"{job_id}\n", ""


def _task_id(job: dict, index: str) -> str:
    return f"{job['id']}_{index}" if job["array"] else job["id"]


def squeue(cluster: Cluster, args: list) -> tuple:
    if cluster.next_mode("squeue") == "fail":
        return 1, "", DOWN_TEXT
    fmt = args[args.index("-o") + 1].split("|")
    lines = []
    for job in cluster.load()["jobs"]:
        for index, state in job["tasks"].items():
            if state in FINAL:
                continue
            reason = job.get("reason", "Priority") if state == "PENDING" else "None"
            values = {"%i": _task_id(job, index), "%A": job["id"], "%F": job["id"],
                      "%K": index if job["array"] else "N/A", "%j": job["name"], "%T": state,
                      "%r": reason, "%M": "0:00", "%l": "1:00:00", "%N": ""}
            lines.append("|".join(values.get(code, "") for code in fmt))
    return 0, "".join(f"{line}\n" for line in lines), ""


def sacct(cluster: Cluster, args: list) -> tuple:
    mode = cluster.next_mode("sacct")
    if mode == "fail":
        return 1, "", "sacct: error: Problem talking to the database: Connection refused\n"
    if mode == "disabled":
        return 1, "", "sacct: error: Slurm accounting storage is disabled\n"
    fields = next(a for a in args if a.startswith("--format=")).split("=", 1)[1].split(",")
    name = next((a.split("=", 1)[1] for a in args if a.startswith("--name=")), None)
    ids = args[args.index("-j") + 1].split(",") if "-j" in args else None
    rows = [] if "-n" in args else ["|".join(fields)]
    for job in cluster.load()["jobs"]:
        if (name is not None and job["name"] != name) or (ids is not None and job["id"] not in ids):
            continue
        for index, state in job["tasks"].items():
            values = {"JobID": _task_id(job, index), "JobIDRaw": job["id"], "JobName": job["name"], "State": state,
                      "ExitCode": "0:0", "Elapsed": "00:00:01"}
            rows.append("|".join(values.get(field, "") for field in fields))
    return 0, "".join(f"{row}\n" for row in rows), ""


def scancel(cluster: Cluster, args: list) -> tuple:
    if cluster.next_mode("scancel") == "fail":
        return 1, "", "scancel: error: Socket timed out on send/recv operation\n"
    name = next((a.split("=", 1)[1] for a in args if a.startswith("--name=")), None)
    ids = [a for a in args if a[0].isdigit()]
    data = cluster.load()
    for job in data["jobs"]:
        for index in job["tasks"]:
            hit = (name is not None and job["name"] == name) or job["id"] in ids or _task_id(job, index) in ids
            if hit and job["tasks"][index] not in FINAL:
                job["tasks"][index] = "CANCELLED"
    cluster.save(data)
    return 0, "", ""


def main(command: str, args: list) -> int:
    cluster = Cluster(Path(os.environ["FAKE_SLURM_DIR"]))
    with open(cluster.folder / "calls.log", "a") as log:
        log.write(json.dumps([command, *args]) + "\n")
    handler = {"sbatch": sbatch, "squeue": squeue, "sacct": sacct, "scancel": scancel}.get(command)
    # scontrol/sacctmgr/sinfo: no limits and no partitions known (the cluster's shape stays unread)
    code, out, err = handler(cluster, args) if handler else (0, "", "")
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code
