"""Snakemake script of rule `report`: the comparison of the base model and every arm."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.report.compare import write_report

with job_logging(snakemake):
    write_report(
        list(snakemake.input.evals),
        out_md=snakemake.output.md,
        out_json=snakemake.output.json,
        out_png=snakemake.output.png,
        arms=list(snakemake.params.arms),
        seeds=list(snakemake.params.seeds),
        alpha=snakemake.params.alpha,
        bootstrap_samples=snakemake.params.bootstrap_samples,
        max_letter_share=snakemake.params.max_letter_share,
        seed=snakemake.params.seed,
        recall_splits=list(snakemake.params.recall_splits),
        eval_splits=list(snakemake.params.eval_splits),
        selection_statistics=dict(zip(snakemake.params.select_arms, snakemake.input.selection_statistics)),
        arm_specs=dict(snakemake.params.arm_specs),
        overlap=snakemake.input.overlap,
        contamination=snakemake.input.contamination,
        sft_statistics=snakemake.input.sft_statistics,
        transfer={
            bench: {
                "splits": splits,
                "evals": [p for p in snakemake.input.transfer_evals if f"/transfer/{bench}/" in p],
                "contamination": [p for p in snakemake.input.transfer_contamination if f"/transfer/{bench}/" in p],
            }
            for bench, splits in snakemake.params.transfer.items()
        },
    )
