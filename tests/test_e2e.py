"""End to end: the demo DAG runs offline on 2 cores and every declared artifact is well-formed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow

DEMO = yaml.safe_load((REPO / "demo" / "config.yaml").read_text(encoding="utf-8"))
SUBJECTS = DEMO["benchmark"]["subjects"]
SOURCES = [s["name"] for s in DEMO["pool"]["sources"]]
LETTERS = "ABCDE"


def _jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_demo_finishes_under_ten_minutes(demo_run):
    _, seconds = demo_run
    assert seconds < 600, f"demo took {seconds:.0f}s"


def test_benchmark_records(demo_run):
    work, _ = demo_run
    for subject in SUBJECTS:
        recs = _jsonl(work / f"results/benchmark/{subject}.jsonl")
        assert recs, subject
        splits = {r["split"] for r in recs}
        assert set(DEMO["benchmark"]["eval_splits"]) <= splits
        for r in recs:
            assert r["subject"] == subject
            assert 2 <= len(r["choices"]) <= 5
            if r["split"] in DEMO["benchmark"]["eval_splits"]:
                assert r["answer"] in LETTERS[: len(r["choices"])]
            else:  # the recall split, like C-Eval's public test split, has no answers
                assert r["answer"] is None, r
            assert r["question"].strip()


def test_vectors_are_normalised_and_compact(demo_run):
    work, _ = demo_run
    for subject in SUBJECTS:
        vec = np.load(work / f"results/vectors/benchmark/{subject}.npy")
        ids = (work / f"results/vectors/benchmark/{subject}.ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
        recall_ids = [
            r["id"]
            for r in _jsonl(work / f"results/benchmark/{subject}.jsonl")
            if r["split"] in DEMO["benchmark"]["recall_splits"]
        ]
        assert ids == recall_ids
        assert vec.dtype == np.float16 and vec.shape[0] == len(ids)
        assert np.allclose(np.linalg.norm(vec.astype(np.float32), axis=1), 1.0, atol=2e-3)
    n_pool = 0
    for source in SOURCES:
        manifest = json.loads((work / f"results/pool/{source}/manifest.json").read_text(encoding="utf-8"))
        assert manifest["shards"], source
        for shard in manifest["shards"]:
            recs = _jsonl(work / f"results/pool/{source}/{shard}.jsonl")
            vec = np.load(work / f"results/vectors/pool/{source}/{shard}.npy", mmap_mode="r")
            ids = (work / f"results/vectors/pool/{source}/{shard}.ids.txt").read_text(encoding="utf-8").split()
            assert ids == [r["id"] for r in recs]
            assert vec.dtype == np.float16 and vec.shape == (len(recs), vec.shape[1])
            # compact: 2 bytes a dimension plus the .npy header
            size = (work / f"results/vectors/pool/{source}/{shard}.npy").stat().st_size
            assert size <= 2 * vec.shape[0] * vec.shape[1] + 256
            assert (np.abs(vec.astype(np.float32)).sum(axis=1) > 0).all()
            n_pool += len(recs)
    assert n_pool >= 200


def test_recall_and_sft_sets(demo_run):
    work, _ = demo_run
    stats = json.loads((work / "results/select/eval_driven/statistics.json").read_text(encoding="utf-8"))
    assert stats
    thr = DEMO["recall"]["similarity_threshold"]
    top = DEMO["recall"]["max_similarity"]
    recalled = set()
    for subject in SUBJECTS:
        for r in _jsonl(work / f"results/select/eval_driven/{subject}.jsonl"):
            assert thr - 1e-6 <= r["similarity"] <= top + 1e-6
            assert r["id"] not in recalled, "a sample recalled twice across questions/subjects"
            recalled.add(r["id"])
    assert recalled, "the demo recalled nothing: thresholds do not fit the embedder"
    ed = _jsonl(work / "results/sft/eval_driven.jsonl")
    rnd = _jsonl(work / "results/sft/random.jsonl")
    assert len(ed) == len(rnd) > 0
    assert len({r["id"] for r in ed}) == len(ed)
    mix = sum(r["origin"] == "random_mix" for r in ed) / len(ed)
    assert abs(mix - DEMO["sft"]["random_mix_ratio"]) <= 0.1
    for r in ed + rnd:
        roles = [t["from"] for t in r["conversations"]]
        assert roles[0] == "human" and "gpt" in roles
    contamination = json.loads((work / "results/sft/contamination.json").read_text(encoding="utf-8"))
    assert contamination
    assert (work / "results/select/eval_driven/similarity_hist.png").stat().st_size > 1000


def test_training_evaluation_report(demo_run):
    work, _ = demo_run
    for arm in DEMO.get("arms", ["eval_driven", "random"]):
        for seed in DEMO["train"]["seeds"]:
            adapter = work / f"results/train/{arm}/seed{seed}/adapter"
            assert (adapter / "adapter_config.json").is_file()
            metrics = json.loads((work / f"results/train/{arm}/seed{seed}/metrics.json").read_text(encoding="utf-8"))
            assert metrics
            assert (work / f"results/train/{arm}/seed{seed}/curves.png").stat().st_size > 1000
    models = ["base"] + [f"{arm}-seed{s}" for arm in ("eval_driven", "random") for s in DEMO["train"]["seeds"]]
    n_eval = sum(
        1
        for s in SUBJECTS
        for r in _jsonl(work / f"results/benchmark/{s}.jsonl")
        if r["split"] in DEMO["benchmark"]["eval_splits"]
    )
    for model in models:
        ev = json.loads((work / f"results/eval/{model}.json").read_text(encoding="utf-8"))
        assert len(ev["questions"]) == n_eval
        for q in ev["questions"]:
            assert q["pred"] in LETTERS
            assert abs(sum(q["probs"].values()) - 1) < 1e-3
            assert q["correct"] == (q["pred"] == q["answer"])
        assert set(ev["subjects"]) == set(SUBJECTS)
        acc = ev["overall"]["accuracy"]
        assert 0 <= acc <= 1
    report = json.loads((work / "results/report/compare.json").read_text(encoding="utf-8"))
    assert report
    md = (work / "results/report/compare.md").read_text(encoding="utf-8")
    for subject in SUBJECTS:
        assert subject in md
    # the negative control: a random-weight model learns nothing, and the report must say so
    for comp in report["comparisons"]:
        assert comp["scopes"]["overall"]["verdict"] == "no detectable difference", comp["name"]
    # the second benchmark of the demo: scored apart from the targeted one, guarded, never recalled
    assert "## Verdicts: gain on the targeted benchmark" in md
    assert "## Transfer to benchmarks that played no part in selection" in md and "### demo_nursing" in md
    t = report["transfer"]["demo_nursing"]
    assert t["n_questions"]["overall"] == 16 and t["design"]["held_out"]
    assert {c["name"] for c in t["comparisons"]} == {"eval_driven vs base", "random vs base", "eval_driven vs random"}
    for arm in ("eval_driven", "random"):
        guard = json.loads((work / f"results/transfer/demo_nursing/contamination/{arm}.json").read_text("utf-8"))
        assert guard["items"] == 16 and guard["checked"] > 100
    assert set(t["excluded"]["by_arm"]) == {"eval_driven", "random"}
    recall = json.loads((work / "results/select/eval_driven/statistics.json").read_text(encoding="utf-8"))
    # the targeted benchmark's fetched items, recall (test) and scored (val) splits; nursing is not a query
    assert recall["benchmark_items_guarded"] == 84
    assert (work / "results/report/compare.png").stat().st_size > 1000
    merged = work / "results/merged/eval_driven-seed42"
    assert (merged / "config.json").is_file()


def test_every_job_wrote_a_log(demo_run):
    work, _ = demo_run
    logs = list((work / "logs").rglob("*.log"))
    rules = {p.relative_to(work / "logs").parts[0] for p in logs}
    for rule in (
        "benchmark_fetch",
        "pool_prepare",
        "benchmark_embed",
        "pool_embed",
        "recall",
        "sft_build",
        "train",
        "evaluate",
        "transfer_fetch",
        "transfer_guard",
        "transfer_evaluate",
        "report",
    ):
        assert rule in rules, f"no log for rule {rule}"


def test_nothing_to_do_after_the_run(demo_run):
    work, _ = demo_run
    proc = run_snakemake(work, "-n", "--configfile", "demo/config.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]


def test_lint_is_clean():
    proc = run_snakemake(REPO, "--lint", "--configfile", "demo/config.yaml", timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Lints for" not in proc.stdout, proc.stdout[-4000:]


@pytest.mark.parametrize(
    "case",
    ["malformed_jsonl", "unrecognised_record", "bad_answer_letter", "empty_pool"],
)
def test_bad_input_stops_before_training(case, tmp_path):
    """Each bad input fails the DAG early with a message naming the file and line."""
    from conftest import copy_repo

    work = copy_repo(tmp_path)
    pool_file = work / DEMO["pool"]["sources"][0]["path"]
    subject = SUBJECTS[0]
    bench_file = work / DEMO["benchmark"]["local"]["path"].format(
        split=DEMO["benchmark"]["eval_splits"][0], subject=subject
    )
    if case == "malformed_jsonl":
        lines = pool_file.read_text(encoding="utf-8").splitlines()
        lines.insert(2, '{"instruction": "broken"')
        pool_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        expected = [f"{pool_file.name}:3", "malformed JSON"]
    elif case == "unrecognised_record":
        lines = pool_file.read_text(encoding="utf-8").splitlines()
        lines.insert(4, json.dumps({"foo": "bar", "baz": 1}))
        pool_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        expected = [f"{pool_file.name}:5"]
    elif case == "bad_answer_letter":
        recs = _jsonl(bench_file)
        recs[1]["answer"] = "E" if "E" not in recs[1] or not recs[1].get("E") else "F"
        bench_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        expected = [f"{bench_file.name}:2", "answer"]
    else:
        for src in DEMO["pool"]["sources"]:
            (work / src["path"]).write_text("", encoding="utf-8")
        expected = ["empty", pool_file.name]
    proc = run_snakemake(work, "--cores", "2", "--configfile", "demo/config.yaml", "--show-failed-logs")
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stdout, f"{text!r} not in output:\n{proc.stdout[-4000:]}"
    assert not (work / "results" / "train").exists(), "training started despite bad input"


def test_snakemake_report_holds_the_results(demo_run):
    """`snakemake --report` from the demo: the comparison, its plot, the recall and SFT statistics,
    the similarity histogram, the contamination summary and review, and each arm's curves."""
    import zipfile

    work, _ = demo_run
    proc = run_snakemake(work, "--configfile", "demo/config.yaml", "--report", "report.zip")
    assert proc.returncode == 0, proc.stdout[-3000:]
    names = [n.rsplit("/", 1)[-1] for n in zipfile.ZipFile(work / "report.zip").namelist()]
    for expected in (
        "report.html",
        "compare.md",
        "compare.png",
        "similarity_hist.png",
        "statistics.json",
        "sft_statistics.json",
        "overlap.png",
        "contamination.json",
        "contamination_review.md",
    ):
        assert expected in names, (expected, names)
    assert names.count("curves.png") == 2  # eval_driven and random


def test_lm_eval_crosscheck_agrees_on_every_demo_model(demo_run):
    """The optional crosscheck rule: lm-evaluation-harness scores the demo's base model and both
    arms on the exported prompts and chooses as the evaluator on every question."""
    pytest.importorskip("lm_eval")
    work, _ = demo_run
    (work / "crosscheck.yaml").write_text("crosscheck:\n  lm_eval: true\n", encoding="utf-8")
    targets = [f"results/crosscheck/{m}.json" for m in ("base", "eval_driven-seed42", "random-seed42")]
    try:
        proc = run_snakemake(
            work, *targets, "--cores", "2", "--configfile", "demo/config.yaml", "crosscheck.yaml", timeout=900
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
        for t in targets:
            out = json.loads((work / t).read_text(encoding="utf-8"))
            assert out["agree"] and out["questions"] == 42, out["disagreements"]
            assert out["accuracy_lm_eval"] == out["accuracy_evalsel"]
    finally:
        (work / "crosscheck.yaml").unlink()


def test_the_demo_with_four_arms_runs_only_the_new_arms_and_reports_them_all(demo_run, tmp_path):
    """demo/arms.yaml (cosine, RDS+, DSIR, random) in a copy of the finished demo: the cosine and
    random arms are reused, the new arms' jobs and the summaries run, and the report compares all."""
    import re
    import shutil
    from collections import Counter

    work, _ = demo_run
    arms = tmp_path / "arms"
    shutil.copytree(work, arms, symlinks=True)  # results and Snakemake's metadata, times kept
    proc = run_snakemake(arms, "--cores", "2", "--configfile", "demo/config.yaml", "demo/arms.yaml")
    assert proc.returncode == 0, proc.stdout[-4000:]
    table = proc.stdout[proc.stdout.index("Job stats:") :].splitlines()[3:]
    ran = Counter()
    for line in table:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m or m.group(1) == "total":
            break
        ran[m.group(1)] = int(m.group(2))
    shards = len(list((arms / "results/vectors/pool").rglob("*.npy")))
    assert ran == Counter(
        rds_benchmark_embed=3,
        rds_pool_embed=shards,
        recall=1,
        dsir_select=1,
        sft_build=2,
        train=2,
        evaluate=2,
        transfer_guard=2,
        transfer_evaluate=2,
        sft_summary=1,
        arms_overlap=1,
        report=1,
        all=1,
    ), proc.stdout[-3000:]
    rep = json.loads((arms / "results/report/compare.json").read_text(encoding="utf-8"))
    assert rep["arms"] == ["eval_driven", "rds", "dsir", "random"] and rep["family_size"] == 10
    assert {c["name"] for c in rep["comparisons"]} >= {"rds vs eval_driven", "dsir vs rds", "dsir vs random"}
    sizes = rep["overlap"]["sizes"]
    assert set(sizes) == {"eval_driven", "rds", "dsir", "random"} and len(set(sizes.values())) == 1
    md = (arms / "results/report/compare.md").read_text(encoding="utf-8")
    assert "## The arms' training sets side by side" in md and "dsir (dsir)" in md
    assert (arms / "results/sft/overlap.png").stat().st_size > 1000
    for arm in ("rds", "dsir"):
        sel = json.loads((arms / f"results/select/{arm}/statistics.json").read_text(encoding="utf-8"))
        assert sel["overall"]["kept"] == 100  # demo/arms.yaml's budget: what the cosine arm recalls


def test_a_one_gpu_box_runs_its_gpu_jobs_one_at_a_time(demo_run, tmp_path):
    """The README's `snakemake --cores all` on a machine with one GPU (counted by EVALSEL_GPU_COUNT):
    the workflow limits the gpu resource to the GPUs it finds, so the two trainings run one after
    the other. Before, both started and the second waited on the device's lock until it timed out
    (EVALSEL_GPU_TIMEOUT_S, here 2 s)."""
    import shutil

    work, _ = demo_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    (copy / "gpus.yaml").write_text("train:\n  gpus: 1\n  learning_rate: 0.004\n", encoding="utf-8")
    env = {"EVALSEL_GPU_COUNT": "1", "EVALSEL_GPU_TIMEOUT_S": "2", "EVALSEL_GPU_LOCK_DIR": str(tmp_path / "locks")}
    targets = [f"results/train/{arm}/seed{DEMO['train']['seeds'][0]}/metrics.json" for arm in ("eval_driven", "random")]
    # 8 cores: room for both 4-thread trainings at once, as on a real GPU box
    proc = run_snakemake(copy, *targets, "--cores", "8", "--configfile", "demo/config.yaml", "gpus.yaml", env=env)
    assert proc.returncode == 0 and "TimeoutError" not in proc.stdout, proc.stdout[-4000:]
    assert proc.stdout.count("localrule train:") == 2
