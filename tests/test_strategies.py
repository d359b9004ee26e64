"""Each selection strategy against its paper's definition, on small inputs computed by hand or by a
direct transcription of the definition: DSIR (Xie et al. 2023) features, importance weights and
Gumbel top-k; RDS+ (Ivison et al. 2025) position-weighted pooling and round-robin selection; the
arms' overlap."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from test_recall import SUBJECTS, Project, rand_text

from evalsel.core.io import load_jsonl, read_json, write_jsonl
from evalsel.data.poolindex import PoolIndex
from evalsel.select.dsir import DsirSettings, dsir_job, gumbel_keys, log_ratio, log_weights
from evalsel.select.kernels import score_subject_max
from evalsel.select.ngrams import counts, hashed_grams, tokens
from evalsel.sets.overlap import arms_overlap, jaccard, prompt_text

M64 = (1 << 64) - 1
P = 0x100000001B3


def _mix(h: int) -> int:
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def reference_buckets(text: str, n: int, buckets: int) -> Counter:
    """The hashed n-gram counts of one text, transcribed one token at a time in plain Python."""
    toks = tokens(text)
    th = [sum(ord(c) * pow(P, k, 1 << 64) for k, c in enumerate(t[:32])) & M64 for t in toks]
    out: Counter = Counter()
    for order in range(1, n + 1):
        for i in range(len(th) - order + 1):
            h = th[i]
            for t in th[i + 1 : i + order]:
                h = (h * P + _mix(t)) & M64
            out[_mix(h) % buckets] += 1
    return out


# --------------------------------------------------------------------------- DSIR features


def test_tokens_cut_words_and_characters():
    assert tokens("高血压的ACE-inhibitor，Ｔ２") == ["高", "血", "压", "的", "ace", "inhibitor", "t2"]
    assert tokens("  ,.;  ") == []


@pytest.mark.parametrize("n", [1, 2, 3])
def test_vectorised_hashing_equals_the_definition(n):
    rng = np.random.default_rng(n)
    texts = ["", "hello world hello", "肺炎 的 治疗 ABC abc 123", "。，", "a"] + [
        rand_text(rng, 30) + " word " + rand_text(rng, 5) for _ in range(20)
    ]
    b, owner, per_text = hashed_grams(texts, n, 1000003)
    for i, t in enumerate(texts):
        assert Counter(b[owner == i].tolist()) == reference_buckets(t, n, 1000003), t
        assert per_text[i] == len(tokens(t))


def test_importance_weights_by_hand():
    """Two tokens a, b only; buckets large enough that the five n-grams do not collide."""
    s = DsirSettings(ngrams=1, buckets=1000003)
    target = ["a a b"]  # p_t(a) = 2/3, p_t(b) = 1/3
    raw = ["a b b b", "b"]  # p_r(a) = 1/5, p_r(b) = 4/5
    diff = log_ratio(counts(target, 1, s.buckets), counts(raw, 1, s.buckets))
    w, n_tok = log_weights(["a", "b", "a b", "c"], diff, s)
    la = math.log(2 / 3 + 1e-8) - math.log(1 / 5 + 1e-8)
    lb = math.log(1 / 3 + 1e-8) - math.log(4 / 5 + 1e-8)
    lc = math.log(1e-8) - math.log(1e-8)  # a token neither model saw weighs 0
    assert w.tolist() == pytest.approx([la, lb, la + lb, lc])
    assert n_tok.tolist() == [1, 1, 2, 1]
    # Laplace pseudo-counts: added to every target bucket before normalising, as the paper's code does
    t = np.array([2.0, 1.0, 0.0])
    d = log_ratio(t, np.ones(3), laplace=1.0)
    assert d.tolist() == pytest.approx(
        [
            math.log(3 / 6 + 1e-8) - math.log(1 / 3 + 1e-8),
            math.log(2 / 6 + 1e-8) - math.log(1 / 3 + 1e-8),
            math.log(1 / 6 + 1e-8) - math.log(1 / 3 + 1e-8),
        ]
    )


def test_gumbel_top_k_samples_in_proportion_to_the_weights():
    """Top-1 of log w + Gumbel noise picks i with probability w_i / sum(w) (the Gumbel-max trick)."""
    w = np.array([1.0, 2.0, 3.0, 4.0])
    picks = Counter(int(np.argmax(gumbel_keys(np.log(w), seed))) for seed in range(20000))
    freq = np.array([picks[i] for i in range(4)]) / 20000
    assert freq == pytest.approx(w / w.sum(), abs=0.015)
    # without noise the keys are the log weights themselves: plain top-k
    assert gumbel_keys(np.log(w), 0, gumbel=False).tolist() == pytest.approx(np.log(w).tolist())


def _dsir_project(tmp_path, n_like=30):
    """A pool of random text where ``n_like`` samples reuse the benchmark questions' words, plus one
    planted copy of a question."""
    proj = Project(n_pool=300, seed=3)
    rng = np.random.default_rng(5)
    vocab = "".join(q["question"][:12] for s in SUBJECTS for q in proj.bench[s] if q["split"] == "val")
    like = []
    for _ in range(n_like):
        prompt = "".join(vocab[int(i)] for i in rng.integers(0, len(vocab), 30))
        item = proj.sample(prompt=prompt)
        like.append(item["record"]["id"])
        proj.pool.append(item)
    copy = proj.bench["physician"][0]
    planted = proj.sample(prompt=copy["question"] + "？")
    proj.pool.append(planted)
    paths = proj.write(tmp_path)
    return proj, paths, set(like), planted["record"]["id"]


def test_dsir_job_prefers_target_like_samples_and_guards(tmp_path):
    proj, paths, like, planted = _dsir_project(tmp_path)
    out = {k: tmp_path / f"results/select/dsir/{k}" for k in ("selected.jsonl", "statistics.json", "hist.png")}
    stats = dsir_job(
        benchmark_files=paths["benchmark"],
        pool_shards=paths["pool_shards"],
        selected_path=out["selected.jsonl"],
        statistics_path=out["statistics.json"],
        histogram_path=out["hist.png"],
        budget=30,
        recall_splits=["val"],
        settings={"buckets": 4096},
        progress=False,
    )
    rows = load_jsonl(out["selected.jsonl"])
    chosen = {r["id"] for r in rows}
    assert len(rows) == stats["overall"]["kept"] == 30
    assert planted not in chosen  # the copy of a question has the highest weight of all, and is guarded
    assert any(d["sample_id"] == planted for d in stats["guard_drops"])
    assert len(chosen & like) >= 25  # the pool's 300 random texts share almost no n-gram with the target
    assert [r["rank"] for r in rows] == list(range(1, 31))
    # ranked by Gumbel key, and the weights are the definition's
    keys = [r["key"] for r in rows]
    assert keys == sorted(keys, reverse=True)
    assert out["hist.png"].stat().st_size > 1000
    again = tmp_path / "again.jsonl"
    dsir_job(
        benchmark_files=paths["benchmark"],
        pool_shards=paths["pool_shards"],
        selected_path=again,
        statistics_path=tmp_path / "again.json",
        histogram_path=tmp_path / "again.png",
        budget=30,
        recall_splits=["val"],
        settings={"buckets": 4096},
        progress=False,
    )
    assert load_jsonl(again) == rows  # seeded


def test_dsir_weights_in_the_job_equal_the_definition(tmp_path):
    proj, paths, _, _ = _dsir_project(tmp_path, n_like=5)
    out = tmp_path / "sel.jsonl"
    dsir_job(
        benchmark_files=paths["benchmark"],
        pool_shards=paths["pool_shards"],
        selected_path=out,
        statistics_path=tmp_path / "s.json",
        histogram_path=tmp_path / "h.png",
        budget=10,
        recall_splits=["val"],
        settings={"buckets": 1000003, "gumbel": False},
        progress=False,
    )
    texts = {it["record"]["id"]: it["record"]["text"] for it in proj.pool}
    target = [q["question"] for s in SUBJECTS for q in proj.bench[s] if q["split"] == "val"]
    t, r = Counter(), Counter()
    for x in target:
        t.update(reference_buckets(x, 2, 1000003))
    for x in texts.values():
        r.update(reference_buckets(x, 2, 1000003))
    tn, rn = sum(t.values()), sum(r.values())

    def weight(text):
        return sum(
            c * (math.log(t[b] / tn + 1e-8) - math.log(r[b] / rn + 1e-8))
            for b, c in reference_buckets(text, 2, 1000003).items()
        )

    rows = load_jsonl(out)
    for row in rows:
        assert row["similarity"] == pytest.approx(weight(texts[row["id"]]), abs=1e-4)
    # gumbel false: the plain top-k of the weights among the samples the guard keeps
    assert [r["similarity"] for r in rows] == sorted((r["similarity"] for r in rows), reverse=True)


# --------------------------------------------------------------------------- RDS+


def test_position_weighted_mean_by_hand():
    torch = pytest.importorskip("torch")
    from evalsel.embed.rds import position_weighted_mean

    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]], [[2.0, 2.0], [4.0, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # right padding: the second text has 2 tokens
    got = position_weighted_mean(h, mask)
    # weights 1/6, 2/6, 3/6 and 1/3, 2/3 (padding 0)
    want = torch.tensor([[1 / 6 + 9 / 6, 2 / 6 + 9 / 6], [2 / 3 + 8 / 3, 2 / 3]])
    assert torch.allclose(got, want)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    pytest.importorskip("transformers")
    from qwen25 import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny_qwen"))


def test_rds_vectors_are_the_pooled_last_hidden_states(tiny_qwen):
    """RdsEncoder equals the definition computed one text at a time from the causal LM's own
    last hidden state (hidden_states[-1]), whatever the batch and its padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsel.embed.rds import RdsEncoder, RdsSettings

    texts = ["高血压的一线治疗药物是什么？", "A", "肺炎链球菌感染的典型表现包括发热、咳嗽和胸痛，应如何处理？" * 3]
    enc = RdsEncoder(RdsSettings(model=str(tiny_qwen), device="cpu", batch_size=2))
    got = enc.encode(texts).vectors
    lm = AutoModelForCausalLM.from_pretrained(tiny_qwen, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    for i, t in enumerate(texts):
        ids = tok(t, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        w = torch.arange(1, h.shape[0] + 1, dtype=torch.float32)
        v = (h * (w / w.sum())[:, None]).sum(0).numpy()
        assert np.allclose(got[i], v / np.linalg.norm(v), atol=1e-5), t
    alone = enc.encode([texts[1]]).vectors[0]
    assert np.allclose(alone, got[1], atol=1e-5)  # padding in a batch changes nothing


def test_rds_pool_shard_embeds_the_rendered_conversation(tiny_qwen, tmp_path):
    from transformers import AutoTokenizer

    from evalsel.core.vectors import load_vectors
    from evalsel.embed.rds import RdsEncoder, RdsSettings, embed_pool_shard_rds, pool_messages

    proj = Project(n_pool=5, seed=1)
    paths = proj.write(tmp_path)
    shard = paths["pool_shards"][0]
    s = RdsSettings(model=str(tiny_qwen), device="cpu", dtype="float32")
    stats = embed_pool_shard_rds(shard, tmp_path / "v.npy", tmp_path / "v.json", s)
    ids, mat = load_vectors(tmp_path / "v.npy")
    recs = load_jsonl(shard)
    assert ids == [r["id"] for r in recs] and stats["pooling"] == "position_weighted_mean"
    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    text = tok.apply_chat_template(pool_messages(recs[0]), tokenize=False)
    assert "<|im_start|>assistant" in text and recs[0]["conversations"][1]["value"] in text
    assert np.allclose(mat[0], RdsEncoder(s).encode([text]).vectors[0], atol=1e-5)


def _brute_round_robin(Q, qsub, X, n_subjects, budget):
    """The definition: per subject, samples ranked by their best question of that subject; the
    subjects take turns, each its best sample not taken yet."""
    S = Q @ X.T
    ranked = []
    for s in range(n_subjects):
        best = S[qsub == s].max(axis=0)
        ranked.append(sorted(range(len(X)), key=lambda j: (-best[j], j)))
    chosen, ptr = [], [0] * n_subjects
    while len(chosen) < budget:
        for s in range(n_subjects):
            if len(chosen) >= budget:
                break
            while ranked[s][ptr[s]] in chosen:
                ptr[s] += 1
            chosen.append(ranked[s][ptr[s]])
            ptr[s] += 1
    return chosen


def test_round_robin_max_equals_the_definition(tmp_path):
    from evalsel.select.recall import run_recall

    proj = Project(n_pool=200, seed=11)
    paths = proj.write(tmp_path)
    budget = 25
    outs = [str(tmp_path / f"sel/{s}.jsonl") for s in SUBJECTS]
    run_recall(
        subjects=SUBJECTS,
        query_vectors=paths["queries"],
        benchmark_files=paths["benchmark"],
        pool_vectors=paths["pool_vectors"],
        pool_shards=paths["pool_shards"],
        recall_outputs=outs,
        statistics_path=tmp_path / "sel/statistics.json",
        histogram_path=tmp_path / "sel/hist.png",
        strategy="round_robin_max",
        similarity_threshold=-1.0,
        max_similarity=None,
        budget=budget,
        backend="numpy",
        progress=False,
    )
    pool = PoolIndex(paths["pool_vectors"], paths["pool_shards"])
    Q = np.concatenate([proj.qvec[s] for s in SUBJECTS])
    qsub = np.repeat(np.arange(3), [len(proj.qvec[s]) for s in SUBJECTS])
    X = pool.gather(np.arange(pool.size))
    want = {pool.ids[j] for j in _brute_round_robin(Q, qsub, X, 3, budget)}
    got = [r for o in outs for r in load_jsonl(o)]
    assert {r["id"] for r in got} == want and len(got) == budget
    counts_by_subject = Counter(r["subject"] for r in got)
    assert max(counts_by_subject.values()) - min(counts_by_subject.values()) <= 1  # turns
    sm = score_subject_max(Q, qsub, 3, pool, keep=5)
    for s in range(3):
        best = (Q[qsub == s] @ X.T).max(axis=0)
        order = sorted(range(len(X)), key=lambda j: (-best[j], j))[:5]
        assert sm.index[s].tolist() == order
        assert sm.score[s] == pytest.approx(best[order], abs=1e-6)


# --------------------------------------------------------------------------- overlap


def test_jaccard_and_overlap_by_hand(tmp_path):
    assert jaccard({1, 2, 3}, {2, 3, 4, 5}) == pytest.approx(2 / 5)
    assert jaccard(set(), set()) == 1.0
    assert prompt_text({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}) == "q"
    assert prompt_text({"instruction": "i", "input": "x", "output": "o"}) == "i\nx"
    bench = tmp_path / "b.jsonl"
    write_jsonl(
        bench,
        [
            {
                "id": "x/val/0",
                "subject": "x",
                "split": "val",
                "question": "高血压 治疗",
                "choices": ["a", "b"],
                "answer": "A",
            }
        ],
    )

    def row(i, q):
        return {"id": i, "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": "答"}]}

    write_jsonl(tmp_path / "a.jsonl", [row("1", "高血压 治疗"), row("2", "天气")])
    write_jsonl(tmp_path / "b2.jsonl", [row("2", "天气"), row("3", "足球")])
    out = arms_overlap(
        sft_files={"a": tmp_path / "a.jsonl", "b": tmp_path / "b2.jsonl"},
        benchmark_files=[bench],
        recall_splits=["val"],
        query_text="question",
        json_path=tmp_path / "o.json",
        png_path=tmp_path / "o.png",
    )
    assert out["jaccard"]["a"]["b"] == pytest.approx(1 / 3) and out["intersection"]["a"]["b"] == 1
    assert out["similarity"]["a"]["p95"] > 0.9 and out["similarity"]["b"]["p95"] == 0.0
    assert read_json(tmp_path / "o.json") == out and (tmp_path / "o.png").stat().st_size > 1000
