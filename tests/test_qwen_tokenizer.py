"""The real Qwen2.5-Instruct tokenizer (offline) through the project's code: pinned ids, letter
scoring, assistant-only label masks, generation stops and the server's rendering."""

from __future__ import annotations

import pytest
from qwen25 import DEFAULT_SYSTEM

SYSTEM_IDS = [2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264, 10950, 17847, 13]


@pytest.fixture(scope="module")
def tok(qwen_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


def test_known_ids(tok):
    assert type(tok).__name__ == "Qwen2Tokenizer" and len(tok) == 151665
    assert tok("你好", add_special_tokens=False)["input_ids"] == [108386]
    assert tok("Hello world! 123", add_special_tokens=False)["input_ids"] == [9707, 1879, 0, 220, 16, 17, 18]
    assert [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [
        151643,
        151644,
        151645,
    ]
    assert tok.pad_token_id == 151643 and tok.eos_token_id == 151645 and tok.bos_token_id is None


def test_rendered_prompt_ids_and_letters(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    assert (
        text
        == f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == [
        151644,
        8948,
        198,
        *SYSTEM_IDS,
        151645,
        198,
        151644,
        872,
        198,
        108386,
        151645,
        198,
        151644,
        77091,
        198,
    ]
    # the option letters as the first answer token
    for k, letter in enumerate("ABCDE"):
        assert tok(text + letter, add_special_tokens=False)["input_ids"] == ids + [32 + k]
    from evalsel.evaluate.multiple_choice import letter_token_ids

    assert letter_token_ids(tok) == [32, 33, 34, 35, 36]


def _labelled(tok, messages):
    from evalsel.train.sft import tokenize_conversation

    ex = tokenize_conversation(tok, messages, max_length=4096)
    trained = [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
    return ex, trained


def test_label_masks_train_only_the_assistant_turns(tok):
    messages = [
        {"role": "user", "content": "头痛怎么办？"},
        {"role": "assistant", "content": "先休息，多喝水。"},
        {"role": "user", "content": "还是痛呢？"},
        {"role": "assistant", "content": "请到神经内科就诊。"},
    ]
    ex, trained = _labelled(tok, messages)
    expected = []
    for m in messages[1::2]:
        expected += tok(m["content"], add_special_tokens=False)["input_ids"] + [151645, 198]
    assert trained == expected  # both replies with their <|im_end|> and line break, nothing else
    # the default system prompt the template adds is in the input, never in the labels
    assert SYSTEM_IDS[0] in ex["input_ids"] and not set(SYSTEM_IDS) & set(trained)


def test_alpaca_history_is_trained_like_sharegpt(tok):
    from evalsel.core.chat import sft_messages

    sharegpt = {
        "conversations": [
            {"from": "human", "value": "头痛怎么办？"},
            {"from": "gpt", "value": "先休息，多喝水。"},
            {"from": "human", "value": "还是痛呢？"},
            {"from": "gpt", "value": "请到神经内科就诊。"},
        ]
    }
    alpaca = {
        "instruction": "还是痛呢？",
        "input": "",
        "output": "请到神经内科就诊。",
        "history": [["头痛怎么办？", "先休息，多喝水。"]],
    }
    assert sft_messages(alpaca) == sft_messages(sharegpt)
    assert _labelled(tok, sft_messages(alpaca)) == _labelled(tok, sft_messages(sharegpt))


def test_sft_build_alpaca_output_round_trips_through_training(tok):
    """sft.to_alpaca writes history; chat.sft_messages reads it back: the same conversation."""
    from evalsel.core.chat import sft_messages
    from evalsel.sets.build import to_alpaca

    rec = {
        "id": "x",
        "system": "你是医生。",
        "conversations": [
            {"from": "human", "value": "一"},
            {"from": "gpt", "value": "二"},
            {"from": "human", "value": "三"},
            {"from": "gpt", "value": "四"},
            {"from": "human", "value": "五"},
            {"from": "gpt", "value": "六"},
        ],
    }
    msgs = sft_messages(to_alpaca(rec, "o"))
    assert [m["content"] for m in msgs] == ["你是医生。", "一", "二", "三", "四", "五", "六"]


def test_letter_scoring_batched_equals_one_at_a_time(qwen_tiny_dir):
    from evalsel.evaluate.multiple_choice import build_prompt, load_model, score_letters

    model, tok = load_model(str(qwen_tiny_dir), device="cpu")
    questions = [
        {
            "subject": "physician",
            "question": "下列哪项是贫血的常见症状" + "？" * k,
            "choices": ["乏力", "发热", "咳嗽", "皮疹"][: 2 + k % 3],
            "answer": "A",
        }
        for k in range(7)
    ]
    prompts = [build_prompt(tok, q) for q in questions]
    n = [len(q["choices"]) for q in questions]
    batched = score_letters(model, tok, prompts, n, batch_size=4)
    alone = [score_letters(model, tok, [p], [k], batch_size=1)[0] for p, k in zip(prompts, n)]
    for a, b in zip(batched, alone):
        assert a["probs"].keys() == b["probs"].keys()
        for letter in a["probs"]:
            assert a["probs"][letter] == pytest.approx(b["probs"][letter], abs=1e-5)


def test_greedy_generation_ignores_the_models_repetition_penalty(qwen_tiny_dir):
    import torch

    from evalsel.evaluate.multiple_choice import generate_answers, load_model

    model, tok = load_model(str(qwen_tiny_dir), device="cpu")
    assert model.generation_config.repetition_penalty == 1.05  # as Qwen2.5-Instruct ships it
    # a random model repeats one token by a wide margin: a stronger inherited penalty shows the effect
    model.generation_config.repetition_penalty = 5.0
    prompt = tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        plain = model.generate(
            ids, max_new_tokens=12, do_sample=False, repetition_penalty=1.0, temperature=None, top_p=None, top_k=None
        )
        penalised = model.generate(ids, max_new_tokens=12, do_sample=False, temperature=None, top_p=None, top_k=None)
    assert plain[0].tolist() != penalised[0].tolist(), "the inherited penalty should change this greedy answer"
    (text,) = generate_answers(model, tok, [prompt], max_new_tokens=12)
    assert text == tok.decode(plain[0, ids.shape[1] :], skip_special_tokens=True)


def test_serve_renders_with_the_template_and_stops_at_both_end_tokens(qwen_tiny_dir, tok):
    from evalsel.serve.app import ChatModel

    chat = ChatModel(str(qwen_tiny_dir), device="cpu")
    messages = [{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "头痛怎么办？"}]
    assert (
        chat.encode(messages)
        == tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), add_special_tokens=False)[
            "input_ids"
        ]
    )
    assert {151645, 151643} <= chat.eos_ids


def test_serve_greedy_ignores_the_models_repetition_penalty(qwen_tiny_dir, tok):
    """serve's temperature-0 answer equals plain greedy decoding, whatever generation_config says."""
    import torch

    from evalsel.serve.app import ChatModel

    chat = ChatModel(str(qwen_tiny_dir), device="cpu")
    chat.model.generation_config.repetition_penalty = 5.0  # a strong inherited penalty (Qwen ships 1.05)
    ids = chat.encode([{"role": "user", "content": "你好"}])
    with torch.inference_mode():
        plain = chat.model.generate(
            torch.tensor([ids]),
            max_new_tokens=12,
            do_sample=False,
            repetition_penalty=1.0,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        penalised = chat.model.generate(
            torch.tensor([ids]), max_new_tokens=12, do_sample=False, temperature=None, top_p=None, top_k=None
        )
    assert plain[0].tolist() != penalised[0].tolist()
    expected = [t for t in plain[0, len(ids) :].tolist() if t not in chat.eos_ids]
    text = "".join(delta for delta, _ in chat.stream(ids, 12, 0.0, 1.0, [], None))
    assert text == tok.decode(expected, skip_special_tokens=True)
