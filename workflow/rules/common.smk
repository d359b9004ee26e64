# Helpers shared by every rules file: config lookups, wildcard values, input functions.
import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The checkout: workflow/ holds this Snakefile, src/ the package it runs.
ROOT = Path(workflow.basedir).parent
# The checkout's own package, whichever evalsel another checkout installed.
sys.path.insert(0, str(ROOT / "src"))
from evalsel.select.arms import guard_uses_vectors, resolve as resolve_arms
from evalsel.config import ConfigError, check as check_config
from evalsel.train.gguf_import import is_gguf, resolve_gguf
from evalsel.core.gpu import count_gpus
from evalsel.core.imports import closure_files

# The schema (one short line per failing key) and every cross-key rule, before any job runs.
try:
    check_config(
        config,
        Path(workflow.basedir) / "schemas" / "config.schema.yaml",
        cwd=os.getcwd(),
        configfiles=[str(f) for f in workflow.configfiles],
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# On one machine, run at once only as many GPU jobs as it has GPUs: without a limit both trainings
# of a one-GPU box start, and the second waits for the device's lock until it times out. An
# explicit --resources gpu=N wins; cluster executors and hosts without a GPU are left alone.
if (
    workflow.local_exec
    and workflow.is_main_process
    and "gpu" not in workflow.global_resources
):
    _LOCAL_GPUS = count_gpus(ask_torch=False)
    if _LOCAL_GPUS:
        workflow.register_resource("gpu", _LOCAL_GPUS)


# Every results path named in more than one place, written once here: the inputs and outputs
# of the rules refer to these names (wildcards filled by Snakemake, or by .format()).
BENCHMARK = "results/benchmark/{subject}.jsonl"
POOL_SHARD = "results/pool/{source}/{shard}.jsonl"
SELECTED = "results/select/{arm}/selected.jsonl"
SELECT_STATISTICS = "results/select/{arm}/statistics.json"
SIMILARITY_HIST = "results/select/{arm}/similarity_hist.png"
SFT_SET = "results/sft/{arm}.jsonl"
SFT_SET_STATS = "results/sft/{arm}.stats.json"
SFT_SET_DROPS = "results/sft/{arm}.drops.json"
CONTAMINATION = "results/sft/contamination.json"
SFT_STATISTICS = "results/sft/sft_statistics.json"
OVERLAP = "results/sft/overlap.json"
ADAPTER = "results/train/{arm}/seed{seed}/adapter"
EVAL_JSON = "results/eval/{model}.json"
TINY_LM = "results/models/tiny_lm"
TINY_EMBEDDER = "results/models/tiny_embedder"
RL_BENCHMARK = "results/rl/benchmark/{subject}.jsonl"
RL_PROMPTS = "results/rl/prompts.jsonl"
REPORT_MD = "results/report/compare.md"
REPORT_JSON = "results/report/compare.json"
REPORT_PNG = "results/report/compare.png"

SUBJECTS = list(config["benchmark"]["subjects"])
SOURCES = {s["name"]: s for s in config["pool"]["sources"]}
TRANSFER = {b["name"]: b for b in config["transfer"]}
# The configured arms with their effective settings (evalsel.select.arms), in order.
ARM = resolve_arms(config)
RECALL_ARMS = [a for a, s in ARM.items() if s.recalls]
DSIR_ARMS = [a for a, s in ARM.items() if s.strategy == "dsir"]
LISTED_ARMS = [a for a, s in ARM.items() if s.strategy == "listed"]
SELECT_ARMS = [a for a, s in ARM.items() if s.selects]
RANDOM_ARMS = [a for a, s in ARM.items() if not s.selects]
# After the SFT arms: the DPO and RL stages when enabled (arms of their own, rules/train.smk, rules/rl.smk).
ARMS = (
    list(ARM)
    + (["dpo"] if config["dpo"]["enabled"] else [])
    + (["rl"] if config["rl"]["enabled"] else [])
)
# With a cosine arm the pool is embedded, and every arm's guard adds max_similarity on those vectors.
GUARD_VECTORS = guard_uses_vectors(config)
SEEDS = [int(s) for s in config["train"]["seeds"]]
TRAINED = [f"{arm}-seed{seed}" for arm in ARMS for seed in SEEDS]
MODELS = ["base"] + TRAINED


def code_of(script, skip=()):
    """The package modules rule script ``workflow/scripts/<script>.py`` imports (evalsel.core.imports),
    as inputs, so that editing one re-runs the jobs that use it and only those; ``skip``: modules the
    configured job never imports (another backend's). Relative to the working directory, so that a
    moved or copied checkout does not re-run everything."""
    files = closure_files(
        [Path(workflow.basedir) / "scripts" / f"{script}.py"], skip=skip
    )
    return [os.path.relpath(f) for f in files]


def pool_shards(source):
    """Shard names of one pool source, known once its pool_prepare checkpoint has run."""
    out = checkpoints.pool_prepare.get(source=source).output[0]
    with open(Path(out) / "manifest.json", encoding="utf-8") as fh:
        return json.load(fh)["shards"]


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(names) if names else "(?!)"


def vector_root(arm=None):
    """Where an arm's vectors live: RDS+ vectors for an rds arm, else the embedding's."""
    return (
        "results/vectors/rds"
        if arm and ARM[arm].strategy == "rds"
        else "results/vectors"
    )


def all_pool_vectors(wildcards=None, root="results/vectors"):
    return [
        f"{root}/pool/{src}/{shard}.npy"
        for src in SOURCES
        for shard in pool_shards(src)
    ]


def arm_pool_vectors(wildcards):
    return all_pool_vectors(root=vector_root(wildcards.arm))


def arm_query_vectors(wildcards):
    return [f"{vector_root(wildcards.arm)}/benchmark/{s}.npy" for s in SUBJECTS]


def guard_pool_vectors(wildcards=None):
    """The embedding's pool vectors for the guard's max_similarity (none without a cosine arm)."""
    return all_pool_vectors() if GUARD_VECTORS else []


def guard_query_vectors():
    return (
        [f"results/vectors/benchmark/{s}.npy" for s in SUBJECTS]
        if GUARD_VECTORS
        else []
    )


def selection_files(arm):
    """The selection job's output an SFT arm is built from."""
    if ARM[arm].strategy in ("dsir", "listed"):
        return [SELECTED.format(arm=arm)]
    return [f"results/select/{arm}/{s}.jsonl" for s in SUBJECTS]


def sft_arm_files(arm):
    return [
        SFT_SET.format(arm=arm),
        SFT_SET_STATS.format(arm=arm),
        SFT_SET_DROPS.format(arm=arm),
    ]


def all_pool_shards(wildcards=None):
    return [
        f"results/pool/{src}/{shard}.jsonl"
        for src in SOURCES
        for shard in pool_shards(src)
    ]


# train.base_model naming a GGUF file (a path, or package:<pkg>/<file>): imported once into a
# model folder (rule base_model_import) that every model job loads.
BASE_GGUF = (
    str(resolve_gguf(config["train"]["base_model"]))
    if is_gguf(config["train"]["base_model"])
    else None
)
GGUF_MODEL = (
    f"results/models/{Path(BASE_GGUF).name[: -len('.gguf')]}" if BASE_GGUF else None
)


def base_model_path():
    """The base causal LM: the tiny demo model built by the DAG, the folder a GGUF file is imported
    into, or a hub name / local path."""
    if config["demo"]["build_tiny_lm"]:
        return TINY_LM
    return GGUF_MODEL or config["train"]["base_model"]


def base_model_input():
    """Input list that makes the model jobs depend on the base model when the DAG builds it (the
    tiny demo model, an imported GGUF file)."""
    if config["demo"]["build_tiny_lm"]:
        return [TINY_LM]
    return [GGUF_MODEL] if GGUF_MODEL else []


def rds_model():
    """The model whose hidden states make the RDS+ vectors: rds.model, else the base model (a path
    when the demo builds it)."""
    return config["rds"]["model"] or base_model_path()


def rds_model_input():
    return [] if config["rds"]["model"] else base_model_input()


def embedder_model():
    if config["demo"]["build_tiny_embedder"]:
        return TINY_EMBEDDER
    return config["embedding"]["model"]


def embedder_input():
    return [TINY_EMBEDDER] if config["demo"]["build_tiny_embedder"] else []


def model_adapter(model):
    """Adapter directory of an evaluated model name ('base' has none)."""
    if model == "base":
        return []
    arm, seed = model.rsplit("-seed", 1)
    return [ADAPTER.format(arm=arm, seed=seed)]


def final_targets():
    targets = [
        REPORT_MD,
        REPORT_JSON,
        REPORT_PNG,
        CONTAMINATION,
    ]
    if config["crosscheck"]["lm_eval"]:
        targets += [f"results/crosscheck/{m}.json" for m in MODELS]
    targets += [
        f"results/merged/{arm}-seed{seed}"
        for arm in config["merge"]["arms"]
        for seed in SEEDS
    ]
    return targets


# --- transfer benchmarks (rules/transfer.smk)


def transfer_files(bench):
    spec = TRANSFER[bench]
    return [f"results/transfer/{bench}/benchmark/{s}.jsonl" for s in spec["subjects"]]


def transfer_local(wc):
    spec = TRANSFER[wc.bench]
    if spec["source"] != "local":
        return []
    path = spec["local"]["path"].replace("{subject}", wc.tsubject)
    return [path.replace("{split}", str(s)) for s in spec["splits"]]


def transfer_column(name, default):
    return (
        lambda wc: TRANSFER[wc.bench]
        .get("local", {})
        .get("columns", {})
        .get(name, default)
    )


# --- benchmark loading (workflow/rules/data.smk, workflow/rules/rl.smk)


def benchmark_fetch_params(splits, unscored_splits):
    """The params of a job loading ``splits`` of the benchmark (benchmark_fetch, rl_fetch): every
    loading setting of config `benchmark`, written once."""
    hub = config["benchmark"]["source"] == "hf"
    return dict(
        source=config["benchmark"]["source"],
        hf_name=config["benchmark"]["hf_name"],
        splits=splits,
        unscored_splits=unscored_splits,
        # functions, so that Snakemake leaves the {subject}/{split} patterns unexpanded
        local_path=lambda wildcards: BENCHMARK_LOCAL["path"],
        encoding=BENCHMARK_LOCAL["encoding"],
        hf_data_files=lambda wildcards: config["benchmark"]["hf_data_files"],
        hub_mirror=config["hub_mirror"] if hub else None,
        column_id=BENCHMARK_COLUMNS["id"],
        column_question=BENCHMARK_COLUMNS["question"],
        column_answer=BENCHMARK_COLUMNS["answer"],
        column_options=list(BENCHMARK_COLUMNS["options"]),
        column_explanation=BENCHMARK_COLUMNS["explanation"],
    )
