"""Evaluation: letter probabilities equal a direct computation from the logits, prompts follow C-Eval,
free-text answers are extracted (or counted as unparsed), 2 to 5 options, the eval JSON contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsel.core.chat import format_question
from evalsel.core.io import InputError
from evalsel.evaluate.multiple_choice import (
    build_prompt,
    evaluate,
    extract_answer,
    load_model,
    load_questions,
    score_letters,
)

CHOICES = ["十二指肠溃疡", "高血压", "糖尿病", "急性心肌梗死", "慢性胃炎"]


def question(subject: str, split: str, i: int, n_options: int, answer: str, stem: str | None = None) -> dict:
    return {
        "id": f"{subject}/{split}/{i}",
        "subject": subject,
        "split": split,
        "question": stem or f"患者男性，{40 + i}岁，反复上腹痛{i + 1}年，进食后缓解，最可能的诊断是",
        "choices": CHOICES[:n_options],
        "answer": answer,
        "explanation": "",
    }


def write_benchmark(tmp: Path) -> list[Path]:
    """Two subjects; val questions with 2, 3, 4 and 5 options and different lengths; three dev questions each."""
    paths = []
    for subject in ("physician", "basic_medicine"):
        recs = [question(subject, "dev", i, 4, "ABCD"[i]) for i in range(3)]
        recs += [
            question(subject, "val", i, n, "ABCDE"[i % n], stem="问" * (3 + 7 * i))
            for i, n in enumerate([2, 3, 5, 4, 5])
        ]
        p = tmp / f"{subject}.jsonl"
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> list[Path]:
    return write_benchmark(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def base(tiny_lm_dir):
    return load_model(str(tiny_lm_dir))


def test_prompt_follows_ceval_under_chat_template(base, bench):
    _, tok = base
    questions, shots = load_questions(bench, ["val"], few_shot=2)
    q = questions[2]
    p = build_prompt(tok, q)
    assert "以下是中国关于医师资格考试的单项选择题，请选出其中的正确答案。" in p
    assert (
        f"{q['question']}\nA. 十二指肠溃疡\nB. 高血压\nC. 糖尿病\nD. 急性心肌梗死\nE. 慢性胃炎\n答案：<|im_end|>" in p
    )
    assert p.endswith("<|im_start|>assistant\n")
    few = build_prompt(tok, q, shots["physician"])
    # two dev questions as earlier turns, each answered by its letter alone, then the question
    assert few.count("<|im_start|>user\n") == 3
    assert "答案：<|im_end|>\n<|im_start|>assistant\nA<|im_end|>" in few
    assert "答案：<|im_end|>\n<|im_start|>assistant\nB<|im_end|>" in few
    assert few.index("以下是中国关于") < few.index(shots["physician"][0]["question"])
    assert few.endswith(f"<|im_start|>user\n{format_question(q)}<|im_end|>\n<|im_start|>assistant\n")


def test_english_prompts_follow_mmlu(base, bench):
    """benchmark.language en: MMLU's header and answer cue, in letter and cloze prompts alike."""
    from evalsel.evaluate.multiple_choice import cloze_prompt

    _, tok = base
    questions, shots = load_questions(bench, ["val"], few_shot=1)
    q = questions[2]
    header = "The following are multiple choice questions (with answers) about physician.\n\n"
    p = build_prompt(tok, q, language="en")
    assert header in p and "\nE. 慢性胃炎\nAnswer:<|im_end|>" in p and "答案" not in p
    few = build_prompt(tok, q, shots["physician"], language="en")
    assert "Answer:<|im_end|>\n<|im_start|>assistant\nA<|im_end|>" in few
    cloze = cloze_prompt(tok, {**q, "question": "The drug of choice for Lemadu fever is"}, "en")
    assert f"{header}The drug of choice for Lemadu fever is<|im_end|>" in cloze
    with pytest.raises(ValueError, match="'fr' is not one of"):
        build_prompt(tok, q, language="fr")


def test_letter_probabilities_equal_direct_logit_computation(base, bench):
    import torch

    model, tok = base
    questions, _ = load_questions(bench, ["val"])
    prompts = [build_prompt(tok, q) for q in questions]
    n_options = [len(q["choices"]) for q in questions]
    # batches mix prompts of different lengths, so left padding is exercised
    scores = score_letters(model, tok, prompts, n_options, batch_size=4)
    assert sorted({len(s["probs"]) for s in scores}) == [2, 3, 4, 5]
    letters = [tok.convert_tokens_to_ids(c) for c in "ABCDE"]
    for prompt, n, sc in zip(prompts, n_options, scores):
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        direct = torch.softmax(logits[letters[:n]], dim=-1)
        assert list(sc["probs"]) == list("ABCDE"[:n])
        for k in range(n):
            assert sc["probs"]["ABCDE"[k]] == pytest.approx(direct[k].item(), abs=1e-5)
        mass = torch.softmax(logits, dim=-1)[letters[:n]].sum().item()
        assert sc["letter_mass"] == pytest.approx(mass, rel=1e-4)


@pytest.mark.parametrize(
    "text, n, expected",
    [
        ("B", 4, "B"),
        ("C. 糖尿病", 4, "C"),
        ("(D)", 4, "D"),
        ("答案是C", 4, "C"),
        ("正确答案：Ｂ。", 4, "B"),  # full-width letter and colon
        ("答案为 A，因为……", 2, "A"),
        ("我选B，原因如下", 3, "B"),
        ("选项E", 5, "E"),
        ("The answer is (B).", 4, "B"),
        ("根据题意，D是正确的", 4, "D"),
        ("最可能的诊断是高血压。", 4, "B"),  # quotes exactly one option
        ("这题考查DNA复制，应为A", 4, "A"),  # letters inside a word do not count
        ("E", 4, None),  # not an option of this question
        ("答案是E", 3, None),
        ("以上说法都不对", 4, None),
        ("", 4, None),
        ("DNA和RNA", 5, None),
    ],
)
def test_extract_answer(text, n, expected):
    assert extract_answer(text, CHOICES[:n]) == expected


def test_eval_json_contract_logprob(tmp_path, tiny_lm_dir, bench):
    out = tmp_path / "eval" / "base.json"
    r = evaluate(bench, ["val"], str(tiny_lm_dir), out, model_name="base", batch_size=3)
    assert json.loads(out.read_text(encoding="utf-8")) == r
    assert (r["model"], r["adapter"], r["mode"], r["splits"], r["few_shot"], r["unparsed"]) == (
        "base",
        None,
        "logprob",
        ["val"],
        0,
        0,
    )
    assert set(r["subjects"]) == {"physician", "basic_medicine"}
    assert r["overall"]["n"] == 10 and r["overall"]["correct"] == sum(s["correct"] for s in r["subjects"].values())
    assert r["overall"]["accuracy"] == pytest.approx(r["overall"]["correct"] / 10)
    for q in r["questions"]:
        assert set(q) >= {"id", "subject", "answer", "pred", "probs", "correct"}
        assert sum(q["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert q["pred"] == max(q["probs"], key=q["probs"].get)
        assert q["correct"] == (q["pred"] == q["answer"])
    assert [len(q["probs"]) for q in r["questions"][:5]] == [2, 3, 5, 4, 5]


def test_eval_generate_mode_counts_unparsed(tmp_path, tiny_lm_dir, bench):
    r = evaluate(
        bench,
        ["val"],
        str(tiny_lm_dir),
        tmp_path / "g.json",
        mode="generate",
        few_shot=1,
        batch_size=4,
        max_new_tokens=6,
    )
    assert r["mode"] == "generate" and r["few_shot"] == 1
    choices = {q["id"]: q["choices"] for q in load_questions(bench, ["val"])[0]}
    preds = [q["pred"] for q in r["questions"]]
    assert r["unparsed"] == preds.count(None)
    for q in r["questions"]:
        assert q["probs"] is None and isinstance(q["response"], str)
        assert q["pred"] == extract_answer(q["response"], choices[q["id"]])
        assert q["correct"] == (q["pred"] is not None and q["pred"] == q["answer"])
    assert r["overall"]["correct"] == sum(q["correct"] for q in r["questions"])


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.update(answer="E"), "answer"),
        (lambda r: r.update(choices=["only one"]), "choices"),
        (lambda r: r.update(choices=CHOICES + ["F"]), "choices"),
        (lambda r: r.pop("question"), "question"),
    ],
)
def test_bad_benchmark_record_refused(tmp_path, mutate, field):
    rec = question("physician", "val", 0, 4, "A")
    mutate(rec)
    p = tmp_path / "physician.jsonl"
    p.write_text(
        json.dumps(question("physician", "val", 1, 4, "B"), ensure_ascii=False)
        + "\n"
        + json.dumps(rec, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError) as err:
        evaluate([p], ["val"], str(tmp_path / "no-model"), tmp_path / "e.json")
    assert err.value.line == 2 and err.value.field == field and "physician.jsonl:2" in str(err.value)


def test_few_shot_needs_enough_dev_questions(bench):
    with pytest.raises(InputError, match=r"few_shot=4 needs 4 'dev' questions of physician, found 3"):
        load_questions(bench, ["val"], few_shot=4)
    with pytest.raises(InputError, match="no question of splits"):
        load_questions(bench, ["test"])


def test_an_unanswered_question_is_never_scored(tmp_path):
    """A recall-only split may lack answers; naming it as an eval split is refused at its line."""
    from evalsel.core.io import InputError
    from evalsel.evaluate.multiple_choice import load_questions

    path = tmp_path / "physician.jsonl"
    rows = [
        {
            "id": "physician/val/0",
            "subject": "physician",
            "split": "val",
            "question": "问一",
            "choices": ["甲", "乙"],
            "answer": "A",
            "explanation": "",
        },
        {
            "id": "physician/test/0",
            "subject": "physician",
            "split": "test",
            "question": "问二",
            "choices": ["甲", "乙"],
            "answer": None,
            "explanation": "",
        },
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    questions, _ = load_questions([path], ["val"])
    assert [q["id"] for q in questions] == ["physician/val/0"]
    with pytest.raises(InputError) as exc:
        load_questions([path], ["val", "test"])
    assert exc.value.line == 2 and "has no answer" in exc.value.problem


def test_cloze_scores_equal_a_direct_computation_from_logits(tiny_lm_dir):
    """Each option's log-likelihood after the prompt, batched with left padding, equals one
    unpadded forward pass per (prompt, option); per-token and per-character normalisations follow."""
    import torch

    from evalsel.evaluate.multiple_choice import cloze_prompt, load_model, score_cloze

    model, tok = load_model(str(tiny_lm_dir), device="cpu")
    qs = [
        {
            "subject": "physician",
            "question": "有机磷农药中毒的特效解毒药是____",
            "choices": ["阿托品", "纳洛酮", "维生素K"],
        },
        {"subject": "basic_medicine", "question": "胰岛素由哪种细胞分泌", "choices": ["B细胞", "A细胞"]},
    ]
    prompts = [cloze_prompt(tok, q) for q in qs]
    assert "阿托品" not in prompts[0] and prompts[0].endswith("<|im_start|>assistant\n")
    got = score_cloze(model, tok, prompts, [q["choices"] for q in qs], batch_size=3)
    for p, q, sc in zip(prompts, qs, got):
        ctx = tok(p, add_special_tokens=False)["input_ids"]
        for j, option in enumerate(q["choices"]):
            cont = tok(option, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + cont])
            with torch.inference_mode():
                logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            direct = sum(float(logp[len(ctx) - 1 + t, cont[t]]) for t in range(len(cont)))
            assert sc["total"][j] == pytest.approx(direct, abs=1e-4)
            assert sc["per_token"][j] == pytest.approx(direct / len(cont), abs=1e-4)
            assert sc["per_char"][j] == pytest.approx(direct / len(option), abs=1e-4)


def test_cloze_mode_writes_every_normalisation(tmp_path, tiny_lm_dir):
    from evalsel.evaluate.multiple_choice import evaluate

    path = tmp_path / "physician.jsonl"
    rows = [
        {
            "id": f"physician/val/{i}",
            "subject": "physician",
            "split": "val",
            "question": f"问题{i}",
            "choices": ["甲方案", "乙", "丙丙丙"],
            "answer": "ABC"[i % 3],
            "explanation": "",
        }
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res = evaluate([path], ["val"], str(tiny_lm_dir), tmp_path / "base.json", mode="cloze", gpus=0)
    assert set(res["cloze_accuracy"]) == {"total", "per_token", "per_char"}
    q = res["questions"][0]
    assert len(q["cloze"]["per_char"]) == 3 and q["pred"] in "ABC"
    assert q["correct"] == q["cloze_correct"]["per_char"]
