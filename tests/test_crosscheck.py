"""The evaluator against lm-evaluation-harness on a small model of the real Qwen2.5 architecture and
tokenizer: the base model and a LoRA adapter, every question's choice and option probabilities."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("peft")

from evalsel.core.io import load_jsonl, read_json, write_jsonl  # noqa: E402
from evalsel.evaluate.crosscheck import compare, crosscheck, export_task  # noqa: E402
from evalsel.evaluate.multiple_choice import evaluate  # noqa: E402

# lm-evaluation-harness on a Qwen2.5-shaped model: minutes, not seconds
pytestmark = pytest.mark.slow

QUESTIONS = [
    ("高血压的一线治疗药物是", ["利尿剂", "抗生素", "胰岛素", "阿司匹林"]),
    ("心肌梗死最常见的早期症状是", ["胸痛", "腹泻", "皮疹", "耳鸣"]),
    ("糖尿病的诊断指标之一是", ["空腹血糖", "血红蛋白", "血小板", "尿酸"]),
    ("肺炎链球菌感染首选", ["青霉素", "利福平", "甲硝唑", "氟康唑"]),
    ("维生素C缺乏可引起", ["坏血病", "佝偻病", "夜盲症", "脚气病"]),
    ("急性阑尾炎的典型体征是", ["麦氏点压痛", "墨菲征阳性", "颈强直", "肝掌"]),
    ("缺铁性贫血的红细胞形态为", ["小细胞低色素", "大细胞", "正常细胞", "球形"]),
    ("甲状腺功能亢进时常见", ["心率增快", "体重增加", "怕冷", "便秘"]),
    ("乙型肝炎的主要传播途径是", ["血液", "粪口", "飞沫", "蚊虫"]),
    ("破伤风的病原体是", ["梭菌", "链球菌", "病毒", "真菌", "寄生虫"]),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from qwen25 import tiny_model_dir

    root = tmp_path_factory.mktemp("crosscheck")
    model = tiny_model_dir(root)
    bench = root / "results/benchmark/physician.jsonl"
    write_jsonl(
        bench,
        [
            {
                "id": f"physician/val/{i}",
                "subject": "physician",
                "split": "val",
                "question": q,
                "choices": c,
                "answer": "ABCDE"[i % len(c)],
                "explanation": "",
            }
            for i, (q, c) in enumerate(QUESTIONS)
        ],
    )
    # an adapter that changes the model (LoRA B initialised at random, not zero)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    lm = AutoModelForCausalLM.from_pretrained(model)
    peft = get_peft_model(
        lm, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    adapter = root / "adapter"
    peft.save_pretrained(adapter)
    return root, model, bench, adapter


@pytest.mark.slow
@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "adapter"])
def test_lm_eval_chooses_as_the_evaluator(setup, with_adapter):
    root, model, bench, adapter = setup
    name = "arm-seed1" if with_adapter else "base"
    ev = root / f"eval/{name}.json"
    evaluate([bench], ["val"], str(model), ev, adapter=str(adapter) if with_adapter else None, model_name=name)
    out = crosscheck(
        benchmark_paths=[bench],
        eval_splits=["val"],
        base_model=str(model),
        adapter=str(adapter) if with_adapter else None,
        eval_path=ev,
        out_path=root / f"crosscheck/{name}.json",
        task_dir=root / f"crosscheck/{name}.task",
        batch_size=4,
    )
    assert out["questions"] == len(QUESTIONS)
    assert out["agree"], out["disagreements"]
    assert out["accuracy_lm_eval"] == out["accuracy_evalsel"]
    # the one expected difference: lm-eval scores "\nA" where evalsel scores "A" after the newline,
    # a constant per question (log P(newline) < 0) that cancels over the options
    assert out["shared_offset"]["max"] < 0
    assert read_json(root / f"crosscheck/{name}.json") == out
    print(f"\n{name}: max option-probability difference {out['max_prob_diff']:.2e}, offset {out['shared_offset']}")
    if with_adapter:  # the adapter changes the answers' probabilities: lm-eval applied it too
        base = evaluate([bench], ["val"], str(model), root / "eval/base_again.json", model_name="base")
        mine = read_json(ev)
        moved = max(
            abs(a["probs"][k] - b["probs"][k]) for a, b in zip(mine["questions"], base["questions"]) for k in a["probs"]
        )
        assert moved > 1e-3


def test_the_exported_prompts_are_the_evaluators(setup):
    from transformers import AutoTokenizer

    from evalsel.evaluate.multiple_choice import build_prompt, load_questions

    root, model, bench, _ = setup
    task = export_task([bench], ["val"], str(model), root / "export")
    rows = load_jsonl(task / "evalsel_crosscheck.jsonl")
    tok = AutoTokenizer.from_pretrained(model)
    questions, _ = load_questions([bench], ["val"], 0)
    assert [r["prompt"] for r in rows] == [build_prompt(tok, q) for q in questions]
    assert rows[-1]["letters"] == list("ABCDE") and rows[3]["gold"] == 3
    assert "output_type: multiple_choice" in (task / "evalsel_crosscheck.yaml").read_text()


def test_a_changed_choice_is_reported(setup):
    """The comparison can fail: one prediction altered in the eval file is listed."""
    root, model, bench, _ = setup
    ev = evaluate([bench], ["val"], str(model), root / "eval/for_compare.json", model_name="base")
    samples = [
        {
            "doc": {"id": q["id"], "letters": list(q["probs"])},
            "filtered_resps": [[math.log(p), False] for p in q["probs"].values()],
            "acc": float(q["correct"]),
        }
        for q in ev["questions"]
    ]
    assert compare(ev, samples)["agree"]
    bad = json.loads(json.dumps(ev))
    q0 = bad["questions"][0]
    q0["pred"] = next(letter for letter in q0["probs"] if letter != q0["pred"])
    out = compare(bad, samples)
    assert not out["agree"] and out["disagreements"][0]["id"] == q0["id"]
