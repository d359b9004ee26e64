# Training and evaluation: the tiny demo LM, SFT of each arm and seed (LoRA/QLoRA/full, DeepSpeed,
# torchrun inside one job), the optional DPO stage after SFT, evaluation of every model, adapter merge.

TRAIN = config["train"]
EVAL = config["eval"]
# The dpo arm has its own rule (dpo_train); this SFT rule trains the configured SFT arms only.
SFT_ARMS = list(ARM)
# GPUs are declared only when a job uses them: a torchrun job is ONE job holding all its GPUs.
TRAIN_GPU = {"gpu": int(TRAIN["gpus"])} if int(TRAIN["gpus"]) > 0 else {}
EVAL_GPU = {"gpu": int(EVAL["gpus"])} if int(EVAL["gpus"]) > 0 else {}
# The eval settings every scoring job reads (evalsel.evaluate.multiple_choice.evaluate), passed
# whole; the benchmark's few_shot and language are params of their own (transfer benchmarks differ).
EVAL_SETTINGS = {k: v for k, v in EVAL.items() if k != "few_shot"}


# The DeepSpeed JSON of train.deepspeed (zero2/zero3) in the workflow's folder, relative to the
# working directory like every path (so --directory and another working directory work), or None.
DEEPSPEED_CONFIG = (
    os.path.relpath(ROOT / "config" / "deepspeed" / f"{TRAIN['deepspeed']}.json")
    if TRAIN["deepspeed"]
    else None
)
# "all" or a list of module names (plain builtins: params compare by repr).
LORA_TARGETS = (
    "all"
    if TRAIN["lora_target_modules"] == "all"
    else [str(t) for t in TRAIN["lora_target_modules"]]
)
# Every train setting a training job reads (evalsel.train.sft.TrainSettings' fields), one params entry
# passed whole: the seed comes from the job's wildcard, the DeepSpeed JSON from its input.
TRAIN_SETTINGS = {
    **{k: v for k, v in TRAIN.items() if k not in ("base_model", "seeds", "deepspeed")},
    "lora_target_modules": LORA_TARGETS,
}
# DPO (evalsel.train.dpo.DPOSettings): its own beta, epochs and learning rate, the rest from train.
DPO_SETTINGS = {
    **{k: config["dpo"][k] for k in ("beta", "epochs", "learning_rate")},
    **{
        k: TRAIN_SETTINGS[k]
        for k in (
            "max_steps",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "precision",
            "gradient_checkpointing",
            "lora_r",
            "lora_alpha",
            "lora_dropout",
            "lora_target_modules",
            "logging_steps",
            "save_steps",
            "keep_checkpoints",
        )
    },
    # DPO runs in one process: at most one GPU
    "gpus": min(1, int(TRAIN["gpus"])),
}
# The hub name or local path of the base model; None when the DAG builds it (an input: the tiny
# demo model, an imported GGUF file).
HUB_BASE_MODEL = None if base_model_input() else str(TRAIN["base_model"])


rule tiny_lm_build:
    input:
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        pool=all_pool_shards,
        code=code_of("tiny_lm_build"),
    output:
        directory(TINY_LM),
    log:
        "logs/tiny_lm_build/tiny_lm_build.log",
    benchmark:
        "benchmarks/tiny_lm_build/tiny_lm_build.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        seed=config["seed"],
    script:
        "../scripts/tiny_lm_build.py"


if GGUF_MODEL:

    rule base_model_import:
        input:
            gguf=BASE_GGUF,
            code=code_of("base_model_import"),
        output:
            directory(GGUF_MODEL),
        log:
            "logs/base_model_import/base_model_import.log",
        benchmark:
            "benchmarks/base_model_import/base_model_import.tsv"
        conda:
            "../envs/train.yaml"
        threads: 2
        resources:
            mem_mb=16000,
            runtime=60,
        params:
            # as configured (a path or package:<pkg>/<file>), recorded in the folder's import.json
            spec=str(TRAIN["base_model"]),
        script:
            "../scripts/base_model_import.py"


rule train:
    input:
        sft=SFT_SET,
        base=base_model_input(),
        deepspeed=[DEEPSPEED_CONFIG] if DEEPSPEED_CONFIG else [],
        code=code_of("train"),
    output:
        adapter=directory(ADAPTER),
        metrics="results/train/{arm}/seed{seed}/metrics.json",
        curves=report(
            "results/train/{arm}/seed{seed}/curves.png",
            caption="../report/curves.rst",
            category="3. Training",
            subcategory="{arm}",
        ),
    log:
        "logs/train/{arm}-seed{seed}.log",
    benchmark:
        "benchmarks/train/{arm}-seed{seed}.tsv"
    wildcard_constraints:
        arm="|".join(SFT_ARMS),
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        **TRAIN_GPU,
        mem_mb=64000,
        runtime=24 * 60,
    params:
        hub_base_model=HUB_BASE_MODEL,
        # not an output: checkpoints survive a failed job so that the rerun resumes
        checkpoint_dir=lambda wc: f"results/train/{wc.arm}/seed{wc.seed}/checkpoints",
        seed=lambda wc: int(wc.seed),
        settings=TRAIN_SETTINGS,
    script:
        "../scripts/train.py"


rule evaluate:
    input:
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        base=base_model_input(),
        adapter=lambda wc: model_adapter(wc.model),
        code=code_of("evaluate"),
    output:
        EVAL_JSON,
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "benchmarks/evaluate/{model}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        **EVAL_GPU,
        mem_mb=32000,
        runtime=4 * 60,
    params:
        hub_base_model=HUB_BASE_MODEL,
        eval_splits=[str(s) for s in config["benchmark"]["eval_splits"]],
        settings=EVAL_SETTINGS,
        few_shot=EVAL["few_shot"],
        language=config["benchmark"]["language"],
    script:
        "../scripts/evaluate.py"


rule dpo_train:
    input:
        preferences=config["dpo"]["preferences"] or [],
        # DPO continues the eval-driven SFT adapter of the same seed (without that arm: from the base)
        sft_adapter=lambda wildcards: (
            ADAPTER.format(arm="eval_driven", seed=wildcards.seed)
            if "eval_driven" in ARM
            else []
        ),
        base=base_model_input(),
        code=code_of("dpo"),
    output:
        adapter=directory("results/train/dpo/seed{seed}/adapter"),
        metrics="results/train/dpo/seed{seed}/metrics.json",
        curves="results/train/dpo/seed{seed}/curves.png",
    log:
        "logs/dpo_train/seed{seed}.log",
    benchmark:
        "benchmarks/dpo_train/seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=360,
        gpu=DPO_SETTINGS["gpus"],
    params:
        hub_base_model=HUB_BASE_MODEL,
        checkpoint_dir=lambda wildcards: f"results/train/dpo/seed{wildcards.seed}/checkpoints",
        seed=lambda wildcards: int(wildcards.seed),
        settings=DPO_SETTINGS,
    script:
        "../scripts/dpo.py"


rule merge:
    input:
        adapter=ADAPTER,
        base=base_model_input(),
        code=code_of("merge"),
    output:
        directory("results/merged/{arm}-seed{seed}"),
    log:
        "logs/merge/{arm}-seed{seed}.log",
    benchmark:
        "benchmarks/merge/{arm}-seed{seed}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=60,
    params:
        hub_base_model=HUB_BASE_MODEL,
    script:
        "../scripts/merge.py"
