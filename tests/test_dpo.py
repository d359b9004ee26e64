"""DPO after SFT on the tiny model: the preference margin moves the right way; bad preference files are refused."""

from __future__ import annotations

import json
import math

import pytest
from conftest import REPO

from evalsel.core.io import InputError
from evalsel.train.dpo import load_preferences, train_dpo

PREFS = REPO / "demo" / "data" / "preferences.jsonl"
GOOD = {"prompt": "感冒需要吃抗生素吗？", "chosen": "病毒感冒用抗生素无效。", "rejected": "需要，越早吃越好。"}


def test_demo_preferences_are_valid():
    recs = load_preferences(PREFS)
    assert 20 <= len(recs) <= 40
    assert len({r["prompt"] for r in recs}) == len(recs)


@pytest.mark.parametrize(
    "bad, expected",
    [
        ('{"prompt": "x", "chosen": "a"', r"p\.jsonl:2: malformed JSON"),
        (json.dumps({"prompt": "x", "chosen": "a"}), r"p\.jsonl:2: field 'rejected': missing"),
        (
            json.dumps({"prompt": "x", "chosen": 3, "rejected": "b"}),
            r"p\.jsonl:2: field 'chosen': must be a non-empty string",
        ),
        (json.dumps({"prompt": " ", "chosen": "a", "rejected": "b"}), r"p\.jsonl:2: field 'prompt'"),
        (json.dumps({"prompt": "x", "chosen": "a", "rejected": "a "}), r"p\.jsonl:2: field 'rejected': identical"),
        (json.dumps({"prompt": "x", "chosen": "a", "rejected": "b", "score": 1}), r"p\.jsonl:2: field 'score'"),
        (json.dumps(["x", "a", "b"]), r"p\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_preference_file(tmp_path, bad, expected):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(GOOD, ensure_ascii=False) + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=expected):
        load_preferences(path)


def test_empty_preference_file_refused_before_any_model(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError, match="no records"):
        # a model path that does not exist proves nothing was loaded first
        train_dpo(path, str(tmp_path / "no-model"), None, tmp_path / "out", tmp_path / "m.json", tmp_path / "ck")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sft_adapter(tiny_lm_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model with non-zero weights, standing in for the SFT result."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    model = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    out = tmp_path_factory.mktemp("sft_adapter")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(out)
    return out


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.slow
def test_dpo_after_sft_moves_the_margin(tiny_lm_dir, sft_adapter, tmp_path):
    out = tmp_path / "adapter"
    metrics = train_dpo(
        PREFS,
        str(tiny_lm_dir),
        str(sft_adapter),
        out,
        tmp_path / "metrics.json",
        tmp_path / "checkpoints",
        curves_png=tmp_path / "curves.png",
        beta=0.1,
        max_steps=6,
        learning_rate=5e-3,
        per_device_batch_size=8,
        max_length=128,
        precision="bf16",
        logging_steps=1,
        save_steps=3,
        gpus=0,
        seed=0,
    )
    assert metrics["reference"].startswith("the SFT adapter")
    assert metrics["precision"] == "fp32"  # CPU fallback
    before, after = metrics["before"], metrics["after"]
    # at the start the policy is its own reference: loss log 2, zero margin
    assert before["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert before["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert after["rewards/margins"] > 0.02
    assert after["loss"] < before["loss"] - 0.01
    assert metrics["global_step"] == 6
    assert json.loads((tmp_path / "metrics.json").read_text())["after"] == after
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert not (tmp_path / "checkpoints").exists()
    # one adapter on the base model (not the frozen reference copy), trained away from the SFT weights
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert not (out / "ref").exists()
    new, old = _weights(out), _weights(sft_adapter)
    assert set(new) == set(old)
    assert any(not (new[k] == old[k]).all() for k in new)


@pytest.mark.slow
@pytest.mark.slow
def test_dpo_without_sft_adapter_trains_a_fresh_lora_and_resumes(tiny_lm_dir, tmp_path):
    import shutil

    kw = dict(
        max_steps=2,
        save_steps=1,
        keep_checkpoints=True,
        learning_rate=5e-3,
        per_device_batch_size=8,
        max_length=96,
        precision="fp32",
        gradient_checkpointing=False,
        lora_r=2,
        lora_alpha=4,
        lora_dropout=0.0,
        logging_steps=1,
        gpus=0,
        seed=0,
    )
    args = (PREFS, str(tiny_lm_dir), None, tmp_path / "adapter", tmp_path / "metrics.json", tmp_path / "ck")
    first = train_dpo(*args, **kw)
    assert first["reference"] == "the base model" and first["resumed_from"] is None
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 2
    # a job killed after its first checkpoint: the rerun resumes there and ends where the first run did
    shutil.rmtree(tmp_path / "ck" / "checkpoint-2")
    again = train_dpo(*args, **kw)
    assert again["resumed_from"] == "checkpoint-1" and again["global_step"] == 2
    assert again["after"]["loss"] == pytest.approx(first["after"]["loss"], abs=1e-5)


def test_dpo_and_rl_take_the_train_fields_from_train_settings():
    """DPO and RL declare only their own settings; the ones they take from `train:` are
    TrainSettings' declarations (evalsel.core.settings.fields_from), so a default changes once."""
    import dataclasses

    from evalsel.core.settings import fields_from
    from evalsel.rl.train import RLSettings
    from evalsel.train.dpo import DPOSettings
    from evalsel.train.sft import TrainSettings

    train = {f.name: f for f in dataclasses.fields(TrainSettings)}
    rl_own = {"method", "num_generations", "prompts_per_step", "max_completion_length", "temperature", "beta"}
    rl_own |= {"learning_rate", "epochs", "max_steps", "format_weight", "gpus"}
    for cls, own in ((DPOSettings, {"beta", "epochs", "learning_rate", "gpus"}), (RLSettings, rl_own)):
        taken = [f for f in dataclasses.fields(cls) if f.name not in own]
        assert taken and all(f.name in train for f in taken)
        for f in taken:
            assert (f.type, f.default) == (train[f.name].type, train[f.name].default), f.name
    assert [f.name for f in dataclasses.fields(DPOSettings)][:4] == ["beta", "epochs", "learning_rate", "gpus"]

    @dataclasses.dataclass
    class WithFactory:
        tags: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="no plain default"):
        fields_from(WithFactory, "tags")(type("X", (), {}))
