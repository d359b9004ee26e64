"""Snakemake script of rule `transfer_guard`: one arm's SFT set checked against a transfer benchmark."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.guard.transfer import run_transfer_guard

with job_logging(snakemake):
    run_transfer_guard(
        [snakemake.input.sft],
        list(snakemake.input.benchmark),
        snakemake.output[0],
        leak_guard=dict(snakemake.params.leak_guard),
    )
