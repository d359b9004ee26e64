"""bf16 only where the hardware computes it: a V100 or T4 gets fp16 (logged); a CPU bf16 where it
has native bf16 instructions (AVX512-BF16, AMX), else fp32."""

from __future__ import annotations

import logging

import pytest
import torch


@pytest.fixture
def gpu_without_bf16(monkeypatch):
    """What torch reports on a V100/T4: CUDA present, no native bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)


@pytest.fixture
def gpu_with_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


def test_training_plan_takes_fp16_on_a_gpu_without_bf16(gpu_without_bf16, caplog):
    from evalsel.train.sft import TrainSettings, _job_device_plan

    with caplog.at_level(logging.WARNING):
        plan = _job_device_plan(TrainSettings(precision="bf16"), cuda=True)
    assert plan["precision"] == "fp16"
    assert "no bf16 support" in caplog.text


def test_training_plan_keeps_bf16_where_supported(gpu_with_bf16):
    from evalsel.train.sft import TrainSettings, _job_device_plan

    assert _job_device_plan(TrainSettings(precision="bf16"), cuda=True)["precision"] == "bf16"
    assert _job_device_plan(TrainSettings(precision="bf16"), cuda=False)["precision"] == "fp32"


def test_inference_dtype_for_evaluate_and_serve(gpu_without_bf16):
    from evalsel.core.precision import inference_dtype

    assert inference_dtype("cuda") == torch.float16
    assert inference_dtype("cuda:1") == torch.float16
    assert inference_dtype("cpu") == torch.float32


def test_inference_dtype_bf16_gpu(gpu_with_bf16):
    from evalsel.core.precision import inference_dtype

    assert inference_dtype("cuda") == torch.bfloat16


def test_unknown_precision_is_refused():
    from evalsel.core.precision import resolve

    with pytest.raises(ValueError, match="bf8"):
        resolve("bf8", cuda=True)


def test_cpu_keeps_bf16_only_with_native_bf16(monkeypatch, caplog):
    import evalsel.core.precision as precision
    from evalsel.train.sft import TrainSettings, _job_device_plan

    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    with caplog.at_level(logging.INFO):
        assert _job_device_plan(TrainSettings(precision="bf16"), cuda=False)["precision"] == "bf16"
    assert "native bf16" in caplog.text
    # fp16 has no CPU autocast worth having: fp32
    assert _job_device_plan(TrainSettings(precision="fp16"), cuda=False)["precision"] == "fp32"
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    assert _job_device_plan(TrainSettings(precision="bf16"), cuda=False)["precision"] == "fp32"
    assert precision.resolve("bf16", cuda=False, cpu_bf16=True) == "bf16"
    assert precision.resolve("bf16", cuda=False, cpu_bf16=False) == "fp32"


@pytest.mark.cpu_bf16
def test_lora_trains_in_bf16_on_a_cpu_that_has_it(tiny_lm_dir, tmp_path):
    """On a CPU with native bf16 the run really is bf16 (autocast over bf16 weights), and learns."""
    import json

    from evalsel.core.precision import cpu_bf16_supported
    from evalsel.train.sft import train

    if torch.cuda.is_available() or not cpu_bf16_supported():
        pytest.skip("needs a CPU with native bf16 and no CUDA")
    sft = tmp_path / "sft.jsonl"
    conv = {
        "conversations": [
            {"from": "human", "value": "高血压吃什么药？"},
            {"from": "gpt", "value": "遵医嘱服用降压药。"},
        ]
    }
    sft.write_text(json.dumps(conv, ensure_ascii=False) + "\n", encoding="utf-8")
    m = train(
        sft,
        str(tiny_lm_dir),
        tmp_path / "adapter",
        tmp_path / "metrics.json",
        tmp_path / "curves.png",
        tmp_path / "ck",
        method="lora",
        epochs=20,
        learning_rate=0.01,
        per_device_batch_size=1,
        gradient_accumulation_steps=1,
        warmup_ratio=0.0,
        max_length=64,
        precision="bf16",
        gradient_checkpointing=False,
        logging_steps=1,
        gpus=0,
    )
    assert m["precision"] == "bf16" and m["device"] == "cpu"
    losses = [r["loss"] for r in m["log"]]
    assert losses[-1] < losses[0]
