# Reinforcement learning after SFT (config `rl`, off by default): the labelled questions of
# rl.splits, fetched apart from the recall benchmark (enabling RL changes no selection), become
# prompts once checked against the scored questions; GRPO or RLOO then continues each seed's
# adapter of the SFT arm rl.arm with the verifiable reward (evalsel.rl.train). The result is the arm
# `rl`, evaluated, reported and merged like the others.

RL = config["rl"]
RL_SPLITS = [str(s) for s in RL["splits"]]
# Every rl setting the training job reads (evalsel.rl.train.RLSettings' fields), passed whole: the seed
# comes from the wildcard; precision and cadences are the SFT run's; one process, at most one GPU.
RL_SETTINGS = {
    **{
        k: RL[k]
        for k in (
            "method",
            "num_generations",
            "prompts_per_step",
            "max_completion_length",
            "temperature",
            "beta",
            "learning_rate",
            "epochs",
            "max_steps",
            "format_weight",
        )
    },
    **{
        k: TRAIN[k]
        for k in (
            "precision",
            "gradient_checkpointing",
            "logging_steps",
            "save_steps",
            "keep_checkpoints",
        )
    },
    "gpus": min(1, int(TRAIN["gpus"])),
}


rule rl_fetch:
    input:
        code=code_of("benchmark_fetch"),
        local=(
            [BENCHMARK_LOCAL["path"].replace("{split}", s) for s in RL_SPLITS]
            if config["benchmark"]["source"] == "local"
            else []
        ),
    output:
        RL_BENCHMARK,
    log:
        "logs/rl_fetch/{subject}.log",
    benchmark:
        "benchmarks/rl_fetch/{subject}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        # every RL question needs its answer: the reward is computed from it
        **benchmark_fetch_params(RL_SPLITS, []),
    script:
        "../scripts/benchmark_fetch.py"


rule rl_prompts:
    input:
        rl=expand(RL_BENCHMARK, subject=SUBJECTS),
        scored=expand(BENCHMARK, subject=SUBJECTS),
        code=code_of("rl_prompts"),
    output:
        prompts=RL_PROMPTS,
        stats="results/rl/prompts.stats.json",
    log:
        "logs/rl_prompts/rl_prompts.log",
    benchmark:
        "benchmarks/rl_prompts/rl_prompts.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        rl_splits=RL_SPLITS,
        eval_splits=[str(s) for s in config["benchmark"]["eval_splits"]],
        language=config["benchmark"]["language"],
        guard=config["leak_guard"],
    script:
        "../scripts/rl_prompts.py"


rule rl_train:
    input:
        prompts=RL_PROMPTS,
        sft=ADAPTER.format(arm=RL["arm"], seed="{seed}"),
        base=base_model_input(),
        code=code_of("rl_train"),
    output:
        adapter=directory("results/train/rl/seed{seed}/adapter"),
        metrics="results/train/rl/seed{seed}/metrics.json",
        curves=report(
            "results/train/rl/seed{seed}/curves.png",
            caption="../report/rl_curves.rst",
            category="3. Training",
            subcategory="rl",
        ),
    log:
        "logs/rl_train/seed{seed}.log",
    benchmark:
        "benchmarks/rl_train/seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=360,
        gpu=RL_SETTINGS["gpus"],
    params:
        hub_base_model=HUB_BASE_MODEL,
        # not an output: checkpoints survive a failed job so that the rerun resumes
        checkpoint_dir=lambda wildcards: f"results/train/rl/seed{wildcards.seed}/checkpoints",
        seed=lambda wildcards: int(wildcards.seed),
        settings=RL_SETTINGS,
    script:
        "../scripts/rl_train.py"
