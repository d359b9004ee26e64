"""Snakemake script of rule `base_model_import`: a GGUF base model imported into a model folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.train.gguf_import import import_gguf

with job_logging(snakemake):
    import_gguf(snakemake.params.spec, snakemake.output[0])
