"""SFT training on the tiny model: assistant-only labels, loss goes down, checkpoints resume after a kill."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalsel.core.io import InputError, read_json, write_json
from evalsel.train.sft import FINGERPRINT, load_sft, prepare_checkpoints, tokenize_conversation, train

REPO = Path(__file__).resolve().parents[1]

_QA = [
    ("高血压患者每日食盐摄入量应不超过多少？", "每日食盐摄入量不超过5克。"),
    ("糖尿病的典型症状是什么？", "多饮、多食、多尿和体重下降。"),
    ("急性心肌梗死最常见的早期心律失常是什么？", "室性期前收缩。"),
    ("十二指肠溃疡的典型表现是什么？", "反复上腹痛，进食后缓解。"),
]

# Small, fast settings; the loss on a 4-pattern set must fall within a few dozen steps.
FAST = dict(
    method="lora",
    lora_r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    lora_target_modules="all",
    epochs=4,
    max_steps=None,
    learning_rate=5e-3,
    per_device_batch_size=4,
    gradient_accumulation_steps=1,
    warmup_ratio=0.0,
    lr_scheduler="linear",
    max_length=128,
    precision="bf16",
    gradient_checkpointing=False,
    save_steps=3,
    logging_steps=1,
    deepspeed=None,
    gpus=0,
    seed=7,
    keep_checkpoints=False,
    threads=1,
)


def write_sft(path: Path, n: int = 24) -> Path:
    """Half ShareGPT, half alpaca records over the four question/answer pairs."""
    lines = []
    for i in range(n):
        q, a = _QA[i % len(_QA)]
        if i % 2:
            rec = {
                "id": f"s{i}",
                "origin": "recalled",
                "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
            }
        else:
            rec = {"id": f"a{i}", "origin": "random", "instruction": q, "input": "", "output": a}
        lines.append(json.dumps(rec, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(tmp: Path, sft: Path, tiny: Path, **over):
    settings = {**FAST, **over}
    callbacks = settings.pop("callbacks", None)
    return train(
        sft,
        str(tiny),
        tmp / "adapter",
        tmp / "metrics.json",
        tmp / "curves.png",
        tmp / "checkpoints",
        callbacks=callbacks,
        **settings,
    )


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def _assistant_text(tok, ex) -> str:
    return tok.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])


def test_labels_cover_assistant_tokens_only(tok):
    messages = [
        {"role": "system", "content": "你是医生。"},
        {"role": "user", "content": "头痛怎么办？"},
        {"role": "assistant", "content": "注意休息。"},
        {"role": "user", "content": "还要吃药吗？"},
        {"role": "assistant", "content": "必要时服用止痛药。"},
    ]
    ex = tokenize_conversation(tok, messages, 512)
    assert len(ex["input_ids"]) == len(ex["labels"])
    assert _assistant_text(tok, ex) == "注意休息。<|im_end|>\n必要时服用止痛药。<|im_end|>\n"
    masked = tok.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100])
    assert "你是医生" in masked and "头痛怎么办" in masked and "还要吃药吗" in masked
    assert "注意休息" not in masked and masked.endswith("<|im_start|>assistant\n")
    labelled = [lab for lab in ex["labels"] if lab != -100]
    assert labelled == [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
    # the template's default system prompt is context, not a target
    ex2 = tokenize_conversation(tok, messages[1:3], 512)
    assert "You are a helpful assistant" in tok.decode(ex2["input_ids"])
    assert _assistant_text(tok, ex2) == "注意休息。<|im_end|>\n"


def test_alpaca_and_sharegpt_tokenise_alike(tmp_path, tok):
    p = tmp_path / "sft.jsonl"
    p.write_text(
        json.dumps(
            {"id": "1", "instruction": "解释", "input": "高血压", "output": "血压升高。", "system": "你是医生。"},
            ensure_ascii=False,
        )
        + "\n"
        + json.dumps(
            {
                "id": "2",
                "system": "你是医生。",
                "conversations": [{"from": "human", "value": "解释\n高血压"}, {"from": "gpt", "value": "血压升高。"}],
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    a, b = load_sft(p)
    assert a == b
    assert tokenize_conversation(tok, a, 512) == tokenize_conversation(tok, b, 512)


def test_truncation_keeps_or_drops_and_counts(tok):
    from evalsel.train.sft import build_dataset

    long_prompt = [{"role": "user", "content": "很长的问题" * 200}, {"role": "assistant", "content": "答"}]
    long_answer = [{"role": "user", "content": "问"}, {"role": "assistant", "content": "很长的回答" * 200}]
    examples, stats = build_dataset(tok, [long_prompt, long_answer], max_length=64)
    assert stats["records"] == 2 and stats["used"] == 1 and stats["truncated"] == 1
    assert stats["dropped"] == {"no_assistant_token_within_max_length": 1}
    assert len(examples[0]["input_ids"]) == 64 and examples[0]["labels"][-1] != -100


@pytest.mark.parametrize(
    "record, field",
    [
        (
            {"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
            "conversations[1].from",
        ),
        ({"id": "x", "conversations": [{"from": "human", "value": "q"}]}, "conversations"),
        (
            {"id": "x", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
            "conversations",
        ),
        (
            {"id": "x", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
            "conversations[1].value",
        ),
        ({"id": "x", "instruction": "q", "input": "", "output": 3}, "output"),
        ({"id": "x", "prompt": "q", "answer": "a"}, None),
    ],
)
def test_bad_sft_record_names_file_line_field(tmp_path, record, field):
    p = write_sft(tmp_path / "sft.jsonl", 2)
    with open(p, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    with pytest.raises(InputError) as err:
        # refused before any model loads: the base model path does not even exist
        train(
            p,
            str(tmp_path / "no-model"),
            tmp_path / "a",
            tmp_path / "m.json",
            tmp_path / "c.png",
            tmp_path / "ck",
            **FAST,
        )
    assert err.value.line == 3 and err.value.field == field and "sft.jsonl:3" in str(err.value)
    assert not (tmp_path / "ck").exists()


def test_training_lowers_loss_and_writes_outputs(tmp_path, tiny_lm_dir):
    sft = write_sft(tmp_path / "sft.jsonl")
    m = run(tmp_path, sft, tiny_lm_dir, epochs=5)
    losses = [r["loss"] for r in m["log"]]
    assert m["global_step"] == 30 and len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, (first, last)
    assert m["device"] == "cpu" and m["precision"] == "fp32" and m["resumed_from"] is None
    assert m["data"]["records"] == 24 and m["data"]["used"] == 24
    assert m["tokens_seen"] > 0 and m["tokens_per_second"] > 0 and m["peak_memory_mb"] > 0
    assert m["trainable_parameters"] < m["total_parameters"]
    lrs = [r["learning_rate"] for r in m["log"]]
    assert lrs[0] > lrs[-1]  # linear decay
    assert read_json(tmp_path / "metrics.json") == m
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tokenizer_config.json").is_file()
    assert not (tmp_path / "checkpoints").exists(), "checkpoints are removed after success"
    assert not list(tmp_path.glob(".adapter*")), "no staging directory left behind"


def _crash_at(step: int):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == step:
                raise KeyboardInterrupt(f"simulated kill at step {step}")

    return Crash()


def _adapter_weights(path: Path):
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_crashed_run_resumes_and_matches_uninterrupted_run(tmp_path, tiny_lm_dir):
    sft = write_sft(tmp_path / "sft.jsonl")
    ref = run(tmp_path / "ref", sft, tiny_lm_dir, epochs=2)

    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        run(crashed, sft, tiny_lm_dir, epochs=2, callbacks=[_crash_at(8)])
    ckpts = sorted(p.name for p in (crashed / "checkpoints").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-3", "checkpoint-6"] and not (crashed / "adapter").exists()

    resumed = run(crashed, sft, tiny_lm_dir, epochs=2)
    assert resumed["resumed_from"] == "checkpoint-6"
    assert resumed["global_step"] == ref["global_step"] == 12
    # the logged history continues the first session's: steps 1..12, each once
    assert [r["step"] for r in resumed["log"]] == list(range(1, 13))
    for a, b in zip(resumed["log"], ref["log"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
    wa, wb = _adapter_weights(crashed / "adapter"), _adapter_weights(tmp_path / "ref" / "adapter")
    assert all((wa[k] - wb[k]).abs().max() < 1e-5 for k in wa)
    # metrics.json reports the whole run, not the resumed half only
    assert resumed["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-4)
    assert resumed["tokens_seen"] == ref["tokens_seen"] > 0
    assert resumed["steps_this_session"] == 6 and ref["steps_this_session"] == 12
    assert 0 < resumed["tokens_seen_this_session"] < resumed["tokens_seen"]


def test_whole_run_loss_weights_each_logged_interval():
    from evalsel.train.sft import whole_run_loss

    logs = [{"step": 1, "loss": 4.0}, {"step": 3, "loss": 3.0}, {"step": 5, "loss": 2.0}]
    # resumed at 5, the session's 5 steps averaged 1.0: (4 + 3*2 + 2*2 + 1*5) / 10
    assert whole_run_loss(logs, 5, 1.0, 10) == pytest.approx(1.9)
    assert whole_run_loss([], 0, 2.5, 8) == 2.5
    # a checkpoint two steps after the last log: the gap takes the last logged loss
    assert whole_run_loss(logs, 7, 1.0, 10) == pytest.approx((4 + 6 + 4 + 2 * 2 + 3) / 10)


def test_changed_settings_start_afresh(tmp_path, tiny_lm_dir):
    sft = write_sft(tmp_path / "sft.jsonl", 12)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, sft, tiny_lm_dir, epochs=2, callbacks=[_crash_at(4)])
    assert (tmp_path / "checkpoints" / "checkpoint-3").is_dir()
    m = run(tmp_path, sft, tiny_lm_dir, epochs=2, learning_rate=1e-3)
    assert m["resumed_from"] is None and m["global_step"] == 6
    assert [r["step"] for r in m["log"]] == list(range(1, 7))


def test_prepare_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    fp = {"learning_rate": 0.1, "sft_sha256": "abc"}
    assert prepare_checkpoints(ck, fp) is None
    for step, complete in [(2, True), (4, True), (6, False)]:
        d = ck / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    # a kill while checkpoint-6 was being written: it is removed, checkpoint-4 resumes
    assert prepare_checkpoints(ck, fp) == ck / "checkpoint-4"
    assert not (ck / "checkpoint-6").exists()
    assert prepare_checkpoints(ck, {**fp, "sft_sha256": "def"}) is None
    assert list(ck.iterdir()) == [ck / FINGERPRINT]
    # an unreadable or missing fingerprint never resumes
    (ck / "checkpoint-2").mkdir()
    (ck / "checkpoint-2" / "trainer_state.json").write_text("{}")
    os.unlink(ck / FINGERPRINT)
    assert prepare_checkpoints(ck, fp) is None


def test_fingerprint_ignores_cadence_but_not_data(tmp_path, tiny_lm_dir):
    from evalsel.train.sft import TrainSettings, fingerprint

    sft = write_sft(tmp_path / "sft.jsonl", 4)
    base = fingerprint(TrainSettings(**FAST), sft, str(tiny_lm_dir))
    assert fingerprint(TrainSettings(**{**FAST, "save_steps": 50, "logging_steps": 9}), sft, str(tiny_lm_dir)) == base
    assert fingerprint(TrainSettings(**{**FAST, "seed": 8}), sft, str(tiny_lm_dir)) != base
    write_sft(sft, 5)
    assert fingerprint(TrainSettings(**FAST), sft, str(tiny_lm_dir)) != base


def test_killed_process_resumes_from_checkpoint(tmp_path, tiny_lm_dir):
    """A real SIGKILL of a training process: the rerun continues from its last complete checkpoint."""
    sft = write_sft(tmp_path / "sft.jsonl", 16)
    settings = {**FAST, "epochs": 50, "save_steps": 2, "logging_steps": 5}
    args = [
        str(sft),
        str(tiny_lm_dir),
        str(tmp_path / "adapter"),
        str(tmp_path / "metrics.json"),
        str(tmp_path / "curves.png"),
        str(tmp_path / "checkpoints"),
    ]
    write_json(tmp_path / "job.json", {"args": args, "settings": settings})
    code = (
        "import json, sys; from evalsel.train.sft import train; "
        "job = json.load(open(sys.argv[1])); train(*job['args'], **job['settings'])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "job.json")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(
            int(p.parent.name.split("-")[1]) >= 4
            for p in (tmp_path / "checkpoints").glob("checkpoint-*/trainer_state.json")
        ):
            assert proc.poll() is None, "training process ended before its first checkpoints"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "adapter").exists()
    # resume, but stop soon: max_steps is fingerprinted, so the kill must be resumed with the same
    # settings; the callback below ends the resumed session after a few more steps instead
    from transformers import TrainerCallback

    seen = {}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen["start"] = state.global_step

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= seen["start"] + 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(*args, callbacks=[Probe()], **settings)
    assert seen["start"] >= 4 and seen["start"] % 2 == 0, seen


def test_qlora_refused_without_gpu_or_bitsandbytes(tmp_path, tiny_lm_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    sft = write_sft(tmp_path / "sft.jsonl", 2)
    with pytest.raises(RuntimeError, match="qlora"):
        run(tmp_path, sft, tiny_lm_dir, method="qlora")
    assert not (tmp_path / "adapter").exists()


def test_bad_settings_refused(tmp_path, tiny_lm_dir):
    sft = write_sft(tmp_path / "sft.jsonl", 2)
    with pytest.raises(ValueError, match="method"):
        run(tmp_path, sft, tiny_lm_dir, method="prefix")
    with pytest.raises(ValueError, match="DeepSpeed config"):
        run(tmp_path, sft, tiny_lm_dir, deepspeed=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="lora_target_modules"):
        run(tmp_path, sft, tiny_lm_dir, lora_target_modules=[])


def test_full_finetuning_and_target_list(tmp_path, tiny_lm_dir):
    sft = write_sft(tmp_path / "sft.jsonl", 8)
    m = run(tmp_path / "full", sft, tiny_lm_dir, method="full", epochs=1, learning_rate=1e-3)
    assert m["trainable_parameters"] == m["total_parameters"]
    assert (tmp_path / "full" / "adapter" / "config.json").is_file()
    assert not (tmp_path / "full" / "adapter" / "adapter_config.json").exists()
    # evaluation takes the fully fine-tuned directory where an adapter would be
    from test_evaluate import write_benchmark

    from evalsel.evaluate.multiple_choice import evaluate

    r = evaluate(
        write_benchmark(tmp_path),
        ["val"],
        str(tiny_lm_dir),
        tmp_path / "e.json",
        adapter=str(tmp_path / "full" / "adapter"),
        model_name="full-seed7",
    )
    assert r["model"] == "full-seed7" and r["overall"]["n"] == 10
    m = run(tmp_path / "qv", sft, tiny_lm_dir, lora_target_modules=["q_proj", "v_proj"], epochs=1)
    cfg = read_json(tmp_path / "qv" / "adapter" / "adapter_config.json")
    assert set(cfg["target_modules"]) == {"q_proj", "v_proj"}
    assert m["trainable_parameters"] < 16384


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_shipped_deepspeed_configs_resolve_against_trainer_args(stage, tmp_path, tiny_lm_dir):
    """The ZeRO configs are valid for the Trainer integration: every 'auto' is filled from the arguments."""
    from transformers import AutoConfig, TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    cfg = HfTrainerDeepSpeedConfig(str(REPO / "config" / "deepspeed" / f"{stage}.json"))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        bf16=True,
        report_to="none",
        use_cpu=True,
    )
    cfg.trainer_config_process(args)

    class Model:
        config = AutoConfig.from_pretrained(tiny_lm_dir)

    cfg.trainer_config_finalize(args, Model, num_training_steps=100)
    assert cfg.config["zero_optimization"]["stage"] == int(stage[-1]) and cfg.is_zero3() == (stage == "zero3")
    assert (cfg.config["train_micro_batch_size_per_gpu"], cfg.config["gradient_accumulation_steps"]) == (2, 4)
    assert cfg.config["bf16"]["enabled"] is True and cfg.config["fp16"]["enabled"] is False
    assert "auto" not in json.dumps(cfg.config)


@pytest.mark.slow
def test_torchrun_two_processes_train_one_model(tmp_path, tiny_lm_dir):
    """The multi-GPU launcher path, on CPU: torchrun starts two gloo workers that train one model."""
    import dataclasses

    from evalsel.train.sft import TrainSettings, fingerprint, launch_distributed

    sft = write_sft(tmp_path / "sft.jsonl", 16)
    s = TrainSettings(**{**FAST, "epochs": 2, "threads": 2})
    resume = prepare_checkpoints(tmp_path / "ck", fingerprint(s, sft, str(tiny_lm_dir)))
    job = {
        "sft_path": str(sft),
        "base_model": str(tiny_lm_dir),
        "out_dir": str(tmp_path / "adapter"),
        "metrics_path": str(tmp_path / "m.json"),
        "curves_png": str(tmp_path / "c.png"),
        "checkpoint_dir": str(tmp_path / "ck"),
        "resume_from": resume,
        "settings": dataclasses.asdict(s),
    }
    launch_distributed(job, 2)
    m = read_json(tmp_path / "m.json")
    # 16 samples, 4 per device on 2 devices: 2 steps an epoch
    assert m["world_size"] == 2 and m["global_step"] == 4
    assert m["tokens_seen"] == 2 * m["data"]["tokens"]  # every sample seen twice, counted across ranks
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "ck").exists() and not list(tmp_path.glob(".adapter*"))


def test_max_steps_with_gradient_checkpointing(tmp_path, tiny_lm_dir):
    sft = write_sft(tmp_path / "sft.jsonl", 8)
    m = run(
        tmp_path, sft, tiny_lm_dir, max_steps=3, epochs=10, gradient_checkpointing=True, gradient_accumulation_steps=2
    )
    assert m["global_step"] == 3 and [r["step"] for r in m["log"]] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in m["log"])
    assert m["tokens_seen"] > 0


def test_qlora_with_zero3_is_refused_naming_what_works():
    from evalsel.train.sft import TrainSettings

    repo = Path(__file__).resolve().parents[1]
    s = TrainSettings(method="qlora", deepspeed=str(repo / "config/deepspeed/zero3.json"))
    with pytest.raises(ValueError, match="qlora with no DeepSpeed or ZeRO-2"):
        s.validate()
    TrainSettings(method="qlora", deepspeed=str(repo / "config/deepspeed/zero2.json")).validate()
    TrainSettings(method="lora", deepspeed=str(repo / "config/deepspeed/zero3.json")).validate()


def test_zero3_is_registered_before_the_model_loads(tmp_path, tiny_lm_dir, monkeypatch):
    """With a ZeRO-3 config, TrainingArguments register it (HfDeepSpeedConfig) so that
    from_pretrained loads the weights partitioned: run_job must build them before the model."""
    import dataclasses

    from transformers.integrations import is_deepspeed_zero3_enabled

    from evalsel.train import sft as train

    pytest.importorskip("deepspeed")
    repo = Path(__file__).resolve().parents[1]
    zero3 = str(repo / "config/deepspeed/zero3.json")
    seen = {}

    class _Stop(Exception):
        pass

    def load_model(*args, **kw):
        seen["zero3"] = is_deepspeed_zero3_enabled()
        raise _Stop

    monkeypatch.setattr(train, "_load_model", load_model)
    # what a CUDA host plans (the CPU plan drops DeepSpeed)
    monkeypatch.setattr(train, "_job_device_plan", lambda s, cuda: {"precision": "fp32", "deepspeed": zero3})
    sft = write_sft(tmp_path / "sft.jsonl")
    s = train.TrainSettings(deepspeed=zero3)
    job = {
        "sft_path": str(sft),
        "base_model": str(tiny_lm_dir),
        "out_dir": str(tmp_path / "a"),
        "metrics_path": str(tmp_path / "m.json"),
        "curves_png": str(tmp_path / "c.png"),
        "checkpoint_dir": str(tmp_path / "ck"),
        "resume_from": None,
        "settings": dataclasses.asdict(s),
    }
    with pytest.raises(_Stop):
        train.run_job(job)
    assert seen == {"zero3": True}
