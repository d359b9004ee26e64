"""bf16 only where the GPU computes it: a V100 or T4 gets fp16 (logged), a CPU fp32."""

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
    from evalsel.train import TrainSettings, _job_device_plan

    with caplog.at_level(logging.WARNING):
        plan = _job_device_plan(TrainSettings(precision="bf16"), cuda=True)
    assert plan["precision"] == "fp16"
    assert "no bf16 support" in caplog.text


def test_training_plan_keeps_bf16_where_supported(gpu_with_bf16):
    from evalsel.train import TrainSettings, _job_device_plan

    assert _job_device_plan(TrainSettings(precision="bf16"), cuda=True)["precision"] == "bf16"
    assert _job_device_plan(TrainSettings(precision="bf16"), cuda=False)["precision"] == "fp32"


def test_inference_dtype_for_evaluate_and_serve(gpu_without_bf16):
    from evalsel.precision import inference_dtype

    assert inference_dtype("cuda") == torch.float16
    assert inference_dtype("cuda:1") == torch.float16
    assert inference_dtype("cpu") == torch.float32


def test_inference_dtype_bf16_gpu(gpu_with_bf16):
    from evalsel.precision import inference_dtype

    assert inference_dtype("cuda") == torch.bfloat16


def test_unknown_precision_is_refused():
    from evalsel.precision import resolve

    with pytest.raises(ValueError, match="bf8"):
        resolve("bf8", cuda=True)
