"""The SLURM profile for real: a one-node cluster on localhost (scripts/slurm_local.sh) runs a
multi-GPU job as one task and the demo DAG through sbatch.

Needs sbatch, and root to start the daemons (or EVALSEL_SLURM_EXISTING=1 with a cluster up whose
nodes have 2 GPUs). ``python -m pytest tests/test_slurm.py -m slurm -s``; the demo takes minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import copy_repo, run_snakemake

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
PROFILE = REPO / "profiles" / "slurm"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch is absent (scripts/slurm_local.sh install)"),
]

# Polling suited to a test cluster without accounting (see scripts/slurm_local.sh).
TEST_CLUSTER_ARGS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-no-account",
    "--latency-wait",
    "5",
    "--slurm-keep-successful-logs",
]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running cluster; yields its jobcomp log (None for an existing cluster). Stops what it started."""
    if os.environ.get("EVALSEL_SLURM_EXISTING"):
        yield None
        return
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("starting a local SLURM cluster needs root and slurmctld (scripts/slurm_local.sh install)")
    state = tmp_path_factory.mktemp("slurm")
    env = dict(
        os.environ,
        EVALSEL_SLURM_DIR=str(state),
        # The node advertises 2 fake GPUs, and memory enough for the rules' real requests
        # (train mem_mb=64000): nothing enforces it on this test node.
        EVALSEL_SLURM_GPUS="2",
        EVALSEL_SLURM_CPUS="4",
        EVALSEL_SLURM_MEM_MB="131072",
    )
    subprocess.run([str(SCRIPT), "start"], env=env, check=True, timeout=120)
    try:
        yield state / "jobcomp.txt"
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=True, timeout=120)


def slurm_snakemake(workdir: Path, *args: str, pythonpath: Path, timeout: int) -> str:
    """Snakemake through the SLURM profile in ``workdir``; returns its output (the test fails on error)."""
    proc = run_snakemake(
        workdir,
        "--workflow-profile",
        str(PROFILE),
        *TEST_CLUSTER_ARGS,
        *args,
        timeout=timeout,
        env={"PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-8000:]
    return proc.stdout


def submitted(output: str) -> dict[str, str]:
    """SLURM job id -> rule of every job Snakemake submitted through sbatch."""
    return {
        jobid: rule for jobid, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", output)
    }


def assert_completed_through_slurm(output: str, jobcomp: Path | None) -> dict[str, str]:
    """Every submitted job ran under SLURM with Snakemake's run id as its name and completed."""
    jobs = submitted(output)
    assert jobs, output[-4000:]
    if jobcomp is None:
        return jobs
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    records = {}
    for line in jobcomp.read_text().splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if fields.get("Name") == run_id:
            records[fields["JobId"]] = fields["JobState"]
    assert records == {jobid: "COMPLETED" for jobid in jobs}
    return jobs


MULTI_GPU_SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "out/train.txt"

    # Named like the workflow's training rule so that the profile's set-resources apply.
    rule train:
        output: "out/train.txt"
        resources: gpu=2, mem_mb=500, runtime=5
        threads: 1
        shell: "python -m evalsel_probe >> {output}"
    """
)

PROBE = textwrap.dedent(
    """
    import os
    from evalsel.core.gpu import claim

    with claim(2) as ids:
        print(",".join(ids), os.environ["SLURM_NTASKS"], os.environ["SLURM_JOB_ID"])
    """
)


def test_multi_gpu_job_is_one_task_seeing_all_its_gpus(slurm_cluster, tmp_path):
    """gpu=2 is one sbatch job, one task, both GPUs; even with a site default of tasks=1, which
    the plugin would otherwise turn into --ntasks-per-gpu (one task per GPU)."""
    (tmp_path / "Snakefile").write_text(MULTI_GPU_SNAKEFILE)
    (tmp_path / "evalsel_probe.py").write_text(PROBE)
    out = slurm_snakemake(
        tmp_path, "--jobs", "2", "--default-resources", "tasks=1", "--verbose", pythonpath=REPO / "src", timeout=600
    )
    sbatch = [line for line in out.splitlines() if "sbatch call: sbatch" in line and "rule_train" in line]
    assert len(sbatch) == 1 and "--gpus=2" in sbatch[0] and "--nodes=1" in sbatch[0]
    assert "--ntasks-per-gpu" not in sbatch[0]
    lines = (tmp_path / "out/train.txt").read_text().splitlines()
    assert len(lines) == 1, lines  # one task ran the job once
    devices, ntasks, _ = lines[0].split()
    assert (devices, ntasks) == ("0,1", "1")
    assert_completed_through_slurm(out, slurm_cluster)


def test_demo_dag_through_slurm(slurm_cluster, tmp_path):
    work = copy_repo(tmp_path)
    t0 = time.monotonic()
    out = slurm_snakemake(
        work,
        "--configfile",
        "demo/config.yaml",
        "--jobs",
        "4",
        "--max-threads",
        "2",
        pythonpath=work / "src",
        timeout=3600,
    )
    minutes = (time.monotonic() - t0) / 60
    print(f"demo DAG through SLURM: {minutes:.1f} min")
    for target in ("results/report/compare.md", "results/report/compare.json", "results/merged/eval_driven-seed42"):
        assert (work / target).exists(), target
    rules = set(assert_completed_through_slurm(out, slurm_cluster).values())
    assert {"pool_prepare", "pool_embed", "recall", "sft_build", "train", "evaluate", "report"} <= rules
