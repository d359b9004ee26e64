"""The default config.yaml, unchanged but for ``hub_mirror``, runs its first jobs for real: the
C-Eval Parquet layout and shibing624/medical (script beside its JSON-lines files) read by the real
``datasets`` builders from local copies of the repositories."""

from __future__ import annotations

import json

import yaml
from conftest import copy_repo, run_snakemake


def test_default_config_fetches_the_benchmark_and_prepares_the_pool(tmp_path, hub_mirror):
    work = copy_repo(tmp_path / "repo")
    subjects = ["clinical_medicine", "basic_medicine", "physician"]
    targets = [f"results/benchmark/{s}.jsonl" for s in subjects] + ["results/pool/shibing624_medical"]
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    proc = run_snakemake(work, *targets, "--cores", "2", "--config", f"hub_mirror={hub_mirror}", env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    # held out by default: C-Eval's answerless test questions are the recall queries, val is scored
    cfg = yaml.safe_load((work / "config" / "config.yaml").read_text(encoding="utf-8"))["benchmark"]
    assert cfg["recall_splits"] == ["test"] and cfg["eval_splits"] == ["val"]
    for s in subjects:
        lines = (work / f"results/benchmark/{s}.jsonl").read_text(encoding="utf-8").splitlines()
        recs = [json.loads(x) for x in lines]
        assert recs and all(r["subject"] == s and len(r["choices"]) == 4 for r in recs)
        assert {r["split"] for r in recs} == {"test", "val"}
        assert all((r["answer"] is None) == (r["split"] == "test") for r in recs)
    manifest = json.loads((work / "results/pool/shibing624_medical/manifest.json").read_text(encoding="utf-8"))
    written = (hub_mirror / "shibing624/medical/finetune/train_zh_0.json").read_text(encoding="utf-8").splitlines()
    assert manifest["statistics"]["read"] == len(written)
    assert manifest["count"] + manifest["statistics"]["skipped_total"] == len(written)
    assert manifest["statistics"]["formats"] == {"alpaca": manifest["count"]}
