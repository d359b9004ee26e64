"""Snakemake script of rule `tiny_embedder_build`: the tiny demo SentenceTransformer."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.demo.tiny_embedder import build_tiny_embedder, corpus_from_files

with job_logging(snakemake):
    texts = corpus_from_files(list(snakemake.input.benchmark), list(snakemake.input.pool))
    build_tiny_embedder(snakemake.output[0], texts, seed=snakemake.params.seed)
