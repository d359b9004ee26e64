"""Snakemake script of rule `crosscheck`: one model scored by lm-evaluation-harness and compared."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.evaluate.crosscheck import crosscheck

p = snakemake.params
base = list(snakemake.input.base)  # the tiny demo model when the DAG builds it
adapter = list(snakemake.input.adapter)
with job_logging(snakemake):
    crosscheck(
        benchmark_paths=list(snakemake.input.benchmark),
        eval_splits=list(p.eval_splits),
        base_model=base[0] if base else p.hub_base_model,
        adapter=adapter[0] if adapter else None,
        eval_path=snakemake.input.eval,
        out_path=snakemake.output[0],
        task_dir=p.task_dir,
        few_shot=p.few_shot,
        batch_size=p.batch_size,
    )
