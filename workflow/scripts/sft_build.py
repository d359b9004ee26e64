"""Snakemake script of rule `sft_build`: the eval-driven and random SFT sets and the contamination report."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.io import job_logging
from evalsel.sft import build_sft

with job_logging(snakemake):
    build_sft(
        recall_files=list(snakemake.input.recalled),
        recall_statistics=snakemake.input.recall_statistics,
        benchmark_files=list(snakemake.input.benchmark),
        benchmark_vectors=list(snakemake.input.queries),
        pool_vectors=list(snakemake.input.pool_vectors),
        pool_shards=list(snakemake.input.pool_shards),
        eval_driven_path=snakemake.output.eval_driven,
        random_path=snakemake.output.random,
        statistics_path=snakemake.output.statistics,
        contamination_path=snakemake.output.contamination,
        review_path=snakemake.output.review,
        fmt=snakemake.params.format,
        random_mix_ratio=snakemake.params.random_mix_ratio,
        random_match=snakemake.params.random_match,
        tokenizer=snakemake.params.tokenizer,
        seed=snakemake.params.seed,
        leak_guard=dict(snakemake.params.leak_guard),
        longest_seed_n=snakemake.params.longest_seed_n,
        max_similarity=snakemake.params.max_similarity,
        recall_splits=list(snakemake.params.recall_splits),
        eval_splits=list(snakemake.params.eval_splits),
    )
