"""The positive control: a world where an effect exists (demo/positive: fictional diseases whose
drugs, organs and tests a random-weight model cannot know), run through the whole DAG. The
workflow must find it: eval-driven significantly above base and above random, random not above
base. And sabotage that a negative control cannot tell apart must make it fail: the base model
evaluated in place of the adapter, the arms' SFT files swapped, every label masked."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, copy_repo, run_snakemake

pytestmark = pytest.mark.slow

SIGNIFICANT = "significant gain"


def verdicts(rep: dict) -> dict[str, str]:
    return {c["name"]: c["scopes"]["overall"]["verdict"] for c in rep["comparisons"]}


def control_holds(rep: dict) -> bool:
    """The positive control's claim: a significant gain over base and over random, and random
    not significantly above base."""
    v = verdicts(rep)
    return (
        v["eval_driven vs base"] == SIGNIFICANT
        and v["eval_driven vs random"] == SIGNIFICANT
        and v["random vs base"] != SIGNIFICANT
    )


@pytest.fixture(scope="session")
def positive_run(tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("positive"))
    run_dir = work / "results" / "positive"
    run_dir.mkdir(parents=True)
    shutil.copy(work / "config.yaml", run_dir / "config.yaml")
    proc = run_snakemake(
        work,
        "--cores",
        "2",
        "--directory",
        "results/positive",
        "--configfile",
        "config.yaml",
        "demo/positive/config.yaml",
        "--show-failed-logs",
    )
    if proc.returncode != 0:
        pytest.fail(f"positive-control DAG failed:\n{proc.stdout[-6000:]}")
    return run_dir


def _comparison(run_dir, evals: dict[str, str]):
    from evalsel.report import build_comparison

    return build_comparison(
        list(evals.values()),
        ["eval_driven", "random"],
        [42],
        alpha=0.05,
        bootstrap_samples=500,
        seed=42,
        recall_splits=["val"],
        eval_splits=["val"],
    )


def test_the_workflow_finds_the_effect(positive_run):
    rep = json.loads((positive_run / "results/report/compare.json").read_text(encoding="utf-8"))
    acc = {
        m: rep["models"][m]["scopes"]["overall"]["accuracy"] for m in ("base", "eval_driven-seed42", "random-seed42")
    }
    print(f"\npositive control: {acc}, {verdicts(rep)}")
    assert control_holds(rep), verdicts(rep)
    # the facts were learnt from other wordings: the guard dropped no recalled sample as a copy
    sft = json.loads((positive_run / "results/sft/sft_statistics.json").read_text(encoding="utf-8"))
    assert sft["contamination"]["max_longest_shared_chars"] < 13


def test_sabotage_base_evaluated_in_place_of_the_adapter(positive_run, tmp_path):
    """An evaluation that never applies the adapter reports the base model's answers for the arm."""
    base = json.loads((positive_run / "results/eval/base.json").read_text(encoding="utf-8"))
    fake = tmp_path / "eval_driven-seed42.json"
    fake.write_text(json.dumps({**base, "model": "eval_driven-seed42"}), encoding="utf-8")
    evals = {
        "base": str(positive_run / "results/eval/base.json"),
        "eval_driven-seed42": str(fake),
        "random-seed42": str(positive_run / "results/eval/random-seed42.json"),
    }
    assert not control_holds(_comparison(positive_run, evals))


def _train_and_eval(run_dir, sft, out, **over):
    from evalsel.evaluate import evaluate
    from evalsel.train import train

    cfg = {
        "method": "full",
        "epochs": 10,
        "learning_rate": 0.003,
        "per_device_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.0,
        "lr_scheduler": "linear",
        "max_length": 128,
        "precision": "fp32",
        "gradient_checkpointing": False,
        "save_steps": 1000,
        "logging_steps": 10,
        "gpus": 0,
        "seed": 42,
        **over,
    }
    lm = str(run_dir / "results/models/tiny_lm")
    train(sft, lm, out / "adapter", out / "metrics.json", out / "curves.png", out / "ck", **cfg)
    evaluate(
        [run_dir / "results/benchmark/fiction.jsonl"],
        ["val"],
        lm,
        out / "eval_driven-seed42.json",
        adapter=out / "adapter",
        model_name="eval_driven-seed42",
        mode="cloze",
        batch_size=32,
        gpus=0,
    )
    return out / "eval_driven-seed42.json"


def test_sabotage_swapped_sft_files(positive_run, tmp_path):
    """The eval-driven arm trained on the random arm's file: no gain over random is left to find."""
    swapped = _train_and_eval(positive_run, positive_run / "results/sft/random.jsonl", tmp_path)
    evals = {
        "base": str(positive_run / "results/eval/base.json"),
        "eval_driven-seed42": str(swapped),
        "random-seed42": str(positive_run / "results/eval/random-seed42.json"),
    }
    rep = _comparison(positive_run, evals)
    assert not control_holds(rep), verdicts(rep)


def test_sabotage_every_label_masked(positive_run, tmp_path, monkeypatch):
    """Every label masked: nothing is learnt; training refuses to start rather than report a run."""
    from evalsel import train as train_mod
    from evalsel.io import InputError

    real = train_mod.tokenize_conversation

    def masked(tokenizer, messages, max_length):
        ex = real(tokenizer, messages, max_length)
        return {**ex, "labels": [-100] * len(ex["labels"])}

    monkeypatch.setattr(train_mod, "tokenize_conversation", masked)
    with pytest.raises(InputError, match="no conversation has assistant tokens"):
        _train_and_eval(positive_run, positive_run / "results/sft/eval_driven.jsonl", tmp_path)


def test_the_positive_world_is_what_the_script_writes(tmp_path, monkeypatch):
    """demo/positive/data is the deterministic output of demo/positive/build.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_positive", REPO / "demo/positive/build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "OUT", tmp_path)
    mod.main()
    for f in sorted(tmp_path.rglob("*.jsonl")):
        assert f.read_bytes() == (REPO / "demo/positive/data" / f.relative_to(tmp_path)).read_bytes(), f
