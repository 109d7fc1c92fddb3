import sys, time, json
sys.path.insert(0, "tests")
import pytest
from test_slurm_e2e import _sweep, hpc, status, poll_until_done, TWO_SHAPES

@pytest.mark.slurm
def test_dbg(slurm_cluster):
    cluster = slurm_cluster
    root = _sweep(cluster, "caps", TWO_SHAPES)
    assert hpc(cluster, root, "generate", str(root)).returncode == 0
    cluster.set_user_limit(10)
    first = hpc(cluster, root, "submit", str(root))
    final = poll_until_done(cluster, root)
    job_ids = sorted({c["job_id"].split("_")[0] for c in final["configs"]})
    print("JOBIDS", job_ids, [c["job_id"] for c in final["configs"]])
    for i in range(5):
        print(cluster.run_as_root(["sacct","-X","-n","-P","-j",",".join(job_ids),"--format=JobID,JobIDRaw,State,AllocTRES"]).stdout)
        time.sleep(2)
    assert 0
