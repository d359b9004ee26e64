# Selection, one job per arm (config `arms`, evalsel.select.arms): recall over vectors (cosine and rds
# arms) or DSIR over hashed n-grams, then each arm's SFT set, the random arms sized like the arm
# they match, and the summaries over all arms (contamination report, statistics, overlap).

# The contamination guard's settings (evalsel.guard.check), one dict for every selection and SFT job.
GUARD_SETTINGS = {
    k: v for k, v in config["leak_guard"].items() if k != "longest_seed_n"
}
# max_similarity of the guard in the embedding's space (None without a cosine arm).
GUARD_MAX_SIMILARITY = config["recall"]["max_similarity"] if GUARD_VECTORS else None


rule recall:
    input:
        code=code_of("recall"),
        queries=arm_query_vectors,
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        pool_vectors=arm_pool_vectors,
        pool_shards=all_pool_shards,
    output:
        recalled=expand("results/select/{{arm}}/{subject}.jsonl", subject=SUBJECTS),
        statistics=report(
            SELECT_STATISTICS,
            caption="../report/recall_statistics.rst",
            category="2. Selection",
            subcategory="{arm}",
        ),
        histogram=report(
            SIMILARITY_HIST,
            caption="../report/similarity_hist.rst",
            category="2. Selection",
            subcategory="{arm}",
        ),
    log:
        "logs/recall/{arm}.log",
    benchmark:
        "benchmarks/recall/{arm}.tsv"
    wildcard_constraints:
        arm=one_of(RECALL_ARMS),
    conda:
        "../envs/select.yaml"
    threads: 4
    resources:
        # One block of vectors and scores (block_size x questions) plus the pool ids.
        mem_mb=8000,
        runtime=120,
        # the torch backend ("auto" on a CUDA host) computes on one GPU, which the job claims
        gpu=0 if config["recall"]["backend"] == "numpy" else 1,
    params:
        subjects=SUBJECTS,
        # the arm's effective recall settings (evalsel.select.arms: config recall + the arm's overrides)
        settings=lambda wc: ARM[wc.arm].recall,
        block_size=config["recall"]["block_size"],
        backend=config["recall"]["backend"],
        leak_guard=GUARD_SETTINGS,
    script:
        "../scripts/recall.py"


rule dsir_select:
    input:
        code=code_of("dsir_select"),
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        pool_shards=all_pool_shards,
    output:
        selected=SELECTED,
        statistics=report(
            SELECT_STATISTICS,
            caption="../report/dsir_statistics.rst",
            category="2. Selection",
            subcategory="{arm}",
        ),
        histogram=report(
            SIMILARITY_HIST,
            caption="../report/dsir_hist.rst",
            category="2. Selection",
            subcategory="{arm}",
        ),
    log:
        "logs/dsir_select/{arm}.log",
    benchmark:
        "benchmarks/dsir_select/{arm}.tsv"
    wildcard_constraints:
        arm=one_of(DSIR_ARMS),
    conda:
        "../envs/select.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        budget=lambda wc: ARM[wc.arm].budget,
        settings=lambda wc: ARM[wc.arm].dsir,
        recall_splits=list(config["benchmark"]["recall_splits"]),
        query_text=config["benchmark"]["query_text"],
        leak_guard=GUARD_SETTINGS,
        seed=config["seed"],
    script:
        "../scripts/dsir_select.py"


rule listed_select:
    input:
        code=code_of("listed_select"),
        ids=lambda wc: ARM[wc.arm].ids,
        pool_shards=all_pool_shards,
    output:
        selected=SELECTED,
        statistics=SELECT_STATISTICS,
    log:
        "logs/listed_select/{arm}.log",
    benchmark:
        "benchmarks/listed_select/{arm}.tsv"
    wildcard_constraints:
        arm=one_of(LISTED_ARMS),
    conda:
        "../envs/select.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/listed_select.py"


rule sft_build:
    input:
        code=code_of("sft_build"),
        selected=lambda wc: selection_files(wc.arm),
        selection_statistics=SELECT_STATISTICS,
        queries=guard_query_vectors(),
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        pool_vectors=guard_pool_vectors,
        pool_shards=all_pool_shards,
    output:
        sft=SFT_SET,
        statistics=SFT_SET_STATS,
        drops=SFT_SET_DROPS,
    log:
        "logs/sft_build/{arm}.log",
    benchmark:
        "benchmarks/sft_build/{arm}.tsv"
    wildcard_constraints:
        arm=one_of(SELECT_ARMS),
    conda:
        "../envs/select.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        format=config["sft"]["format"],
        random_mix_ratio=lambda wc: ARM[wc.arm].mix_ratio,
        tokenizer=config["sft"]["tokenizer"],
        seed=config["seed"],
        leak_guard=GUARD_SETTINGS,
        max_similarity=GUARD_MAX_SIMILARITY,
    script:
        "../scripts/sft_build.py"


rule sft_random:
    input:
        code=code_of("sft_random"),
        match=lambda wc: f"results/sft/{ARM[wc.arm].match}.stats.json",
        queries=guard_query_vectors(),
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        pool_vectors=guard_pool_vectors,
        pool_shards=all_pool_shards,
    output:
        sft=SFT_SET,
        statistics=SFT_SET_STATS,
        drops=SFT_SET_DROPS,
    log:
        "logs/sft_random/{arm}.log",
    benchmark:
        "benchmarks/sft_random/{arm}.tsv"
    wildcard_constraints:
        arm=one_of(RANDOM_ARMS),
    conda:
        "../envs/select.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        format=config["sft"]["format"],
        random_match=config["sft"]["random_match"],
        tokenizer=config["sft"]["tokenizer"],
        seed=config["seed"],
        leak_guard=GUARD_SETTINGS,
        max_similarity=GUARD_MAX_SIMILARITY,
    script:
        "../scripts/sft_random.py"


rule sft_summary:
    input:
        code=code_of("sft_summary"),
        arms=[f for arm in ARM for f in sft_arm_files(arm)],
        queries=guard_query_vectors(),
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        pool_vectors=guard_pool_vectors,
        pool_shards=all_pool_shards,
    output:
        statistics=report(
            SFT_STATISTICS,
            caption="../report/sft_statistics.rst",
            category="2. Selection",
        ),
        contamination=report(
            CONTAMINATION,
            caption="../report/contamination.rst",
            category="2. Selection",
        ),
        review=report(
            "results/sft/contamination_review.md",
            caption="../report/contamination_review.rst",
            category="2. Selection",
        ),
    log:
        "logs/sft_summary/sft_summary.log",
    benchmark:
        "benchmarks/sft_summary/sft_summary.tsv"
    conda:
        "../envs/select.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        arms=list(ARM),
        seed=config["seed"],
        leak_guard=GUARD_SETTINGS,
        max_similarity=GUARD_MAX_SIMILARITY,
        longest_seed_n=config["leak_guard"]["longest_seed_n"],
        recall_splits=list(config["benchmark"]["recall_splits"]),
        eval_splits=list(config["benchmark"]["eval_splits"]),
    script:
        "../scripts/sft_summary.py"


rule arms_overlap:
    input:
        code=code_of("arms_overlap"),
        sft=[SFT_SET.format(arm=arm) for arm in ARM],
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
    output:
        json=OVERLAP,
        png=report(
            "results/sft/overlap.png",
            caption="../report/overlap.rst",
            category="2. Selection",
        ),
    log:
        "logs/arms_overlap/arms_overlap.log",
    benchmark:
        "benchmarks/arms_overlap/arms_overlap.tsv"
    conda:
        "../envs/select.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        arms=list(ARM),
        recall_splits=list(config["benchmark"]["recall_splits"]),
        query_text=config["benchmark"]["query_text"],
    script:
        "../scripts/arms_overlap.py"
