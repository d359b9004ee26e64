# Data: benchmark questions (C-Eval or local files) and pool sources, validated and normalised.


def benchmark_splits():
    """Splits benchmark_fetch loads: recall and eval splits, plus dev when eval is few-shot (sorted str list)."""
    splits = set(config["benchmark"]["recall_splits"]) | set(
        config["benchmark"]["eval_splits"]
    )
    if int(config["eval"]["few_shot"]) > 0:
        splits.add("dev")
    return sorted(str(s) for s in splits)


BENCHMARK_LOCAL = config["benchmark"].get("local", {})
BENCHMARK_COLUMNS = BENCHMARK_LOCAL.get("columns", {})


def benchmark_local_files(wildcards):
    """The local benchmark files of a subject, so that editing one re-runs benchmark_fetch."""
    if config["benchmark"]["source"] != "local":
        return []
    pattern = BENCHMARK_LOCAL["path"]
    return [
        pattern.replace("{subject}", wildcards.subject).replace("{split}", s)
        for s in benchmark_splits()
    ]


def source_setting(key, default=None):
    """Param function: one setting of the {source} pool source (a plain builtin)."""

    def get(wildcards):
        return SOURCES[wildcards.source].get(key, default)

    return get


def source_local_file(wildcards):
    """A local source's file, declared as input so that editing it re-prepares the source."""
    path = SOURCES[wildcards.source].get("path")
    return [path] if path else []


rule benchmark_fetch:
    input:
        code=pkg("benchmark.py"),
        local=benchmark_local_files,
    output:
        "results/benchmark/{subject}.jsonl",
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
        source=config["benchmark"]["source"],
        hf_name=config["benchmark"].get("hf_name", "ceval/ceval-exam"),
        splits=benchmark_splits(),
        # A function, so that Snakemake leaves the {subject}/{split} pattern unexpanded.
        local_path=lambda wildcards: BENCHMARK_LOCAL.get("path"),
        column_id=BENCHMARK_COLUMNS.get("id", "id"),
        column_question=BENCHMARK_COLUMNS.get("question", "question"),
        column_answer=BENCHMARK_COLUMNS.get("answer", "answer"),
        column_options=list(BENCHMARK_COLUMNS.get("options", ["A", "B", "C", "D", "E"])),
        column_explanation=BENCHMARK_COLUMNS.get("explanation", "explanation"),
    script:
        "../workflow/scripts/benchmark_fetch.py"


checkpoint pool_prepare:
    input:
        code=pkg("pool.py"),
        local=source_local_file,
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
        hf_name=source_setting("hf_name"),
        hf_config=source_setting("hf_config"),
        split=source_setting("split", "train"),
        path=source_setting("path"),
        format=source_setting("format", "auto"),
        medical=source_setting("medical", True),
        max_samples=source_setting("max_samples"),
        shard_size=config["pool"]["shard_size"],
        embed_text=config["pool"]["embed_text"],
        max_chars=config["pool"]["max_chars"],
        min_chars=config["pool"]["min_chars"],
        on_bad_record=config["pool"]["on_bad_record"],
    script:
        "../workflow/scripts/pool_prepare.py"
