"""Capture the cluster-shape output of a real Slurm 22.05 into tests/fixtures/slurm-22.05/ (run by hand, as root).

    .venv/bin/python tests/cluster/capture_shape.py tests/fixtures/slurm-22.05

Brings up the suite's single-node test cluster with 2 CPUs (as in issue #15), adds partitions, a QOS and an
association limit at run time (``scontrol create``, ``sacctmgr``), and saves what the shape queries, refused
submissions and stuck jobs print. Each file holds a command's stdout; a failed command's file holds its stderr and
then ``rc=N`` (as ``sbatch_limit_err.txt`` does). The fixture README names the command of each file.
Nothing here runs in the test suite: the tests read the saved files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slurm_cluster import SlurmCluster  # noqa: E402

from hpc_sweep.schedulers.slurm import LIVE_FORMAT  # noqa: E402

SINFO_FORMAT = "%P|%a|%l|%D|%c|%m|%G|%T|%f"
ASSOC_FORMAT = "format=Cluster,Account,User,Partition,QOS,DefaultQOS,MaxWall,MaxTRES"
QOS_FORMAT = "format=Name,MaxWall,MaxTRES,MaxTRESPerNode,MaxSubmitPU,Flags"


class Capture:
    def __init__(self, cluster: SlurmCluster, out: Path):
        self.cluster, self.out = cluster, out
        self.commands: Dict[str, str] = {}

    def save(self, name: str, argv: Sequence[str], as_user: bool = True) -> str:
        run = self.cluster.run_as_user if as_user else self.cluster.run_as_root
        result = run(list(argv))
        text = result.stdout if result.returncode == 0 else f"{result.stderr}{result.stdout}rc={result.returncode}\n"
        (self.out / name).write_text(text)
        self.commands[name] = " ".join(_quoted(a) for a in argv)
        print(f"--- {name}: {self.commands[name]} (rc={result.returncode})\n{text}", flush=True)
        return result.stdout

    def submit(self, *options: str) -> str:
        """sbatch as the test user; the job id, or '' when refused."""
        r = self.cluster.run_as_user(["sbatch", "--parsable", *options, "--wrap", "sleep 600"])
        print(f"sbatch {' '.join(options)} -> rc={r.returncode} {r.stdout.strip()} {r.stderr.strip()}", flush=True)
        return r.stdout.strip() if r.returncode == 0 else ""


def _quoted(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in " |%") else arg


def _wait_reasons(cluster: SlurmCluster, job_ids: List[str], timeout: float = 60) -> None:
    """Until the scheduler gave each job a reason of its own (not None or the first-pass Priority); at the
    deadline the reasons are captured as they are."""
    def settled() -> bool:
        reasons = dict(line.split("|", 1) for line in cluster.squeue_user("%i|%r"))
        return all(reasons.get(j, "None") not in ("None", "", "Priority") for j in job_ids)

    try:
        cluster.wait_for(settled, timeout, what="pending reasons")
    except TimeoutError as exc:
        print(f"{exc}: capturing the reasons as they are", flush=True)


def main(out: Path) -> None:
    cluster = SlurmCluster(cpus=2, build_venv=False)
    cluster.start()
    try:
        capture(cluster, Capture(cluster, out))
    finally:
        cluster.stop()
        cluster.remove_state()


def setup(cluster: SlurmCluster) -> None:
    host, user = cluster.hostname, cluster.user

    def create(name: str, *keys: str) -> None:
        cluster.run_as_root(["scontrol", "create", f"PartitionName={name}", f"Nodes={host}", *keys], check=True)

    create("short", "MaxTime=00:30:00")
    create("small", "MaxCPUsPerNode=1", "MaxMemPerNode=1000")
    create("closed", "State=DOWN")
    cluster.sacctmgr("add", "account", "others", "Description=capture", "Organization=capture", check=False)
    cluster.sacctmgr("add", "account", "extra", "Description=capture", "Organization=capture", check=False)
    cluster.sacctmgr("add", "user", user, "account=extra", check=False)
    create("others", "AllowAccounts=others")
    cluster.sacctmgr("add", "qos", "shortq", "MaxWall=00:10:00", "MaxTRESPerJob=gres/gpu=2")
    cluster.sacctmgr("modify", "user", "where", f"name={user}", "set", "qos+=shortq")
    cluster.sacctmgr("modify", "user", "where", f"name={user}", "set", "MaxTRES=gres/gpu=4")
    cluster.run_as_root(["scontrol", "update", f"nodename={host}", "AvailableFeatures=a100", "ActiveFeatures=a100"],
                        check=True)

    def pushed() -> bool:
        r = cluster.run_as_root(["scontrol", "show", "assoc_mgr", f"users={user}", "flags=assoc"])
        return r.stdout.count("gres/gpu=4") >= 2 and "Account=extra" in r.stdout

    cluster.wait_for(pushed, 30, what="the association limits to reach slurmctld")


def capture(cluster: SlurmCluster, cap: Capture) -> None:
    user, host = cluster.user, cluster.hostname
    setup(cluster)
    cap.save("scontrol_show_config.txt", ["scontrol", "show", "config"])
    sinfo = ["sinfo", "-h", "-e", "-o", SINFO_FORMAT]
    cap.save("sinfo_shape.txt", sinfo)
    cap.save("scontrol_show_partition.txt", ["scontrol", "show", "partition"])
    cap.save("sacctmgr_assoc_shape.txt", ["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}", ASSOC_FORMAT])
    cap.save("sacctmgr_qos_shape.txt", ["sacctmgr", "-n", "-P", "show", "qos", QOS_FORMAT])

    # Refused at submission: what sbatch says for shapes no node can hold (4 CPUs on the 2-CPU node is accepted).
    refusals = {
        "sbatch_cpus_over_node_accepted.txt": ["--cpus-per-task=4"],
        "sbatch_err_mem_over_node.txt": [f"--mem={cluster.real_memory * 2}M"],
        "sbatch_err_gpus_over_node.txt": ["--gres=gpu:9"],
        "sbatch_err_no_partition.txt": ["--partition=nosuch"],
        "sbatch_err_account.txt": ["--account=nosuch"],
        "sbatch_err_qos.txt": ["--qos=nosuch"],
        "sbatch_err_constraint.txt": ["--constraint=h100"],
        "sbatch_err_cpus_two_partitions.txt": ["--partition=debug,short", "--cpus-per-task=4"],
    }
    for name, options in refusals.items():
        cap.save(name, ["sbatch", "--parsable", *options, "--wrap", "sleep 600"])

    # Accepted, then pending for a reason that waiting cannot clear.
    cap.save("sbatch_partition_account_accepted.txt", ["sbatch", "--parsable", "--partition=others", "--wrap",
                                                        "sleep 600"])
    stuck = [
        cap.submit("--partition=short", "--time=01:00:00"),
        cap.submit("--partition=small", "--cpus-per-task=2"),
        cap.submit("--partition=small", "--mem=2000M"),
        cap.submit("--partition=closed"),
        cap.submit("--qos=shortq", "--time=00:20:00"),
        cap.submit("--qos=shortq", "--gres=gpu:3"),
        cap.submit("--gres=gpu:6"),
    ]
    stuck = [j for j in stuck if j]
    _wait_reasons(cluster, stuck)
    squeue = ["squeue", "--me", "-r", "-h", "-o", LIVE_FORMAT]
    cap.save("squeue_stuck.txt", squeue)

    # A job whose account or constraint stops existing while it waits (it pends on its GPU limit meanwhile).
    lost_account = cap.submit("--account=extra", "--gres=gpu:6", "--job-name=lost-account")
    lost_feature = cap.submit("--constraint=a100", "--gres=gpu:6", "--job-name=lost-feature")
    _wait_reasons(cluster, [j for j in (lost_account, lost_feature) if j])
    removed = cluster.sacctmgr("delete", "user", "where", f"name={user}", "account=extra", check=False)
    print(f"removing the association to account extra: rc={removed.returncode} {removed.stdout} {removed.stderr}")
    cluster.run_as_root(["scontrol", "update", f"nodename={host}", "AvailableFeatures=", "ActiveFeatures="])
    try:
        cluster.wait_for(lambda: "BadConstraints" in "".join(cluster.squeue_user("%r")), 60, what="BadConstraints")
    except TimeoutError as exc:
        print(f"{exc}: capturing the reasons as they are", flush=True)
    cap.save("squeue_lost_account_feature.txt", squeue)

    # A QOS taken away from the user while a job asking for it waits.
    held_qos = cap.submit("--qos=shortq", "--gres=gpu:3", "--job-name=lost-qos")
    cluster.sacctmgr("modify", "user", "where", f"name={user}", "set", "qos-=shortq")
    cluster.wait_for(lambda: "InvalidQOS" in "".join(cluster.squeue_user("%i|%r")), 60, what="InvalidQOS")
    cap.save("squeue_invalid_qos.txt", squeue)
    cluster.cancel_all_user_jobs()

    # Every node of every partition drained.
    cluster.run_as_root(["scontrol", "update", f"nodename={host}", "state=drain", "reason=capture: drained"],
                        check=True)
    cap.save("sinfo_shape_drained.txt", sinfo)
    waiting = [cap.submit(), cap.submit("--partition=short")]
    _wait_reasons(cluster, [j for j in waiting if j])
    cap.save("squeue_drained.txt", squeue)
    cluster.cancel_all_user_jobs()
    cluster.run_as_root(["scontrol", "update", f"nodename={host}", "state=resume"], check=True)
    print(f"held QOS job {held_qos}", flush=True)

    # scrontab needs ScronParameters=enable (Slurm >= 20.11) and the scrontab client.
    cluster.set_config(ScronParameters="enable")
    config = cluster.run_as_root(["scontrol", "show", "config"], check=True).stdout
    (cap.out / "scontrol_config_scron.txt").write_text(
        "".join(line + "\n" for line in config.splitlines() if line.lower().startswith("scronparameters")))
    cap.commands["scontrol_config_scron.txt"] = "scontrol show config (ScronParameters line), ScronParameters=enable"
    for name, command in cap.commands.items():
        print(f"| {name} | `{command}` |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve())
