"""A tiny BERT sentence embedder built offline in seconds for the demo and the tests: random weights,
a WordPiece vocabulary from the given texts, mean pooling, normalisation (real, deterministic, fast)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from evalsel.core.io import atomic_dir

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: list[str], vocab_size: int = 4000):
    """Return a BERT-style WordPiece ``tokenizers.Tokenizer`` whose vocabulary comes from ``texts``.

    The vocabulary is every character seen (alone and as a ``##`` continuation), ASCII letters
    and digits, then the most frequent whole words up to ``vocab_size``, ties broken by spelling:
    the same texts always give the same tokenizer (the Rust trainer breaks ties in hash order).
    Chinese characters are single tokens (BERT's normaliser). Refuses an empty corpus.
    """
    import string
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("build_tiny_embedder needs at least one non-empty text to build its tokenizer")
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted(set("".join(words)) | set(string.ascii_lowercase + string.digits))
    vocab = SPECIAL_TOKENS + chars + ["##" + c for c in chars]
    frequent = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))
    vocab += frequent[: max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def corpus_from_files(benchmark_files: list, pool_files: list, max_texts: int = 200_000) -> list[str]:
    """Texts to train the tiny tokenizer on: benchmark questions and options, then pool ``text``
    fields, at most ``max_texts`` in all (a vocabulary needs no more). Malformed lines raise InputError."""
    from evalsel.core.io import read_jsonl

    texts: list[str] = []
    for path in benchmark_files:
        for _, rec in read_jsonl(path):
            if isinstance(rec, dict):
                texts.extend(t for t in [rec.get("question"), *(rec.get("choices") or [])] if isinstance(t, str))
    for path in pool_files:
        for _, rec in read_jsonl(path):
            if len(texts) >= max_texts:
                return texts
            if isinstance(rec, dict) and isinstance(rec.get("text"), str):
                texts.append(rec["text"])
    return texts[:max_texts]


def build_tiny_embedder(
    out_dir: str | os.PathLike,
    texts: list[str],
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_seq_length: int = 256,
    vocab_size: int = 4000,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
) -> Path:
    """Build a tiny BERT SentenceTransformer (mean pooling, normalised) in ``out_dir``.

    ``num_heads`` and ``intermediate_size`` default to hidden/16 and 2 x hidden (a real model's
    shape can be given, e.g. MiniLM-L12: hidden 384, 12 layers, 12 heads, intermediate 1536).
    Returns ``out_dir``. The directory loads offline with ``SentenceTransformer(str(out_dir))``.
    It is written in a sibling temporary directory and renamed into place, so a killed
    build leaves nothing behind; an existing ``out_dir`` is replaced.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    tok = train_wordpiece(texts, vocab_size)
    with tempfile.TemporaryDirectory(prefix="tiny_embedder_hf.") as hf_dir, atomic_dir(out_dir) as st_dir:
        hf_tok = BertTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            sep_token="[SEP]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            mask_token="[MASK]",
            model_max_length=max_seq_length,
        )
        hf_tok.save_pretrained(hf_dir)
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads or max(1, hidden_size // 16),
            intermediate_size=intermediate_size or hidden_size * 2,
            max_position_embeddings=max(512, max_seq_length),
            pad_token_id=tok.token_to_id("[PAD]"),
        )
        BertModel(config).save_pretrained(hf_dir)
        transformer = Transformer(hf_dir, max_seq_length=max_seq_length)
        model = SentenceTransformer(modules=[transformer, Pooling(hidden_size, "mean"), Normalize()], device="cpu")
        model.save(str(st_dir))
    log.info(
        "tiny embedder (vocab %d, hidden %d, %d layers) written to %s",
        tok.get_vocab_size(),
        hidden_size,
        num_layers,
        out_dir,
    )
    return out_dir
