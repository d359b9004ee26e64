# Data: benchmark questions (C-Eval or local files) and pool sources, validated and normalised.


# Splits benchmark_fetch loads: recall and eval splits, plus dev when eval is few-shot.
BENCHMARK_SPLITS = sorted(
    {str(s) for s in config["benchmark"]["recall_splits"]}
    | {str(s) for s in config["benchmark"]["eval_splits"]}
    | ({"dev"} if int(config["eval"]["few_shot"]) > 0 else set())
)
# Recall-only splits: never scored, so their questions may come without answers (C-Eval's test).
BENCHMARK_UNSCORED = sorted(
    {str(s) for s in config["benchmark"]["recall_splits"]}
    - {str(s) for s in config["benchmark"]["eval_splits"]}
    - ({"dev"} if int(config["eval"]["few_shot"]) > 0 else set())
)
BENCHMARK_LOCAL = config["benchmark"]["local"]
BENCHMARK_COLUMNS = BENCHMARK_LOCAL["columns"]
BENCHMARK_LOCAL_FILES = (
    [
        # {subject} stays a wildcard; {split} is filled in here.
        BENCHMARK_LOCAL["path"].replace("{split}", s)
        for s in BENCHMARK_SPLITS
    ]
    if config["benchmark"]["source"] == "local"
    else []
)


rule benchmark_fetch:
    input:
        code=code_of("benchmark_fetch"),
        # Local files are inputs, so that editing one re-runs the rule.
        local=BENCHMARK_LOCAL_FILES,
    output:
        BENCHMARK,
    log:
        "logs/benchmark_fetch/{subject}.log",
    benchmark:
        "benchmarks/benchmark_fetch/{subject}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        **benchmark_fetch_params(BENCHMARK_SPLITS, BENCHMARK_UNSCORED),
    script:
        "../scripts/benchmark_fetch.py"


checkpoint pool_prepare:
    input:
        code=code_of("pool_prepare"),
        # A local source file is an input, so that editing it re-prepares the source.
        local=lambda wc: (
            [SOURCES[wc.source]["path"]] if SOURCES[wc.source].get("path") else []
        ),
    output:
        directory("results/pool/{source}"),
    log:
        "logs/pool_prepare/{source}.log",
    benchmark:
        "benchmarks/pool_prepare/{source}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        # Bounded by one shard being written plus the set of seen ids (about 100 bytes a record).
        mem_mb=4000,
        runtime=240,
    params:
        hf_name=lambda wc: SOURCES[wc.source].get("hf_name"),
        hf_config=lambda wc: SOURCES[wc.source].get("hf_config"),
        hf_data_files=lambda wc: SOURCES[wc.source].get("hf_data_files"),
        split=lambda wc: SOURCES[wc.source].get("split", "train"),
        path=lambda wc: SOURCES[wc.source].get("path"),
        format=lambda wc: SOURCES[wc.source].get("format", "auto"),
        medical=lambda wc: SOURCES[wc.source].get("medical", True),
        max_samples=lambda wc: SOURCES[wc.source].get("max_samples"),
        shard_size=config["pool"]["shard_size"],
        embed_text=config["pool"]["embed_text"],
        max_chars=config["pool"]["max_chars"],
        min_chars=config["pool"]["min_chars"],
        on_bad_record=config["pool"]["on_bad_record"],
        encoding=lambda wc: SOURCES[wc.source].get("encoding", "utf-8"),
        # only hub sources read the mirror: moving it does not re-prepare local files
        hub_mirror=lambda wc: (
            config["hub_mirror"] if SOURCES[wc.source].get("hf_name") else None
        ),
    script:
        "../scripts/pool_prepare.py"
