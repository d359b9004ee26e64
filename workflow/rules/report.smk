# Comparison report of the base model and every arm (and the DPO arm when enabled).


rule report:
    input:
        evals=expand(EVAL_JSON, model=MODELS),
        selection_statistics=[
            f"results/select/{a}/statistics.json" for a in SELECT_ARMS
        ],
        overlap=OVERLAP,
        contamination=CONTAMINATION,
        sft_statistics=SFT_STATISTICS,
        transfer_evals=[
            f"results/transfer/{b}/eval/{m}.json" for b in TRANSFER for m in MODELS
        ],
        transfer_contamination=[
            f"results/transfer/{b}/contamination/{a}.json"
            for b in TRANSFER
            for a in ARM
        ],
        code=code_of("report"),
    output:
        md=report(
            REPORT_MD,
            caption="../report/compare_md.rst",
            category="1. Comparison",
        ),
        json=report(
            REPORT_JSON,
            caption="../report/compare_json.rst",
            category="1. Comparison",
        ),
        png=report(
            REPORT_PNG,
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
        max_letter_share=config["report"]["max_letter_share"],
        seed=config["seed"],
        arms=ARMS,
        select_arms=SELECT_ARMS,
        arm_specs={
            **{a: {"strategy": s.strategy, "match": s.match} for a, s in ARM.items()},
            **(
                {
                    "rl": {
                        "strategy": "rl",
                        "match": None,
                        "method": config["rl"]["method"],
                        "start": config["rl"]["arm"],
                    }
                }
                if config["rl"]["enabled"]
                else {}
            ),
        },
        seeds=SEEDS,
        transfer={b: [str(s) for s in spec["splits"]] for b, spec in TRANSFER.items()},
    script:
        "../scripts/report.py"
