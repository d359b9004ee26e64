# Embedding: benchmark questions (e5 queries) and pool shards (e5 passages), one job per shard;
# plus the tiny demo embedder. Only the settings of the configured backend are params, so editing
# another backend's settings (or recall settings) re-embeds nothing.

EMBED = config["embedding"]
EMBED_ST = EMBED["backend"] == "sentence_transformers"
EMBED_ZHIPU = EMBED["backend"] == "zhipuai"

# Every setting that decides the vectors, one leaf each; None where the backend ignores it.
# The API key is not here: params end up in Snakemake's metadata.
EMBED_PARAMS = {
    "backend": EMBED["backend"],
    "model": embedder_model() if EMBED_ST else None,
    "device": EMBED["device"] if EMBED_ST else None,
    "batch_size": None if EMBED_ZHIPU else EMBED["batch_size"],
    "max_tokens": None if EMBED_ZHIPU else EMBED["max_tokens"],
    "dtype": EMBED["dtype"],
    **{
        f"zhipuai_{leaf}": value if EMBED_ZHIPU else None
        for leaf, value in sorted(EMBED.get("zhipuai", {}).items())
    },
}
EMBED_INPUT = embedder_input() if EMBED_ST else []
# the ZhipuAI client module is imported only by that backend's jobs
EMBED_SKIP = [] if EMBED_ZHIPU else ["evalsel.embed.zhipu"]
# a GPU only for the local model on CUDA, held by evalsel.core.gpu.claim ("auto" claims one: on a
# CPU-only box set device: cpu)
EMBED_GPU = 1 if EMBED_ST and EMBED["device"] != "cpu" else 0
# API jobs are I/O bound: one thread each; `--resources zhipuai_api=1` runs one API job at a time
EMBED_THREADS = 1 if EMBED_ZHIPU else 4


rule tiny_embedder_build:
    input:
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        pool=all_pool_shards,
        code=code_of("tiny_embedder_build"),
    output:
        directory(TINY_EMBEDDER),
    log:
        "logs/tiny_embedder_build/tiny_embedder_build.log",
    benchmark:
        "benchmarks/tiny_embedder_build/tiny_embedder_build.tsv"
    conda:
        "../envs/embed.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        seed=config["seed"],
    script:
        "../scripts/tiny_embedder_build.py"


rule benchmark_embed:
    input:
        benchmark=BENCHMARK,
        model=EMBED_INPUT,
        code=code_of("benchmark_embed", skip=EMBED_SKIP),
    output:
        npy="results/vectors/benchmark/{subject}.npy",
        ids="results/vectors/benchmark/{subject}.ids.txt",
    log:
        "logs/benchmark_embed/{subject}.log",
    benchmark:
        "benchmarks/benchmark_embed/{subject}.tsv"
    conda:
        "../envs/embed.yaml"
    threads: EMBED_THREADS
    resources:
        mem_mb=8000,
        gpu=EMBED_GPU,
        zhipuai_api=1 if EMBED_ZHIPU else 0,
    params:
        **EMBED_PARAMS,
        recall_splits=list(config["benchmark"]["recall_splits"]),
        query_text=config["benchmark"]["query_text"],
    script:
        "../scripts/benchmark_embed.py"


rule pool_embed:
    input:
        shard=POOL_SHARD,
        model=EMBED_INPUT,
        code=code_of("pool_embed", skip=EMBED_SKIP),
    output:
        npy="results/vectors/pool/{source}/{shard}.npy",
        ids="results/vectors/pool/{source}/{shard}.ids.txt",
        stats="results/vectors/pool/{source}/{shard}.stats.json",
    log:
        "logs/pool_embed/{source}/{shard}.log",
    benchmark:
        "benchmarks/pool_embed/{source}/{shard}.tsv"
    conda:
        "../envs/embed.yaml"
    threads: EMBED_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=EMBED_GPU,
        zhipuai_api=1 if EMBED_ZHIPU else 0,
    params:
        **EMBED_PARAMS,
    script:
        "../scripts/pool_embed.py"


# RDS+ (evalsel.embed.rds): the base model's position-weighted mean hidden states, for rds arms.
# Only these settings are params: an arm's budget or selection settings re-embed nothing.
RDS = config["rds"]
RDS_PARAMS = {
    # a hub name or path; None when the model is a file input of the DAG (the demo's tiny LM)
    "model": None if rds_model_input() else rds_model(),
    "device": RDS["device"],
    "batch_size": RDS["batch_size"],
    "max_tokens": RDS["max_tokens"],
    "dtype": RDS["dtype"],
}
RDS_GPU = 0 if RDS["device"] == "cpu" else 1


rule rds_benchmark_embed:
    input:
        benchmark=BENCHMARK,
        model=rds_model_input(),
        code=code_of("rds_benchmark_embed"),
    output:
        npy="results/vectors/rds/benchmark/{subject}.npy",
        ids="results/vectors/rds/benchmark/{subject}.ids.txt",
    log:
        "logs/rds_benchmark_embed/{subject}.log",
    benchmark:
        "benchmarks/rds_benchmark_embed/{subject}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        gpu=RDS_GPU,
    params:
        **RDS_PARAMS,
        recall_splits=list(config["benchmark"]["recall_splits"]),
        query_text=config["benchmark"]["query_text"],
    script:
        "../scripts/rds_benchmark_embed.py"


rule rds_pool_embed:
    input:
        shard=POOL_SHARD,
        model=rds_model_input(),
        code=code_of("rds_pool_embed"),
    output:
        npy="results/vectors/rds/pool/{source}/{shard}.npy",
        ids="results/vectors/rds/pool/{source}/{shard}.ids.txt",
        stats="results/vectors/rds/pool/{source}/{shard}.stats.json",
    log:
        "logs/rds_pool_embed/{source}/{shard}.log",
    benchmark:
        "benchmarks/rds_pool_embed/{source}/{shard}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=RDS_GPU,
    params:
        **RDS_PARAMS,
    script:
        "../scripts/rds_pool_embed.py"
