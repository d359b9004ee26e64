"""Snakemake script of rule `benchmark_fetch`: load, validate and normalise one benchmark subject."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.data.benchmark import run_benchmark_fetch

with job_logging(snakemake):
    run_benchmark_fetch(
        output=snakemake.output[0],
        # a transfer benchmark's subject wildcard is {tsubject}
        subject=snakemake.wildcards.get("subject") or snakemake.wildcards.get("tsubject"),
        splits=list(snakemake.params.splits),
        unscored_splits=list(snakemake.params.unscored_splits),
        source=snakemake.params.source,
        hf_name=snakemake.params.hf_name,
        local_path=snakemake.params.local_path,
        encoding=snakemake.params.encoding,
        hf_data_files=snakemake.params.hf_data_files,
        hub_mirror=snakemake.params.hub_mirror,
        id_prefix=snakemake.params.get("id_prefix", ""),
        columns={
            "id": snakemake.params.column_id,
            "question": snakemake.params.column_question,
            "answer": snakemake.params.column_answer,
            "options": list(snakemake.params.column_options),
            "explanation": snakemake.params.column_explanation,
        },
    )
