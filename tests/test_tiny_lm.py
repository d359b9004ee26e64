"""The tiny demo/test causal LM: loads offline with the Auto classes, Qwen2 shape, ChatML, letters as tokens."""

from __future__ import annotations

import json

import pytest

from evalsel.core.io import InputError
from evalsel.demo.tiny_lm import build_tiny_lm, texts_from_jsonl


def test_loads_offline_with_auto_classes(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    cfg = model.config
    assert cfg.model_type == "qwen2"
    assert (
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
    ) == (64, 2, 4, 2, 128)
    assert cfg.vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert cfg.eos_token_id == tok.eos_token_id
    for letter in "ABCDE":
        ids = tok.encode(letter, add_special_tokens=False)
        assert len(ids) == 1 and tok.decode(ids) == letter
    # the letter after the generation prompt is its own token, as in Qwen's tokenizer
    ids = tok.encode("<|im_start|>assistant\nC<|im_end|>", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids)[-2] == "C"
    assert tok.decode(tok.encode("患者男性，45岁，反复上腹痛3年。")) == "患者男性，45岁，反复上腹痛3年。"


def test_chat_template_is_chatml(tiny_lm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
        tokenize=False,
    )
    assert (
        with_system
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    )


def test_seed_fixes_weights(tmp_path, texts):
    from safetensors.torch import load_file

    a = build_tiny_lm(tmp_path / "a", texts[:50], seed=3)
    b = build_tiny_lm(tmp_path / "b", texts[:50], seed=3)
    c = build_tiny_lm(tmp_path / "c", texts[:50], seed=4)
    wa, wb, wc = (load_file(d / "model.safetensors") for d in (a, b, c))
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any((wa[k] != wc[k]).any() for k in wa)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary directory left behind"


def test_refuses_empty_corpus(tmp_path):
    with pytest.raises(ValueError, match="no text"):
        build_tiny_lm(tmp_path / "m", ["", ""])
    assert not (tmp_path / "m").exists()


def test_texts_from_jsonl(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text(
        json.dumps({"question": "问题一", "choices": ["甲", "乙"], "n": 3}, ensure_ascii=False)
        + "\n\n"
        + json.dumps({"conversations": [{"from": "human", "value": "你好"}]}, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    assert texts_from_jsonl([p]) == ["问题一", "甲", "乙", "human", "你好"]
    assert texts_from_jsonl([p], max_chars=4) == ["问题一", "甲"]
    p.write_text('{"a": 1}\n{broken\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"b\.jsonl:2"):
        texts_from_jsonl([p])
