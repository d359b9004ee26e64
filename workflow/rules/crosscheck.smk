# The evaluator cross-checked against lm-evaluation-harness (config crosscheck.lm_eval, off by
# default): each model scored again by lm_eval on the exported prompts, choices compared.


rule crosscheck:
    input:
        eval=EVAL_JSON,
        benchmark=expand(BENCHMARK, subject=SUBJECTS),
        base=base_model_input(),
        adapter=lambda wc: model_adapter(wc.model),
        code=code_of("crosscheck"),
    output:
        "results/crosscheck/{model}.json",
    log:
        "logs/crosscheck/{model}.log",
    benchmark:
        "benchmarks/crosscheck/{model}.tsv"
    conda:
        "../envs/lm_eval.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=4 * 60,
    params:
        hub_base_model=HUB_BASE_MODEL,
        eval_splits=[str(s) for s in config["benchmark"]["eval_splits"]],
        few_shot=EVAL["few_shot"],
        batch_size=config["crosscheck"]["batch_size"],
        task_dir=lambda wc: f"results/crosscheck/{wc.model}.task",
    script:
        "../scripts/crosscheck.py"
