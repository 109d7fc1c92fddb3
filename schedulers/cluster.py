"""The cluster's shape: partitions (Slurm) or queues (PBS, Torque), the nodes behind them and their limits, and the
accounts and QOS a user may submit with. Argv builders and pure parsers, like the adapters: :mod:`hpc_sweep.common.shell`
runs the commands, and every parser here is tested against captured output.

One word for both: a *partition* is a Slurm partition or a PBS/Torque queue. Units: memory in MiB (Slurm's ``M``,
PBS ``kb`` / 1024), times in seconds, ``None`` for "no limit" or "not known".

Queries (one set per submit, cached like the limits):

- Slurm: ``sinfo -h -e -o <SINFO_FORMAT>`` (nodes grouped by identical CPUs, memory, GRES and state per partition:
  ``-e`` keeps unlike nodes apart instead of printing ``16+``), ``scontrol show partition`` (limits, allowed
  accounts/QOS), ``sacctmgr show qos`` (per-job limits of each QOS), the user's associations (accounts and
  per-job limits) from ``scontrol show assoc_mgr`` (a limits query) or, where a QOS is asked for,
  ``sacctmgr show assoc`` (which also lists the QOS each may use),
  ``scontrol show config`` (version, cluster name, accounting enforcement; the limit queries ask it too).
- PBS Pro/OpenPBS: ``pbsnodes -a -F json``, ``qstat -Qf -F json``, ``qstat -Bf -F json`` (server default queue and
  server-wide ``resources_max``).
- Torque: ``pbsnodes -x`` (XML; the plain ``pbsnodes`` text is read too), ``qstat -Q -f -1`` and ``qstat -B -f -1``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from hpc_sweep.schedulers.base import CommandResult
from hpc_sweep.schedulers.slurm import query_kind

SINFO_FORMAT = "%P|%a|%l|%D|%c|%m|%G|%T|%f"
SINFO_FIELDS = ("partition", "avail", "timelimit", "nodes", "cpus", "memory", "gres", "state", "features")
ASSOC_FIELDS = ("Cluster", "Account", "User", "Partition", "QOS", "DefaultQOS", "MaxWall", "MaxTRES")
QOS_FIELDS = ("Name", "MaxWall", "MaxTRES", "MaxTRESPerNode", "MaxSubmitPU", "Flags")

UP, DOWN, DRAINED = "up", "down", "drained"  # a node group's state, as far as running a new job goes
_UNLIMITED = {"", "unlimited", "infinite", "none", "n/a", "(null)", "partition_limit"}


# ----------------------------------------------------------------------------------------------------------------
# the shape


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of one partition that look alike: how many, what each one has, and whether they take jobs."""

    count: int
    cpus: Optional[int]
    memory_mb: Optional[int]
    gres: Mapping[str, int] = field(default_factory=dict)  # per node: {"gpu": 8, "gpu:a100": 8}
    state: str = UP                                         # UP, DOWN or DRAINED
    raw_state: str = ""
    features: Tuple[str, ...] = ()

    def gpus(self, name: str = "gpu", gpu_type: Optional[str] = None) -> int:
        return int(self.gres.get(f"{name}:{gpu_type}" if gpu_type else name, 0))

    def describe(self, gpu_name: str = "gpu") -> str:
        """'2 CPUs, 21694M, 8 gpu' — what the fit messages say nodes have."""
        parts = [f"{self.cpus} CPUs" if self.cpus is not None else "? CPUs"]
        if self.memory_mb is not None:
            parts.append(f"{self.memory_mb}M")
        parts.append(f"{self.gpus(gpu_name)} {gpu_name}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Partition:
    """A Slurm partition or a PBS/Torque queue, with the limits that bind one job in it."""

    name: str
    state: str = UP                                  # "up", or the scheduler's word for why not ("down", "drain")
    is_default: bool = False
    max_walltime_s: Optional[int] = None
    default_walltime_s: Optional[int] = None
    max_cpus_per_node: Optional[int] = None          # Slurm MaxCPUsPerNode
    max_mem_per_node_mb: Optional[int] = None        # Slurm MaxMemPerNode
    max_mem_per_cpu_mb: Optional[int] = None         # Slurm MaxMemPerCPU
    max_per_job: Mapping[str, int] = field(default_factory=dict)  # PBS/Torque resources_max: ncpus, gpu, mem (MiB)
    allow_accounts: Optional[frozenset] = None       # None: every account
    deny_accounts: frozenset = frozenset()
    allow_qos: Optional[frozenset] = None
    deny_qos: frozenset = frozenset()
    qos: Optional[str] = None                        # Slurm partition QOS, whose limits bind every job here
    nodes: Tuple[NodeGroup, ...] = ()

    @property
    def up(self) -> bool:
        return self.state == UP

    @property
    def usable_nodes(self) -> Tuple[NodeGroup, ...]:
        return tuple(group for group in self.nodes if group.state == UP)


@dataclass(frozen=True)
class Association:
    """One Slurm association of the user: an account (on one partition or all) and the QOS it may use."""

    account: str
    partition: Optional[str] = None
    qos: frozenset = frozenset()
    default_qos: Optional[str] = None
    max_walltime_s: Optional[int] = None
    max_per_job: Mapping[str, int] = field(default_factory=dict)  # TRES: {"gres/gpu": 4, "cpu": 8, "mem": MiB}


@dataclass(frozen=True)
class Qos:
    name: str
    max_walltime_s: Optional[int] = None
    max_per_job: Mapping[str, int] = field(default_factory=dict)
    max_per_node: Mapping[str, int] = field(default_factory=dict)
    flags: frozenset = frozenset()


@dataclass(frozen=True)
class ClusterShape:
    """Everything the fit check reads. ``associations``/``qos`` are None where they could not be read (no
    accounting, sacctmgr failed): account and QOS checks are then skipped, never guessed."""

    scheduler: str
    partitions: Mapping[str, Partition] = field(default_factory=dict)
    associations: Optional[Tuple[Association, ...]] = None
    qos: Optional[Mapping[str, Qos]] = None
    accounts_enforced: bool = True    # Slurm AccountingStorageEnforce has "associations" (or was not read)
    version: Optional[Tuple[int, ...]] = None
    errors: Tuple[str, ...] = ()      # the queries that failed, one line each

    @property
    def default_partition(self) -> Optional[str]:
        return next((p.name for p in self.partitions.values() if p.is_default), None)

    def partition(self, name: Optional[str]) -> Optional[Partition]:
        """The named partition, or the default one for None; None when there is no such partition."""
        return self.partitions.get(name if name else (self.default_partition or ""))


# ----------------------------------------------------------------------------------------------------------------
# the shape as plain data (cached in the state as JSON, read back by later commands)


def shape_to_data(shape: ClusterShape) -> dict:
    """Plain JSON-able data of ``shape``; :func:`shape_from_data` reads it back equal."""
    return {"scheduler": shape.scheduler, "accounts_enforced": shape.accounts_enforced,
            "version": list(shape.version) if shape.version else None, "errors": list(shape.errors),
            "partitions": [_plain(p, nodes=[_plain(g) for g in p.nodes]) for p in shape.partitions.values()],
            "associations": None if shape.associations is None else [_plain(a) for a in shape.associations],
            "qos": None if shape.qos is None else [_plain(q) for q in shape.qos.values()]}


def shape_from_data(data: Mapping) -> ClusterShape:
    partitions = {}
    for item in data.get("partitions") or ():
        nodes = tuple(_built(NodeGroup, g) for g in item.get("nodes") or ())
        partitions[item["name"]] = _built(Partition, {**item, "nodes": nodes})
    associations = data.get("associations")
    qos = data.get("qos")
    return ClusterShape(
        scheduler=data["scheduler"], partitions=partitions,
        associations=None if associations is None else tuple(_built(Association, a) for a in associations),
        qos=None if qos is None else {q["name"]: _built(Qos, q) for q in qos},
        accounts_enforced=bool(data.get("accounts_enforced", True)),
        version=tuple(data["version"]) if data.get("version") else None, errors=tuple(data.get("errors") or ()))


def _plain(item, **replaced) -> dict:
    out = {}
    for name in item.__dataclass_fields__:
        value = replaced[name] if name in replaced else getattr(item, name)
        if isinstance(value, (frozenset, set)):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[name] = value
    return out


def _built(cls, data: Mapping):
    """A frozen dataclass from :func:`_plain` data: lists become the tuples or frozensets its fields hold."""
    values = {}
    for name, spec in cls.__dataclass_fields__.items():
        if name not in data:
            continue
        value = data[name]
        kind = str(spec.type)
        if isinstance(value, list) and "frozenset" in kind:
            value = frozenset(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


# ----------------------------------------------------------------------------------------------------------------
# argv builders


def slurm_shape_argvs(user: str, associations: bool = True) -> List[List[str]]:
    """``associations``: ask sacctmgr for the user's associations with the QOS each may use (~0.3 s through
    slurmdbd). Without it their accounts and per-job limits come from ``scontrol show assoc_mgr`` (a limits query,
    ~7 ms), which lists no QOS: enough where no QOS is asked for."""
    if not re.fullmatch(r"[\w.@-]+", user or ""):
        raise ValueError(f"not a user name: {user!r}")
    assoc = ["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}", "format=" + ",".join(ASSOC_FIELDS)]
    return [
        ["sinfo", "-h", "-e", "-o", SINFO_FORMAT],
        ["scontrol", "show", "partition"],
        *([assoc] if associations else []),
        ["sacctmgr", "-n", "-P", "show", "qos", "format=" + ",".join(QOS_FIELDS)],
        ["scontrol", "show", "config"],  # version, cluster name, whether accounts are enforced (a limits query too)
    ]


def pbs_shape_argvs() -> List[List[str]]:
    return [["pbsnodes", "-a", "-F", "json"], ["qstat", "-Qf", "-F", "json"], ["qstat", "-Bf", "-F", "json"]]


def torque_shape_argvs() -> List[List[str]]:
    # -1: attributes not folded at 80 columns (the parser reads folded ones too)
    return [["pbsnodes", "-x"], ["qstat", "-Q", "-f", "-1"], ["qstat", "-B", "-f", "-1"]]


def shape_argvs(scheduler: str, user: str, associations: bool = True) -> List[List[str]]:
    if scheduler == "slurm":
        return slurm_shape_argvs(user, associations)
    if scheduler == "pbspro":
        return pbs_shape_argvs()
    if scheduler == "torque":
        return torque_shape_argvs()
    return []


def parse_shape(scheduler: str, results: Sequence[CommandResult]) -> ClusterShape:
    """The shape from the answers of :func:`shape_argvs` (any order; each is recognised by its argv)."""
    if scheduler == "slurm":
        return parse_slurm_shape(results)
    if scheduler == "pbspro":
        return parse_pbs_shape(results)
    if scheduler == "torque":
        return parse_torque_shape(results)
    return ClusterShape(scheduler=scheduler)


# ----------------------------------------------------------------------------------------------------------------
# values


def slurm_time_s(text: Optional[str]) -> Optional[int]:
    """Seconds of a Slurm time: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``;
    None for UNLIMITED/infinite/NONE. ValueError when it is none of these."""
    text = (text or "").strip()
    if text.lower() in _UNLIMITED:
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    hours, minutes, seconds = parts
    return hours * 3600 + minutes * 60 + seconds


def pbs_time_s(text) -> Optional[int]:
    """Seconds of a PBS/Torque walltime: ``HH:MM:SS``, ``MM:SS`` or plain seconds."""
    if text is None or str(text).strip() == "":
        return None
    parts = [int(float(p)) for p in str(text).strip().split(":")]
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


_MEM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(b|w)?\s*$", re.I)
_MEM_MIB = {"": 1 / 1048576, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 ** 2, "p": 1024 ** 3}


def pbs_mem_mb(text) -> Optional[int]:
    """MiB of a PBS size (``24683784kb``, ``16gb``, ``0mb``; a bare number is bytes)."""
    match = _MEM.match(str(text)) if text is not None else None
    if not match:
        return None
    return int(float(match.group(1)) * _MEM_MIB[match.group(2).lower()])


def slurm_mem_mb(text: Optional[str]) -> Optional[int]:
    """MiB of a Slurm size: ``21694`` (MiB), ``16G``, ``500M``; None for UNLIMITED."""
    text = (text or "").strip()
    if text.lower() in _UNLIMITED:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)", text, re.I)
    if not match:
        return None
    return int(float(match.group(1)) * _MEM_MIB[match.group(2).lower() or "m"])  # a bare number is MiB


def parse_tres(text: Optional[str]) -> Dict[str, int]:
    """``gres/gpu=4,cpu=8,mem=16G`` -> {"gres/gpu": 4, "cpu": 8, "mem": 16384} (memory in MiB)."""
    out: Dict[str, int] = {}
    for item in (text or "").split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        number = slurm_mem_mb(value) if key == "mem" else _int(value)
        if number is not None:
            out[key] = number
    return out


def parse_gres(text: Optional[str]) -> Dict[str, int]:
    """Per-node GRES of sinfo ``%G``: ``gpu:8`` -> {"gpu": 8}; ``gpu:a100:4(S:0-1),gpu:v100:2`` ->
    {"gpu": 6, "gpu:a100": 4, "gpu:v100": 2}; ``(null)`` -> {}."""
    out: Dict[str, int] = {}
    cleaned = re.sub(r"\([^)]*\)", "", text or "")  # socket bindings "(S:0-1)" may hold commas
    for item in cleaned.split(","):
        parts = item.strip().split(":")
        if len(parts) < 2 or not parts[-1].isdigit():
            continue
        name, count = parts[0], int(parts[-1])
        out[name] = out.get(name, 0) + count
        if len(parts) == 3:
            out[f"{name}:{parts[1]}"] = out.get(f"{name}:{parts[1]}", 0) + count
    return out


def _int(text) -> Optional[int]:
    match = re.match(r"\s*(\d+)", str(text)) if text is not None else None
    return int(match.group(1)) if match else None


def _names(text: Optional[str]) -> Optional[frozenset]:
    """A Slurm name list; None for ALL (or nothing said)."""
    text = (text or "").strip()
    if text.upper() in ("", "ALL", "(NULL)"):
        return None
    return frozenset(name for name in text.split(",") if name)


def _failed(result: CommandResult) -> str:
    said = (result.stderr or result.stdout).strip().splitlines()
    return f"{' '.join(result.argv[:3])} failed (rc={result.returncode}): {said[-1] if said else 'no output'}"


# ----------------------------------------------------------------------------------------------------------------
# Slurm


def slurm_node_state(raw: str) -> str:
    """sinfo ``%T`` -> UP/DOWN/DRAINED. Suffixes (``*`` not responding, ``~`` powered off, ``#`` powering up...)
    do not change it: a powered-off idle node still takes jobs, and ``down*`` is down."""
    word = raw.strip().lower().rstrip("*~#!%$@^-+")
    if word.startswith(("drain", "drng")):
        return DRAINED
    if word in ("down", "fail", "failing", "inval", "future", "not_responding", "unk") or word.startswith("down"):
        return DOWN
    return UP


def parse_sinfo(text: str) -> Dict[str, Tuple[bool, str, Optional[int], List[NodeGroup]]]:
    """partition -> (is default, avail, time limit, node groups) from ``sinfo -h -e -o SINFO_FORMAT``."""
    out: Dict[str, Tuple[bool, str, Optional[int], List[NodeGroup]]] = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) != len(SINFO_FIELDS):
            continue
        row = dict(zip(SINFO_FIELDS, (v.strip() for v in values)))
        name = row["partition"].rstrip("*")
        default = row["partition"].endswith("*")
        count = _int(row["nodes"]) or 0
        if name not in out:
            out[name] = (default, row["avail"].lower(), slurm_time_s(row["timelimit"]), [])
        if count == 0:
            continue  # a partition without nodes prints one line with zeros
        features = tuple(f for f in row["features"].split(",") if f and f != "(null)")
        out[name][3].append(NodeGroup(count=count, cpus=_int(row["cpus"]), memory_mb=_int(row["memory"]),
                                      gres=parse_gres(row["gres"]), state=slurm_node_state(row["state"]),
                                      raw_state=row["state"], features=features))
    return out


def parse_scontrol_partitions(text: str) -> Dict[str, Dict[str, str]]:
    """``scontrol show partition`` (one record per partition, or ``-o`` one line each) -> name -> {key: value}."""
    records: Dict[str, Dict[str, str]] = {}
    current: Optional[Dict[str, str]] = None
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            continue
        if key == "PartitionName":
            current = records.setdefault(value, {})
        if current is not None:
            current[key] = value
    return records


def _slurm_partition(name: str, sinfo_row, fields: Mapping[str, str]) -> Partition:
    default, avail, timelimit, groups = sinfo_row if sinfo_row else (False, "", None, [])
    state = (fields.get("State") or avail or "up").lower()
    return Partition(
        name=name, state=UP if state == "up" else state,
        is_default=fields.get("Default", "").upper() == "YES" if fields else default,
        max_walltime_s=slurm_time_s(fields["MaxTime"]) if "MaxTime" in fields else timelimit,
        default_walltime_s=slurm_time_s(fields.get("DefaultTime")),
        max_cpus_per_node=None if fields.get("MaxCPUsPerNode", "").upper() in ("", "UNLIMITED")
        else _int(fields["MaxCPUsPerNode"]),
        max_mem_per_node_mb=slurm_mem_mb(fields.get("MaxMemPerNode")),
        max_mem_per_cpu_mb=slurm_mem_mb(fields.get("MaxMemPerCPU")),
        allow_accounts=_names(fields.get("AllowAccounts")),
        deny_accounts=_names(fields.get("DenyAccounts")) or frozenset(),
        allow_qos=_names(fields.get("AllowQos")), deny_qos=_names(fields.get("DenyQos")) or frozenset(),
        qos=None if fields.get("QoS", "N/A") in ("N/A", "") else fields["QoS"],
        nodes=tuple(groups))


def _pipe_rows(result: CommandResult, default_fields: Sequence[str]) -> List[Dict[str, str]]:
    named = next((a[len("format="):] for a in result.argv if a.lower().startswith("format=")), None)
    fields = [f.strip().lower() for f in (named.split(",") if named else default_fields)]
    return [dict(zip(fields, (v.strip() for v in line.split("|"))))
            for line in result.stdout.splitlines() if line.strip()]


def _association(row: Mapping[str, str]) -> Association:
    return Association(account=row.get("account", ""), partition=row.get("partition") or None,
                       qos=frozenset(q for q in row.get("qos", "").split(",") if q),
                       default_qos=row.get("defaultqos") or None, max_walltime_s=slurm_time_s(row.get("maxwall")),
                       max_per_job=parse_tres(row.get("maxtres")))


def parse_assoc_mgr_associations(text: str) -> List[Association]:
    """The user's associations from ``scontrol show assoc_mgr users=U flags=assoc``: account, partition and the
    per-job limits (``MaxWallPJ`` in minutes, ``MaxTRESPJ``); it lists no QOS. Account-level records (no
    UserName) hold shared or inherited limits and are skipped."""
    found = []
    for block in re.split(r"(?m)^(?=ClusterName=)", text):
        fields = dict(re.findall(r"(\w+)=(\S*)", block))
        if not fields.get("UserName") or "Account" not in fields:
            continue
        wall = re.match(r"\d+", fields.get("MaxWallPJ", ""))
        found.append(Association(account=fields["Account"], partition=fields.get("Partition") or None,
                                 max_walltime_s=int(wall.group(0)) * 60 if wall else None,
                                 max_per_job=parse_tres(fields.get("MaxTRESPJ"))))
    return found


def _qos(row: Mapping[str, str]) -> Qos:
    return Qos(name=row.get("name", ""), max_walltime_s=slurm_time_s(row.get("maxwall")),
               max_per_job=parse_tres(row.get("maxtres")), max_per_node=parse_tres(row.get("maxtrespernode")),
               flags=frozenset(f for f in row.get("flags", "").split(",") if f))


def parse_slurm_shape(results: Sequence[CommandResult]) -> ClusterShape:
    """The shape from :func:`slurm_shape_argvs` answers (plus ``scontrol show config`` when given: cluster name,
    version, whether accounts are enforced). A failed query leaves its part empty and is named in ``errors``."""
    sinfo: Dict = {}
    records: Dict[str, Dict[str, str]] = {}
    assoc_rows: Optional[List[Dict[str, str]]] = None
    qos_rows: Optional[List[Dict[str, str]]] = None
    config: Dict[str, str] = {}
    from_mgr: Optional[List[Association]] = None
    errors: List[str] = []
    for result in results:
        kind = query_kind(result.argv)
        if kind not in ("sinfo", "partition", "config", "assoc", "qos", "assoc_mgr"):
            continue
        if result.returncode != 0:
            errors.append(_failed(result))
        elif kind == "sinfo":
            sinfo = parse_sinfo(result.stdout)
        elif kind == "partition":
            records = parse_scontrol_partitions(result.stdout)
        elif kind == "config":
            config = {k.strip(): v.strip() for k, _, v in
                      (line.partition("=") for line in result.stdout.splitlines()) if v}
        elif kind == "assoc":
            assoc_rows = _pipe_rows(result, ASSOC_FIELDS)
        elif kind == "assoc_mgr":
            from_mgr = parse_assoc_mgr_associations(result.stdout)
        else:
            qos_rows = _pipe_rows(result, QOS_FIELDS)
    cluster = config.get("ClusterName")
    if assoc_rows is not None and cluster:
        assoc_rows = [row for row in assoc_rows if row.get("cluster", cluster) == cluster]
    names = list(dict.fromkeys([*sinfo, *records]))
    version = tuple(int(p) for p in re.findall(r"\d+", config.get("SLURM_VERSION", ""))[:3]) or None
    return ClusterShape(
        scheduler="slurm",
        partitions={name: _slurm_partition(name, sinfo.get(name), records.get(name, {})) for name in names},
        associations=(tuple(_association(row) for row in assoc_rows) if assoc_rows is not None
                      else None if from_mgr is None else tuple(from_mgr)),
        qos=None if qos_rows is None else {row.get("name", ""): _qos(row) for row in qos_rows},
        accounts_enforced="associations" in config.get("AccountingStorageEnforce", "associations"),
        version=version, errors=tuple(errors))


# ----------------------------------------------------------------------------------------------------------------
# PBS Pro / OpenPBS


def pbs_node_state(raw: str) -> str:
    """pbsnodes ``state`` (comma-joined words) -> UP/DOWN/DRAINED: offline is an admin's drain."""
    words = {w.strip().lower() for w in raw.split(",")}
    if words & {"down", "stale", "unresolvable", "state-unknown", "unknown"}:
        return DOWN
    if "offline" in words:
        return DRAINED
    return UP


def _group(nodes: Sequence[NodeGroup]) -> Tuple[NodeGroup, ...]:
    """Alike nodes counted together, in first-seen order."""
    counts: Dict[tuple, int] = {}
    first: Dict[tuple, NodeGroup] = {}
    for node in nodes:
        key = (node.cpus, node.memory_mb, tuple(sorted(node.gres.items())), node.state, node.raw_state,
               node.features)
        counts[key] = counts.get(key, 0) + node.count
        first.setdefault(key, node)
    return tuple(NodeGroup(count=counts[k], cpus=n.cpus, memory_mb=n.memory_mb, gres=n.gres, state=n.state,
                           raw_state=n.raw_state, features=n.features) for k, n in first.items())


def parse_pbsnodes_json(text: str) -> Dict[str, Tuple[Optional[str], NodeGroup]]:
    """node name -> (its queue attribute or None, the node as a one-node group) from ``pbsnodes -a -F json``."""
    out: Dict[str, Tuple[Optional[str], NodeGroup]] = {}
    for name, node in (json.loads(text).get("nodes") or {}).items():
        available = node.get("resources_available") or {}
        gpus = _int(available.get("ngpus"))
        state = str(node.get("state", ""))
        out[name] = (node.get("queue") or None,
                     NodeGroup(count=1, cpus=_int(available.get("ncpus")), memory_mb=pbs_mem_mb(available.get("mem")),
                               gres={"gpu": gpus} if gpus else {}, state=pbs_node_state(state), raw_state=state))
    return out


def _resources_max(section: Mapping) -> Dict[str, int]:
    limits: Dict[str, int] = {}
    for key, value in (section or {}).items():
        if key == "walltime":
            continue
        number = pbs_mem_mb(value) if key in ("mem", "vmem") else _int(value)
        if number is not None:
            limits["gpu" if key in ("ngpus", "gpus") else key] = number
    return limits


def _queue(name: str, attrs: Mapping, server: Mapping, nodes: Tuple[NodeGroup, ...], default: Optional[str]
           ) -> Partition:
    maxes = {**_resources_max(server.get("resources_max") or {}), **_resources_max(attrs.get("resources_max") or {})}
    walltime = (attrs.get("resources_max") or {}).get("walltime") or (server.get("resources_max") or {}).get("walltime")
    enabled = str(attrs.get("enabled", "True")).lower() == "true"
    started = str(attrs.get("started", "True")).lower() == "true"
    state = UP if enabled and started else ("disabled" if not enabled else "stopped")
    defaults = attrs.get("resources_default") or {}
    return Partition(name=name, state=state, is_default=name == default, max_walltime_s=pbs_time_s(walltime),
                     default_walltime_s=pbs_time_s(defaults.get("walltime")), max_per_job=maxes, nodes=nodes)


def parse_pbs_shape(results: Sequence[CommandResult]) -> ClusterShape:
    """The shape from :func:`pbs_shape_argvs` answers. A queue's nodes are those whose ``queue`` attribute names
    it; where no node names a queue, every node serves every execution queue."""
    nodes: Dict[str, Tuple[Optional[str], NodeGroup]] = {}
    queues: Dict[str, Mapping] = {}
    server: Mapping = {}
    errors: List[str] = []
    for result in results:
        words = list(result.argv)
        if result.returncode != 0 or not result.stdout.strip().startswith("{"):
            errors.append(_failed(result))
        elif words[:1] == ["pbsnodes"]:
            nodes = parse_pbsnodes_json(result.stdout)
        elif "-Qf" in words or "-Q" in words:
            queues = json.loads(result.stdout).get("Queue") or {}
        elif "-Bf" in words or "-B" in words:
            server = next(iter((json.loads(result.stdout).get("Server") or {}).values()), {})
    assigned = any(queue for queue, _ in nodes.values())
    partitions = {}
    for name, attrs in queues.items():
        mine = [group for queue, group in nodes.values() if queue == name or not assigned]
        if str(attrs.get("queue_type", "")).lower().startswith("route"):
            mine = [group for _, group in nodes.values()]  # a routing queue forwards to the execution queues
        partitions[name] = _queue(name, attrs, server, _group(mine), server.get("default_queue"))
    return ClusterShape(scheduler="pbspro", partitions=partitions, errors=tuple(errors))


# ----------------------------------------------------------------------------------------------------------------
# Torque


def parse_pbsnodes_xml(text: str) -> Dict[str, Tuple[Tuple[str, ...], NodeGroup]]:
    """node name -> (its properties, the node as a one-node group) from Torque's ``pbsnodes -x``. Memory is
    ``physmem`` of the node's status (absent for a node that never reported)."""
    out: Dict[str, Tuple[Tuple[str, ...], NodeGroup]] = {}
    for node in ET.fromstring(text.strip()).iter("Node"):
        fields = {child.tag: (child.text or "") for child in node}
        out[fields.get("name", "")] = _torque_node(fields)
    return out


def parse_pbsnodes_text(text: str) -> Dict[str, Tuple[Tuple[str, ...], NodeGroup]]:
    """The same from the plain ``pbsnodes`` / ``pbsnodes -a`` listing (name, then indented ``key = value``)."""
    out: Dict[str, Tuple[Tuple[str, ...], NodeGroup]] = {}
    name, fields = None, {}
    for line in text.splitlines() + [""]:
        if line.strip() and not line[0].isspace():
            name, fields = line.strip(), {}
        elif " = " in line and name:
            key, _, value = line.strip().partition(" = ")
            fields[key] = value
        elif not line.strip() and name:
            out[name] = _torque_node(fields)
            name = None
    return out


def _torque_node(fields: Mapping[str, str]) -> Tuple[Tuple[str, ...], NodeGroup]:
    status = dict(item.partition("=")[::2] for item in fields.get("status", "").split(","))
    gpus = _int(fields.get("gpus"))
    state = fields.get("state", "")
    words = {w.strip() for w in state.split(",")}
    node_state = DOWN if words & {"down", "unknown"} else DRAINED if "offline" in words else UP
    properties = tuple(p for p in fields.get("properties", "").split(",") if p)
    return properties, NodeGroup(count=1, cpus=_int(fields.get("np")), memory_mb=pbs_mem_mb(status.get("physmem")),
                                 gres={"gpu": gpus} if gpus else {}, state=node_state, raw_state=state,
                                 features=properties)


def parse_qstat_text_blocks(text: str, header: str = "Queue") -> Dict[str, Dict[str, str]]:
    """``qstat -Qf`` (header "Queue") or ``qstat -Bf`` ("Server") text -> name -> {attribute: value}; values
    folded onto tab-indented continuation lines are joined back."""
    blocks: Dict[str, Dict[str, str]] = {}
    current: Optional[Dict[str, str]] = None
    key = None
    for line in text.splitlines():
        if line.startswith(f"{header}:"):
            current, key = blocks.setdefault(line.split(":", 1)[1].strip(), {}), None
        elif current is not None and line.startswith("\t") and key:
            current[key] += line.strip()
        elif current is not None and " = " in line:
            key, _, value = line.strip().partition(" = ")
            current[key] = value
    return blocks


def _nested(attrs: Mapping[str, str]) -> Dict[str, object]:
    """Dotted qstat text attributes as PBS JSON nests them: resources_max.walltime -> {"resources_max": {...}}."""
    out: Dict[str, object] = {}
    for key, value in attrs.items():
        head, dot, tail = key.partition(".")
        if dot:
            out.setdefault(head, {})[tail] = value  # type: ignore[index]
        else:
            out[key] = value
    return out


def parse_torque_shape(results: Sequence[CommandResult]) -> ClusterShape:
    """The shape from :func:`torque_shape_argvs` answers. A queue whose ``resources_default.neednodes`` names a
    node property is served by the nodes that have it; any other queue by every node."""
    nodes: Dict[str, Tuple[Tuple[str, ...], NodeGroup]] = {}
    queues: Dict[str, Dict[str, str]] = {}
    server: Dict[str, str] = {}
    errors: List[str] = []
    for result in results:
        words = list(result.argv)
        if result.returncode != 0:
            errors.append(_failed(result))
        elif words[:1] == ["pbsnodes"]:
            text = result.stdout
            nodes = parse_pbsnodes_xml(text) if text.lstrip().startswith("<") else parse_pbsnodes_text(text)
        elif "-Q" in words or "-Qf" in words:
            queues = parse_qstat_text_blocks(result.stdout, "Queue")
        elif "-B" in words or "-Bf" in words:
            server = next(iter(parse_qstat_text_blocks(result.stdout, "Server").values()), {})
    server_nested = _nested(server)
    partitions = {}
    for name, attrs in queues.items():
        need = attrs.get("resources_default.neednodes", "")
        known = any(need in properties for properties, _ in nodes.values())
        mine = [group for properties, group in nodes.values() if not known or need in properties]
        partitions[name] = _queue(name, _nested(attrs), server_nested, _group(mine), server.get("default_queue"))
    return ClusterShape(scheduler="torque", partitions=partitions, errors=tuple(errors))
