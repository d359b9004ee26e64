"""Snakemake script of rule `rl_prompts`: the RL prompts from the labelled RL splits."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.rl.prompts import build_rl_prompts

p = snakemake.params
with job_logging(snakemake):
    build_rl_prompts(
        rl_paths=list(snakemake.input.rl),
        scored_paths=list(snakemake.input.scored),
        rl_splits=list(p.rl_splits),
        eval_splits=list(p.eval_splits),
        out_path=snakemake.output.prompts,
        stats_path=snakemake.output.stats,
        language=p.language,
        guard=dict(p.guard),
    )
