"""Smoke test at Qwen2.5-0.5B's real shapes (vocab 151,936, hidden 896, 14 heads with 2 KV heads,
tied embeddings, the real tokenizer and generation config), random-initialised, two layers: LoRA
steps with gradient checkpointing, save, reload, evaluation unmerged and merged, one DPO step."""

from __future__ import annotations

import json
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


def test_lora_save_reload_evaluate_merge_and_dpo_at_real_shapes(tmp_path, qwen_half_b):
    from transformers import AutoConfig

    from evalsel.dpo import train_dpo
    from evalsel.evaluate import evaluate
    from evalsel.merge import merge_adapter
    from evalsel.train import train

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


def test_gpu_check_script_runs_in_smoke_mode(tmp_path):
    """perf/gpu_check.py (prepared for a GPU box) runs end to end at tiny sizes on the CPU."""
    import subprocess
    import sys

    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "perf" / "gpu_check.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    names = [r[0] for r in rows]
    assert len(rows) == 6 and names[0].startswith("embed") and names[-2].startswith("letter scoring")
    assert names[-1].startswith("RDS+ vectors")
