# Comparison report of base, random and eval-driven models, and the optional DPO stage after SFT.


rule dpo_train:
    input:
        preferences=config["dpo"]["preferences"] or [],
        # DPO continues the eval-driven SFT adapter of the same seed (without that arm: from the base)
        sft_adapter=lambda wildcards: (
            f"results/train/eval_driven/seed{wildcards.seed}/adapter"
            if "eval_driven" in config["arms"]
            else []
        ),
        base=base_model_input(),
        code=pkg(
            "dpo.py",
            "train.py",
            "gpu.py",
            "precision.py",
            "models.py",
            "chat.py",
            "records.py",
        ),
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
        gpu=min(1, int(config["train"]["gpus"])),
    params:
        # used when the demo does not build the tiny model (input `base` is then empty)
        hub_base_model=config["train"]["base_model"],
        checkpoint_dir=lambda wildcards: f"results/train/dpo/seed{wildcards.seed}/checkpoints",
        beta=config["dpo"]["beta"],
        epochs=config["dpo"]["epochs"],
        learning_rate=config["dpo"]["learning_rate"],
        max_steps=config["train"]["max_steps"],
        per_device_batch_size=config["train"]["per_device_batch_size"],
        gradient_accumulation_steps=config["train"]["gradient_accumulation_steps"],
        max_length=config["train"]["max_length"],
        precision=config["train"]["precision"],
        gradient_checkpointing=config["train"]["gradient_checkpointing"],
        lora_r=config["train"]["lora_r"],
        lora_alpha=config["train"]["lora_alpha"],
        lora_dropout=config["train"]["lora_dropout"],
        lora_target_modules=config["train"]["lora_target_modules"],
        logging_steps=config["train"]["logging_steps"],
        save_steps=config["train"]["save_steps"],
        keep_checkpoints=config["train"]["keep_checkpoints"],
        gpus=min(1, int(config["train"]["gpus"])),
    script:
        "../workflow/scripts/dpo.py"


rule report:
    input:
        evals=expand("results/eval/{model}.json", model=MODELS),
        recall_statistics="results/recall/recall_statistics.json",
        contamination="results/sft/contamination.json",
        sft_statistics="results/sft/sft_statistics.json",
        transfer_evals=[
            f"results/transfer/{b}/eval/{m}.json" for b in TRANSFER for m in MODELS
        ],
        transfer_contamination=[
            f"results/transfer/{b}/contamination.json" for b in TRANSFER
        ],
        code=pkg("report.py", "stats.py"),
    output:
        md=report(
            "results/report/compare.md",
            caption="../report/compare_md.rst",
            category="1. Comparison",
        ),
        json=report(
            "results/report/compare.json",
            caption="../report/compare_json.rst",
            category="1. Comparison",
        ),
        png=report(
            "results/report/compare.png",
            caption="../report/compare_png.rst",
            category="1. Comparison",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        recall_splits=list(config["benchmark"]["recall_splits"]),
        eval_splits=list(config["benchmark"]["eval_splits"]),
        alpha=config["report"]["alpha"],
        bootstrap_samples=config["report"]["bootstrap_samples"],
        seed=config["seed"],
        arms=ARMS,
        seeds=SEEDS,
        transfer={b: [str(s) for s in spec["splits"]] for b, spec in TRANSFER.items()},
    script:
        "../workflow/scripts/report.py"
