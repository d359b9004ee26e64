"""Snakemake script of rule `evaluate`: score one model (base, or an arm's adapter) on the benchmark."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.evaluate.multiple_choice import evaluate

p = snakemake.params
base = list(snakemake.input.base)  # the tiny demo model when the DAG builds it
base_model = base[0] if base else p.hub_base_model
adapter = list(snakemake.input.adapter)
with job_logging(snakemake):
    evaluate(
        benchmark_paths=list(snakemake.input.benchmark),
        eval_splits=list(p.eval_splits),
        base_model=base_model,
        out_path=snakemake.output[0],
        adapter=adapter[0] if adapter else None,
        model_name=snakemake.wildcards.model,
        few_shot=p.few_shot,
        language=p.language,
        threads=snakemake.threads,
        **dict(p.settings),
    )
