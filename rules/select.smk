# Selection: recall pool samples for the benchmark questions, then build the two SFT arms.

# The contamination guard's settings (evalsel.guard), one dict for recall and sft_build.
GUARD_SETTINGS = {
    k: v for k, v in config["leak_guard"].items() if k != "longest_seed_n"
}


rule recall:
    input:
        code=pkg(
            "records.py", "vectors.py", "leak.py", "guard.py", "recall.py", "gpu.py"
        ),
        queries=expand("results/vectors/benchmark/{subject}.npy", subject=SUBJECTS),
        benchmark=expand("results/benchmark/{subject}.jsonl", subject=SUBJECTS),
        pool_vectors=all_pool_vectors,
        pool_shards=all_pool_shards,
    output:
        recalled=expand("results/recall/{subject}.jsonl", subject=SUBJECTS),
        statistics=report(
            "results/recall/recall_statistics.json",
            caption="../report/recall_statistics.rst",
            category="2. Selection",
        ),
        histogram=report(
            "results/recall/similarity_hist.png",
            caption="../report/similarity_hist.rst",
            category="2. Selection",
        ),
    log:
        "logs/recall/recall.log",
    benchmark:
        "benchmarks/recall/recall.tsv"
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
        strategy=config["recall"]["strategy"],
        top_k=config["recall"]["top_k"],
        similarity_threshold=config["recall"]["similarity_threshold"],
        max_similarity=config["recall"]["max_similarity"],
        topk_mean_m=config["recall"]["topk_mean_m"],
        budget=config["recall"]["budget"],
        per_subject_quota=config["recall"]["per_subject_quota"],
        near_duplicate_threshold=config["recall"]["near_duplicate_threshold"],
        block_size=config["recall"]["block_size"],
        backend=config["recall"]["backend"],
        leak_guard=GUARD_SETTINGS,
    script:
        "../workflow/scripts/recall.py"


rule sft_build:
    input:
        code=pkg(
            "records.py",
            "vectors.py",
            "leak.py",
            "guard.py",
            "recall.py",
            "sft.py",
            "gpu.py",
        ),
        recalled=expand("results/recall/{subject}.jsonl", subject=SUBJECTS),
        recall_statistics="results/recall/recall_statistics.json",
        queries=expand("results/vectors/benchmark/{subject}.npy", subject=SUBJECTS),
        benchmark=expand("results/benchmark/{subject}.jsonl", subject=SUBJECTS),
        pool_vectors=all_pool_vectors,
        pool_shards=all_pool_shards,
    output:
        eval_driven="results/sft/eval_driven.jsonl",
        random="results/sft/random.jsonl",
        statistics=report(
            "results/sft/sft_statistics.json",
            caption="../report/sft_statistics.rst",
            category="2. Selection",
        ),
        contamination=report(
            "results/sft/contamination.json",
            caption="../report/contamination.rst",
            category="2. Selection",
        ),
        review=report(
            "results/sft/contamination_review.md",
            caption="../report/contamination_review.rst",
            category="2. Selection",
        ),
    log:
        "logs/sft_build/sft_build.log",
    benchmark:
        "benchmarks/sft_build/sft_build.tsv"
    conda:
        "../envs/select.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        format=config["sft"]["format"],
        random_mix_ratio=config["sft"]["random_mix_ratio"],
        random_match=config["sft"]["random_match"],
        tokenizer=config["sft"]["tokenizer"],
        seed=config["seed"],
        leak_guard=GUARD_SETTINGS,
        longest_seed_n=config["leak_guard"]["longest_seed_n"],
        max_similarity=config["recall"]["max_similarity"],
        recall_splits=list(config["benchmark"]["recall_splits"]),
        eval_splits=list(config["benchmark"]["eval_splits"]),
    script:
        "../workflow/scripts/sft_build.py"
