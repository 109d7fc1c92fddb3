"""Stand-in ``scontrol``, ``sacctmgr`` and ``sinfo`` for tests that render or submit a Slurm sweep without the test cluster.

They answer the Slurm adapter's limit queries (``scontrol show config``, ``scontrol show assoc_mgr ...``,
``sacctmgr ... show qos ...``) as the real Slurm 22.05 of tests/fixtures/slurm-22.05 did; the QOS list is the one
of test_slurm_adapter's PROBE_QOS; ``sinfo`` knows no partitions (the cluster's shape stays unread). Anything else
they refuse (exit 2), so a test that needs more says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional

from captures import fixture_folder

_CAPTURES = fixture_folder("slurm-22.05")
_SCRIPTS = {
    "scontrol": f"""#!/bin/sh
case "$1 $2" in
  "show config") cat "{_CAPTURES / 'scontrol_config_limits.txt'}" ;;
  "show assoc_mgr") cat "{_CAPTURES / 'scontrol_assoc_mgr.txt'}" ;;
  *) echo "stand-in scontrol: $* is not answered here" >&2; exit 2 ;;
esac
""",
    "sinfo": """#!/bin/sh
# no partitions known here: the cluster's shape stays unread and nothing is checked against it
exit 0
""",
    "sacctmgr": """#!/bin/sh
case "$*" in
  *" show qos "*) echo "normal|" ;;
  *) echo "stand-in sacctmgr: $* is not answered here" >&2; exit 2 ;;
esac
""",
}


def environ(tmp_dir: os.PathLike, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """An environment for subprocesses with the stand-ins (written to ``tmp_dir``/slurm-limits) first on PATH."""
    bin_dir = Path(tmp_dir) / "slurm-limits"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in _SCRIPTS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env
