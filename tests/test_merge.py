"""Adapter merge: the merged standalone model scores exactly as the adapter applied unmerged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluate import write_benchmark

from evalsel.evaluate.multiple_choice import evaluate
from evalsel.train.merge import merge_adapter


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    """A LoRA adapter with random (non-identity) weights on every linear layer, saved with a tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    cfg = LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(out)
    return out


def test_merged_equals_unmerged_adapter(tmp_path, tiny_lm_dir, adapter_dir):
    bench = write_benchmark(tmp_path)
    merged = merge_adapter(str(tiny_lm_dir), adapter_dir, tmp_path / "merged" / "x-seed1")
    assert (merged / "config.json").is_file() and (merged / "tokenizer_config.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    assert not list((tmp_path / "merged").glob(".*.tmp")), "no temporary directory left behind"

    unmerged = evaluate(bench, ["val"], str(tiny_lm_dir), tmp_path / "u.json", adapter=str(adapter_dir), batch_size=4)
    standalone = evaluate(bench, ["val"], str(merged), tmp_path / "m.json", batch_size=4)
    base = evaluate(bench, ["val"], str(tiny_lm_dir), tmp_path / "b.json", batch_size=4)
    assert [q["pred"] for q in unmerged["questions"]] == [q["pred"] for q in standalone["questions"]]
    gap = max(
        abs(a["probs"][k] - b["probs"][k])
        for a, b in zip(unmerged["questions"], standalone["questions"])
        for k in a["probs"]
    )
    assert gap < 1e-4
    # the adapter is really applied: its scores move away from the base model's
    moved = max(
        abs(a["probs"][k] - b["probs"][k]) for a, b in zip(unmerged["questions"], base["questions"]) for k in a["probs"]
    )
    assert moved > 1e-3


def test_merged_model_loads_alone(tmp_path, tiny_lm_dir, adapter_dir):
    import torch
    from transformers import AutoModelForCausalLM

    merged = merge_adapter(str(tiny_lm_dir), adapter_dir, tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert model.dtype == torch.float32  # the base model's dtype is kept
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert json.loads((merged / "config.json").read_text())["model_type"] == "qwen2"


def test_missing_adapter_refused(tmp_path, tiny_lm_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        merge_adapter(str(tiny_lm_dir), tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()
