# Transfer benchmarks (config `transfer`): scored besides the recall benchmark, never recall
# queries. Per benchmark: fetch each subject, guard each arm's finished SFT set against it, evaluate
# base and each arm on every item; the report leaves the items any arm's set matches out of the
# comparisons, for every model alike. Adding a benchmark schedules only these jobs and the report;
# adding an arm, only that arm's guard and evaluation here.


rule transfer_fetch:
    input:
        code=code_of("benchmark_fetch"),
        local=transfer_local,
    output:
        "results/transfer/{bench}/benchmark/{tsubject}.jsonl",
    log:
        "logs/transfer_fetch/{bench}/{tsubject}.log",
    benchmark:
        "benchmarks/transfer_fetch/{bench}/{tsubject}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        source=lambda wc: TRANSFER[wc.bench]["source"],
        hf_name=lambda wc: TRANSFER[wc.bench].get("hf_name"),
        splits=lambda wc: [str(s) for s in TRANSFER[wc.bench]["splits"]],
        unscored_splits=[],
        local_path=lambda wc: TRANSFER[wc.bench].get("local", {}).get("path"),
        encoding=lambda wc: TRANSFER[wc.bench].get("local", {}).get("encoding", "utf-8"),
        hf_data_files=lambda wc: TRANSFER[wc.bench].get(
            "hf_data_files", "{subject}/{split}-*.parquet"
        ),
        hub_mirror=lambda wc: (
            config["hub_mirror"] if TRANSFER[wc.bench]["source"] == "hf" else None
        ),
        id_prefix=lambda wc: f"{wc.bench}/",
        column_id=transfer_column("id", "id"),
        column_question=transfer_column("question", "question"),
        column_answer=transfer_column("answer", "answer"),
        column_options=transfer_column("options", ["A", "B", "C", "D", "E"]),
        column_explanation=transfer_column("explanation", "explanation"),
    script:
        "../scripts/benchmark_fetch.py"


rule transfer_guard:
    input:
        sft=SFT_SET,
        benchmark=lambda wc: transfer_files(wc.bench),
        code=code_of("transfer_guard"),
    output:
        "results/transfer/{bench}/contamination/{arm}.json",
    log:
        "logs/transfer_guard/{bench}/{arm}.log",
    benchmark:
        "benchmarks/transfer_guard/{bench}/{arm}.tsv"
    conda:
        "../envs/select.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        leak_guard=GUARD_SETTINGS,
    script:
        "../scripts/transfer_guard.py"


rule transfer_evaluate:
    input:
        benchmark=lambda wc: transfer_files(wc.bench),
        base=base_model_input(),
        adapter=lambda wc: model_adapter(wc.model),
        code=code_of("evaluate"),
    output:
        "results/transfer/{bench}/eval/{model}.json",
    log:
        "logs/transfer_evaluate/{bench}/{model}.log",
    benchmark:
        "benchmarks/transfer_evaluate/{bench}/{model}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        **EVAL_GPU,
        mem_mb=32000,
        runtime=4 * 60,
    params:
        hub_base_model=HUB_BASE_MODEL,
        eval_splits=lambda wc: [str(s) for s in TRANSFER[wc.bench]["splits"]],
        settings=EVAL_SETTINGS,
        few_shot=0,
        language=lambda wc: TRANSFER[wc.bench]["language"],
    script:
        "../scripts/evaluate.py"
