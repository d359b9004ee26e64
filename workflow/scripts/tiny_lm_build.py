"""Snakemake script of rule `tiny_lm_build`: the tiny Qwen2 demo LM, its tokenizer trained on the demo texts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.demo.tiny_lm import build_tiny_lm, texts_from_jsonl

with job_logging(snakemake):
    texts = texts_from_jsonl(list(snakemake.input.benchmark) + list(snakemake.input.pool))
    build_tiny_lm(snakemake.output[0], texts, seed=int(snakemake.params.seed))
