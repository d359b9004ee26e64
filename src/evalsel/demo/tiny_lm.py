"""A tiny Qwen2-architecture causal LM for the offline demo and the tests: a byte-level BPE
tokenizer trained on the demo texts, a ChatML chat template, random weights; built in seconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2's pre-tokenizer split (single digits, letters with one leading non-letter, ...).
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML as Qwen2-Instruct renders it, default system prompt included (no tool calls).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def json_strings(obj) -> Iterator[str]:
    """Every string inside a JSON value (objects and lists walked depth-first, keys skipped)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from json_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from json_strings(v)


def texts_from_jsonl(paths: Iterable[str | os.PathLike], max_chars: int = 5_000_000) -> list[str]:
    """Every string value of every record in ``paths`` (JSONL), until ``max_chars`` characters.

    Returns the texts in file order. Malformed JSON raises :class:`evalsel.core.io.InputError`.
    """
    from evalsel.core.io import read_jsonl

    texts: list[str] = []
    total = 0
    for path in paths:
        for _, obj in read_jsonl(path):
            for s in json_strings(obj):
                if total >= max_chars:
                    log.info("tokenizer corpus capped at %d characters", max_chars)
                    return texts
                texts.append(s)
                total += len(s)
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = 2000):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` with ChatML special tokens.

    Every byte is in the base alphabet, so each ASCII letter (the option letters A-E) is one token.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
        padding_side="right",
    )


def build_tiny_lm(
    out_dir: str | os.PathLike,
    texts: list[str],
    seed: int = 0,
    vocab_size: int = 2000,
    hidden_size: int = 64,
    num_layers: int = 2,
) -> Path:
    """Build the tiny model into ``out_dir`` (written in a temporary directory, then renamed).

    ``hidden_size`` and ``num_layers`` size it (config ``demo.tiny_lm``; the default is 220k parameters).

    Returns ``out_dir``. The directory loads offline with ``AutoModelForCausalLM`` and
    ``AutoTokenizer``. Refuses an empty corpus.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from evalsel.core.io import atomic_dir

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("no text to train the tiny tokenizer on")
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    for letter in "ABCDE":
        if len(tokenizer.encode(letter, add_special_tokens=False)) != 1:
            raise AssertionError(f"option letter {letter!r} is not a single token")
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(2, hidden_size // 16),
        num_key_value_heads=max(1, hidden_size // 32),
        intermediate_size=2 * hidden_size,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=ids[0],
        eos_token_id=ids[2],
        pad_token_id=ids[0],
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[0], eos_token_id=[ids[2], ids[0]], pad_token_id=ids[0], do_sample=False
    )
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny LM: %d parameters, vocabulary %d, written to %s", n_params, len(tokenizer), out_dir)
    return out_dir
