"""Smoke test at Qwen2.5-0.5B's real shapes (vocab 151,936, hidden 896, 14 heads with 2 KV heads,
tied embeddings, the real tokenizer and generation config), random-initialised, two layers: LoRA
steps with gradient checkpointing, save, reload, evaluation unmerged and merged, one DPO step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

QUESTIONS = [
    ("成人胸外按压的频率为每分钟____", ["60~80次", "100~120次", "140~160次", "40~60次"], "B"),
    ("缺铁性贫血最常见的原因是____", ["慢性失血", "摄入过多", "吸收增加", "需求减少"], "A"),
    ("正常成人的空腹血糖范围约为____", ["1.0~2.0", "3.9~6.1", "8.0~10.0", "11.1以上"], "B"),
    ("心脏的起搏点位于____", ["房室结", "浦肯野纤维", "窦房结", "希氏束"], "C"),
    ("胰岛素由哪种细胞分泌____", ["α细胞", "δ细胞", "PP细胞", "β细胞"], "D"),
]


@pytest.fixture(scope="module")
def qwen_half_b(tmp_path_factory, qwen_tokenizer_dir):
    from qwen25 import QWEN25_0_5B, write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("qwen25_0_5b_2l"), QWEN25_0_5B, qwen_tokenizer_dir, layers=2)


def _benchmark(path: Path) -> Path:
    rows = [
        {
            "id": f"physician/val/{i}",
            "subject": "physician",
            "split": "val",
            "question": q,
            "choices": c,
            "answer": a,
            "explanation": "",
        }
        for i, (q, c, a) in enumerate(QUESTIONS)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _sft(path: Path) -> Path:
    rows = []
    for i, (q, c, a) in enumerate(QUESTIONS * 2):
        answer = c["ABCD".index(a)]
        rows.append(
            {
                "id": f"s{i}",
                "conversations": [
                    {"from": "human", "value": q.replace("____", "多少？")},
                    {"from": "gpt", "value": f"答案是{answer}。"},
                ],
            }
        )
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_lora_save_reload_evaluate_merge_dpo_and_rl_at_real_shapes(tmp_path, qwen_half_b):
    from transformers import AutoConfig

    from evalsel.evaluate.multiple_choice import evaluate
    from evalsel.rl.prompts import build_rl_prompts
    from evalsel.rl.train import train_rl
    from evalsel.train.dpo import train_dpo
    from evalsel.train.merge import merge_adapter
    from evalsel.train.sft import train

    cfg = AutoConfig.from_pretrained(qwen_half_b)
    assert (
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.tie_word_embeddings,
    ) == (151936, 896, 14, 2, True)
    metrics = train(
        _sft(tmp_path / "sft.jsonl"),
        str(qwen_half_b),
        tmp_path / "adapter",
        tmp_path / "metrics.json",
        tmp_path / "curves.png",
        tmp_path / "ck",
        method="lora",
        lora_r=8,
        lora_alpha=16,
        max_steps=2,
        per_device_batch_size=2,
        gradient_accumulation_steps=1,
        max_length=96,
        learning_rate=1e-3,
        gradient_checkpointing=True,
        precision="bf16",
        save_steps=1,
        logging_steps=1,
        gpus=0,
        seed=0,
    )
    assert metrics["global_step"] == 2 and metrics["precision"] == "fp32"
    assert all(r["loss"] == r["loss"] for r in metrics["log"])  # finite, not NaN
    adapter = tmp_path / "adapter"
    conf = json.loads((adapter / "adapter_config.json").read_text())
    suffixes = {m.rsplit(".", 1)[-1] for m in conf["target_modules"]}
    assert suffixes >= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "lm_head" not in suffixes  # tied to the embeddings: never a LoRA target
    bench = _benchmark(tmp_path / "physician.jsonl")
    unmerged = evaluate(
        [bench],
        ["val"],
        str(qwen_half_b),
        tmp_path / "eval_unmerged.json",
        adapter=adapter,
        model_name="eval_driven-seed0",
        gpus=0,
    )
    merged_dir = merge_adapter(str(qwen_half_b), adapter, tmp_path / "merged")
    merged = evaluate([bench], ["val"], str(merged_dir), tmp_path / "eval_merged.json", model_name="merged", gpus=0)
    base = evaluate([bench], ["val"], str(qwen_half_b), tmp_path / "eval_base.json", gpus=0)
    preds = lambda r: [q["pred"] for q in r["questions"]]  # noqa: E731
    assert len(preds(unmerged)) == 5 and preds(unmerged) == preds(merged)
    for a, b in zip(unmerged["questions"], merged["questions"]):
        for letter in a["probs"]:
            assert a["probs"][letter] == pytest.approx(b["probs"][letter], abs=2e-3)
    assert [q["probs"] for q in base["questions"]] != [q["probs"] for q in unmerged["questions"]]
    # cloze scoring too: the adapter unmerged and merged give the same option log-likelihoods
    cz_unmerged = evaluate(
        [bench],
        ["val"],
        str(qwen_half_b),
        tmp_path / "cz_u.json",
        adapter=adapter,
        model_name="eval_driven-seed0",
        mode="cloze",
        gpus=0,
    )
    cz_merged = evaluate(
        [bench], ["val"], str(merged_dir), tmp_path / "cz_m.json", model_name="merged", mode="cloze", gpus=0
    )
    for a, b in zip(cz_unmerged["questions"], cz_merged["questions"]):
        assert a["pred"] == b["pred"]
        assert a["cloze"]["total"] == pytest.approx(b["cloze"]["total"], abs=5e-2)
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        "".join(
            json.dumps(
                {"prompt": q, "chosen": c["ABCD".index(a)], "rejected": c[0 if a != "A" else 1]}, ensure_ascii=False
            )
            + "\n"
            for q, c, a in QUESTIONS
        ),
        encoding="utf-8",
    )
    dpo = train_dpo(
        prefs,
        str(qwen_half_b),
        adapter,
        tmp_path / "dpo",
        tmp_path / "dpo.json",
        tmp_path / "dpo_ck",
        beta=0.1,
        max_steps=1,
        learning_rate=1e-4,
        per_device_batch_size=2,
        max_length=96,
        precision="bf16",
        logging_steps=1,
        save_steps=1,
        gpus=0,
        seed=0,
    )
    assert dpo["global_step"] == 1 and (tmp_path / "dpo" / "adapter_config.json").is_file()
    # one GRPO step from the SFT adapter on the same questions as an RL split (Qwen2.5's chat
    # template and tokenizer, trl's generation and loss at the real vocabulary)
    rl_split = tmp_path / "rl.jsonl"
    rl_split.write_text(bench.read_text(encoding="utf-8").replace("/val/", "/dev/").replace('"val"', '"dev"'))
    build_rl_prompts([rl_split], [bench], ["dev"], ["test"], tmp_path / "rl_prompts.jsonl", tmp_path / "rl_stats.json")
    rl = train_rl(
        tmp_path / "rl_prompts.jsonl",
        str(qwen_half_b),
        adapter,
        tmp_path / "rl",
        tmp_path / "rl.json",
        tmp_path / "rl_ck",
        max_steps=1,
        prompts_per_step=2,
        num_generations=2,
        max_completion_length=4,
        precision="bf16",
        logging_steps=1,
        gpus=0,
        seed=0,
    )
    assert rl["global_step"] == 1 and rl["reference"] == "the SFT model (frozen copy)"
    assert (tmp_path / "rl" / "adapter_config.json").is_file()


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "perf" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_survives_an_initialised_cuda_and_a_failing_row(tmp_path, monkeypatch):
    """perf/gpu_check.py at tiny sizes on the CPU, with what a GPU box would do to it: one GPU
    counted, and CUDA initialised by the first rows (before: train(gpus=1) then raised "CUDA is
    already initialised in this process" and the script died with no table). The script claims
    the GPU before any row, so the training rows' own claim reuses it; a row that fails is
    recorded and the others still run; the table and JSON are written."""
    import torch

    from evalsel.core import gpu

    monkeypatch.setenv(gpu.COUNT_ENV, "1")
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(gpu.CLAIMED_ENV, raising=False)
    initialised = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: bool(initialised))
    # the failure mode itself: a claim after CUDA was initialised, with no claim around it
    initialised.append(True)
    with pytest.raises(RuntimeError, match="CUDA is already initialised"):
        with gpu.claim(1):
            pass
    initialised.clear()
    mod = _gpu_check()
    embed = mod.check_embed

    def embed_then_cuda_is_initialised(*a):  # as rows 1-2 leave it on a GPU
        embed(*a)
        initialised.append(True)

    monkeypatch.setattr(mod, "check_embed", embed_then_cuda_is_initialised)
    monkeypatch.setattr(mod, "check_score", lambda *a: (_ for _ in ()).throw(RuntimeError("simulated failure")))
    out = tmp_path / "gpu_check.json"
    rc = mod.main(["--smoke", "--out", str(out)])
    rows = {name: value for name, value, _ in json.loads(out.read_text())["rows"]}
    assert rc == 1  # one row failed
    assert rows["letter scoring"].startswith("FAILED: RuntimeError: simulated failure")
    trained = [v for k, v in rows.items() if k.startswith("train LoRA")]
    assert len(trained) == 2 and all("tokens/s" in v for v in trained), rows
    assert any(k.startswith("embed") for k in rows) and any(k.startswith("RDS+ vectors") for k in rows)
    assert any(k.endswith("(numpy, CPU)") for k in rows)  # the CPU recall figure beside the device's
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # the claim was released


def test_gpu_check_names_what_is_missing_before_any_row(monkeypatch, capsys):
    mod = _gpu_check()
    monkeypatch.setattr(mod, "REQUIRED", (*mod.REQUIRED, "no_such_package_xyz"))
    assert mod.main(["--smoke", "--tokenizer", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "'no_such_package_xyz' is not installed" in err and "--tokenizer /nonexistent" in err
    assert mod.ROWS == []
