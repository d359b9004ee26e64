"""Recall: exactness against brute force, threshold / max_similarity / dedup / quota / near-duplicate
filters, the train_topk_mean strategy, statistics and input errors, on small synthetic projects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalsel.core.io import InputError, load_jsonl, read_json, text_hash, write_jsonl
from evalsel.core.vectors import save_vectors
from evalsel.data.poolindex import PoolIndex
from evalsel.select.kernels import EMPTY, score_topk_mean, search_topk
from evalsel.select.recall import run_recall

SUBJECTS = ["clinical_medicine", "basic_medicine", "physician"]


def rand_text(rng, n):
    """Random CJK text: two random texts share no 8-gram in practice."""
    return "".join(chr(0x4E00 + int(c)) for c in rng.integers(0, 3000, n))


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class Project:
    """A synthetic benchmark, its question vectors and a pool, laid out as the workflow's artifacts."""

    def __init__(self, n_pool=400, dim=16, n_val=4, n_test=3, seed=0):
        self.rng = rng = np.random.default_rng(seed)
        self.dim = dim
        self.bench = {s: [] for s in SUBJECTS}
        self.qvec = {}
        for s in SUBJECTS:
            for split, n in (("val", n_val), ("test", n_test)):
                for i in range(n):
                    self.bench[s].append(
                        {
                            "id": f"{s}/{split}/{i}",
                            "subject": s,
                            "split": split,
                            "question": rand_text(rng, 40),
                            "choices": [rand_text(rng, 6) for _ in range(4)],
                            "answer": "A",
                            "explanation": "",
                        }
                    )
            self.qvec[s] = unit(rng.normal(size=(n_val, dim)))
        self.pool = [self.sample("med" if i % 4 else "general") for i in range(n_pool)]

    def sample(self, source="med", prompt=None, answer=None, vec=None, medical=None):
        rng = self.rng
        prompt = prompt if prompt is not None else rand_text(rng, 30)
        answer = answer if answer is not None else rand_text(rng, 60)
        conv = [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
        rec = {
            "id": text_hash(json.dumps(conv, ensure_ascii=False)),
            "source": source,
            "medical": source != "general" if medical is None else medical,
            "system": "",
            "conversations": conv,
            "text": prompt,
            "origin": "synthetic",
        }
        return {"record": rec, "vector": unit(rng.normal(size=self.dim)) if vec is None else unit(vec)}

    def query(self, subject, i):
        return self.qvec[subject][i]

    def near(self, q, cos):
        """A random unit vector at exactly cosine ``cos`` from the unit vector q."""
        r = self.rng.normal(size=self.dim)
        r = unit(r - (r @ q) * q)
        return unit(cos * q + np.sqrt(1 - cos * cos) * r)

    def write(self, root: Path, shard_size=100) -> dict:
        root = Path(root)
        paths = {"benchmark": [], "queries": [], "pool_vectors": [], "pool_shards": []}
        for s in SUBJECTS:
            b = root / f"results/benchmark/{s}.jsonl"
            write_jsonl(b, self.bench[s])
            paths["benchmark"].append(str(b))
            qv = root / f"results/vectors/benchmark/{s}.npy"
            ids = [r["id"] for r in self.bench[s] if r["split"] == "val"]
            save_vectors(qv, ids, self.qvec[s], dtype="float32")
            paths["queries"].append(str(qv))
        by_source: dict[str, list] = {}
        for item in self.pool:
            by_source.setdefault(item["record"]["source"], []).append(item)
        for src in sorted(by_source):
            items = by_source[src]
            for n, lo in enumerate(range(0, len(items), shard_size)):
                chunk = items[lo : lo + shard_size]
                shard = root / f"results/pool/{src}/shard-{n:05d}.jsonl"
                write_jsonl(shard, [c["record"] for c in chunk])
                vec = root / f"results/vectors/pool/{src}/shard-{n:05d}.npy"
                save_vectors(
                    vec, [c["record"]["id"] for c in chunk], np.stack([c["vector"] for c in chunk]), dtype="float32"
                )
                paths["pool_shards"].append(str(shard))
                paths["pool_vectors"].append(str(vec))
        paths["root"] = root
        return paths

    def run(self, root: Path, shard_size=100, **kw) -> tuple[dict, dict, list[list[dict]]]:
        p = self.write(root, shard_size)
        outs = [str(root / f"results/recall/{s}.jsonl") for s in SUBJECTS]
        settings = dict(
            top_k=5,
            similarity_threshold=-1.0,
            max_similarity=0.95,
            block_size=64,
            leak_guard={"ngram_n": 13},
            backend="numpy",
            progress=False,
        )
        settings.update(kw)
        stats = run_recall(
            subjects=SUBJECTS,
            query_vectors=p["queries"],
            benchmark_files=p["benchmark"],
            pool_vectors=p["pool_vectors"],
            pool_shards=p["pool_shards"],
            recall_outputs=outs,
            statistics_path=root / "results/recall/recall_statistics.json",
            histogram_path=root / "results/recall/similarity_hist.png",
            **settings,
        )
        return p, stats, [load_jsonl(o) for o in outs]


def brute_topk(Q, P, k, max_sim=None, excluded=()):
    S = Q.astype(np.float64) @ P.T.astype(np.float64)
    out = []
    for i in range(len(Q)):
        cand = [j for j in range(len(P)) if j not in excluded and (max_sim is None or S[i, j] <= max_sim)]
        out.append(sorted(cand, key=lambda j: (-S[i, j], j))[:k])
    return out


# --------------------------------------------------------------------------- exact search


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_search_is_exact_with_ties(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    # Multiples of 1/4 in 8 dimensions: every product is exact in float32 and ties are everywhere.
    P = rng.integers(-3, 4, (2500, 8)).astype(np.float32) / 4
    Q = rng.integers(-3, 4, (30, 8)).astype(np.float32) / 4
    pool = PoolIndex.from_array(P)
    for k, max_sim, block in [(10, None, 100), (7, 1.0, 37), (40, 2.0, 5000), (1, 0.5, 1)]:
        res = search_topk(Q, pool, k, max_sim, block, backend)
        expected = brute_topk(Q, P, k, max_sim)
        for i in range(len(Q)):
            got = [int(j) for j, s in zip(res.index[i], res.scores[i]) if np.isfinite(s)]
            assert got == expected[i], (k, max_sim, block, i)
        S = Q @ P.T
        assert res.leaks.tolist() == ([0] * len(Q) if max_sim is None else (S > max_sim).sum(1).tolist())


@pytest.mark.parametrize("chunk,threads", [(50, 1), (7, 3), (999, 2), (16, 2)])
def test_numpy_search_is_exact_across_chunk_sizes_and_threads(monkeypatch, chunk, threads):
    """The numpy kernel deals the chunks to its worker threads; each takes its first chunk densely,
    then scores chunks against its running k-th, tightened whenever the held candidates are merged,
    and the workers' top-k are merged at the end: exact with ties, leaks and repeated ids at any
    sizes, and on continuous scores where the k-th moves chunk after chunk."""
    import evalsel.select.kernels as kernels

    monkeypatch.setattr(kernels, "CHUNK_COLUMNS", chunk)
    rng = np.random.default_rng(3)
    P = rng.integers(-3, 4, (2500, 8)).astype(np.float32) / 4
    Q = rng.integers(-3, 4, (30, 8)).astype(np.float32) / 4
    P[1200:1300] = P[:100]  # equal vectors far apart: ties broken by position across chunks
    pool = PoolIndex.from_array(P)
    S = Q @ P.T
    for k, max_sim, block in [(10, None, 1000), (7, 1.0, 37), (40, 2.0, 5000), (1, 0.5, 333)]:
        res = search_topk(Q, pool, k, max_sim, block, "numpy", threads=threads)
        expected = brute_topk(Q, P, k, max_sim)
        for i in range(len(Q)):
            got = [int(j) for j, s in zip(res.index[i], res.scores[i]) if np.isfinite(s)]
            assert got == expected[i], (k, max_sim, block, i)
        assert res.leaks.tolist() == ([0] * len(Q) if max_sim is None else (S > max_sim).sum(1).tolist())
        if max_sim is not None:  # the recorded pairs: every leak, in pool order, whichever worker found it
            rr, cc = np.nonzero(S > max_sim)
            order = np.lexsort((rr, cc))
            assert [(q, p) for q, p, _ in res.leak_pairs] == list(zip(rr[order].tolist(), cc[order].tolist()))
    P = rng.standard_normal((6000, 16)).astype(np.float32)
    Q = rng.standard_normal((20, 16)).astype(np.float32)
    for k, max_sim in [(5, None), (3, 4.0)]:
        res = search_topk(Q, PoolIndex.from_array(P), k, max_sim, 2048, "numpy", threads=threads)
        expected = brute_topk(Q, P, k, max_sim)
        assert [[int(j) for j in row] for row in res.index] == expected, (k, max_sim)


def test_float16_rows_convert_bit_exactly():
    """The kernel's float16 -> float32 conversion (by the bits) equals numpy's cast on every one of
    the 65,536 float16 values: finite ones by the bit trick, a chunk holding inf or NaN by the cast."""
    from evalsel.select.kernels import _to_float32

    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)
    finite = every[np.isfinite(every)].reshape(-1, 8)
    for half in (finite, every):
        out, tmp = np.empty(half.shape, np.float32), np.empty(half.shape, np.uint32)
        _to_float32(half, out, tmp)
        assert np.array_equal(out.view(np.uint32), half.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_search_streams_shards_exactly_and_skips_repeated_ids(tmp_path, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    P = unit(rng.normal(size=(1000, 24)))
    Q = unit(rng.normal(size=(25, 24)))
    files = []
    for n, lo in enumerate(range(0, 1000, 300)):
        f = tmp_path / "src" / f"shard-{n:05d}.npy"
        ids = [f"id{j}" for j in range(lo, min(lo + 300, 1000))]
        if n == 2:
            ids[0] = "id5"  # the same sample in two shards (content-hash ids): scored once
        save_vectors(f, ids, P[lo : lo + 300], dtype="float16")
        files.append(f)
    pool = PoolIndex(files)
    assert pool.n_duplicates == 1 and pool.duplicate[600]
    stored = np.concatenate([np.load(f).astype(np.float32) for f in files])
    expected = brute_topk(Q, stored, 12, 0.6, excluded={600})
    S = Q.astype(np.float64) @ stored.T.astype(np.float64)
    for block in (64, 4096):
        res = search_topk(Q, pool, 12, 0.6, block, backend)
        assert res.scanned == 999
        assert res.leaks.tolist() == (np.delete(S, 600, axis=1) > 0.6).sum(1).tolist()
        for i in range(len(Q)):
            assert [int(j) for j in res.index[i] if j != EMPTY] == expected[i]
            np.testing.assert_allclose(res.scores[i], S[i, expected[i]], atol=1e-5)


def test_pool_smaller_than_k_and_bad_arguments():
    P = unit(np.random.default_rng(3).normal(size=(3, 4)))
    res = search_topk(P[:1], PoolIndex.from_array(P), 10, None, 2, "numpy")
    S = P[:1] @ P.T
    assert [int(j) for j in res.index[0] if j != EMPTY] == sorted(range(3), key=lambda j: -S[0, j])
    assert (res.index[0, 3:] == EMPTY).all()
    assert np.isinf(res.scores[0, 3:]).all()
    with pytest.raises(ValueError, match="top_k"):
        search_topk(P[:1], PoolIndex.from_array(P), 0)
    with pytest.raises(ValueError, match="dimension"):
        search_topk(np.ones((1, 5), np.float32), PoolIndex.from_array(P), 2)
    with pytest.raises(ValueError, match="backend"):
        search_topk(P[:1], PoolIndex.from_array(P), 2, backend="cuda")


def test_topk_mean_scores_match_brute_force():
    rng = np.random.default_rng(4)
    P = unit(rng.normal(size=(700, 12)))
    Q = unit(rng.normal(size=(9, 12)))
    qsub = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    ms = score_topk_mean(
        Q, qsub, 3, PoolIndex.from_array(P), m=3, keep=20, threshold=0.1, max_similarity=0.8, block_size=128
    )
    S = Q @ P.T
    score = np.sort(S, axis=0)[-3:].mean(0)
    subj = qsub[S.argmax(0)]
    leak = (S > 0.8).any(0)
    for s in range(3):
        ok = np.flatnonzero((subj == s) & ~leak & (score >= 0.1))
        best = ok[np.lexsort((ok, -score[ok]))][:20]
        assert ms.index[s].tolist() == best.tolist()
        np.testing.assert_allclose(ms.score[s], score[best], atol=1e-6)
        assert ms.seen[s] == (subj == s).sum()
        assert ms.leaks[s] == ((subj == s) & leak).sum()
        assert ms.passed[s] == len(ok)


# --------------------------------------------------------------------------- run_recall filters


def _kept_ids(outs):
    return [r["id"] for rows in outs for r in rows]


def test_threshold_topk_and_leak_drop(tmp_path):
    proj = Project(n_pool=300)
    q = proj.query("physician", 0)
    copy = proj.sample(vec=q)  # cosine 1.0 with the question: a probable leak
    proj.pool.append(copy)
    close = [proj.sample(vec=proj.near(q, c)) for c in (0.98, 0.97, 0.96)]
    proj.pool += close
    p, stats, outs = proj.run(tmp_path, top_k=4, similarity_threshold=0.5, max_similarity=0.99)
    ids = _kept_ids(outs)
    assert copy["record"]["id"] not in ids
    for c in close:
        assert c["record"]["id"] in ids
    for rows in outs:
        assert all(r["similarity"] >= 0.5 for r in rows)
        assert [r["similarity"] for r in rows] == sorted((r["similarity"] for r in rows), reverse=True)
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    # at most top_k per question
    per_query: dict[str, int] = {}
    for r in outs[2]:
        per_query[r["query_id"]] = per_query.get(r["query_id"], 0) + 1
    assert max(per_query.values()) <= 4
    phys = stats["subjects"]["physician"]
    assert phys["dropped_max_similarity"] >= 1
    recorded = stats["max_similarity_drops"]["recorded"]
    assert {"query_id": "physician/val/0", "sample_id": copy["record"]["id"]} in [
        {k: d[k] for k in ("query_id", "sample_id")} for d in recorded
    ]
    # counts agree with a brute force over the stored vectors
    P = np.stack([it["vector"] for it in proj.pool])
    Qall = np.concatenate([proj.qvec[s] for s in SUBJECTS])
    S = Qall @ P.T
    masked = np.where(S > 0.99, -np.inf, S)
    top = np.sort(masked, axis=1)[:, -4:]
    assert stats["overall"]["dropped_threshold"] == int((top < 0.5).sum())
    assert stats["overall"]["dropped_max_similarity"] == int((S > 0.99).sum())
    assert stats["overall"]["candidates_seen"] == len(Qall) * len(P)
    o = stats["overall"]
    assert (
        o["unique"]
        == o["kept"]
        + sum(o["dropped_guard"].values())
        + o["dropped_duplicate_text"]
        + o["dropped_near_duplicate"]
        + o["dropped_budget"]
    )
    assert o["recalled"] == o["unique"] + o["dropped_duplicate"] + o["dropped_threshold"]
    assert Path(tmp_path / "results/recall/similarity_hist.png").stat().st_size > 1000


def test_dedup_across_questions_and_subjects(tmp_path):
    proj = Project(n_pool=200)
    qa, qb = proj.query("physician", 1), proj.query("basic_medicine", 2)
    shared = proj.sample(vec=unit(0.6 * qa + 0.4 * qb))
    proj.pool.append(shared)
    _, stats, outs = proj.run(tmp_path, top_k=3, similarity_threshold=0.0)
    ids = _kept_ids(outs)
    assert len(ids) == len(set(ids))
    hits = [r for rows in outs for r in rows if r["id"] == shared["record"]["id"]]
    assert len(hits) == 1
    assert hits[0]["subject"] == "physician" and hits[0]["query_id"] == "physician/val/1"
    assert stats["overall"]["dropped_duplicate"] >= 1
    # every credited match is the sample's best question among those that recalled it
    assert stats["subjects"]["basic_medicine"]["dropped_duplicate"] >= 1


def test_repeated_pool_id_and_exact_text_kept_once(tmp_path):
    proj = Project(n_pool=150)
    q = proj.query("clinical_medicine", 0)
    a = proj.sample(vec=proj.near(q, 0.93))
    twin = {"record": dict(a["record"], source="med2"), "vector": a["vector"]}  # same id in another source
    same_text = proj.sample(prompt=a["record"]["text"], vec=proj.near(q, 0.93))  # same prompt, other answer
    proj.pool += [a, twin, same_text]
    _, stats, outs = proj.run(tmp_path, top_k=5, similarity_threshold=0.9)
    ids = [r["id"] for r in outs[0]]
    assert len(ids) == 1 and ids[0] in (a["record"]["id"], same_text["record"]["id"])
    assert stats["pool"]["repeated_ids"] == 1
    assert stats["subjects"]["clinical_medicine"]["dropped_duplicate_text"] == 1


def test_budget_round_robin_quota_and_best_first(tmp_path):
    proj = Project(n_pool=200)
    # physician has many very close samples: best-first would give it the whole budget
    for i in range(4):
        proj.pool += [proj.sample(vec=proj.near(proj.query("physician", i), 0.94 - 0.001 * j)) for j in range(5)]
    for s in ("clinical_medicine", "basic_medicine"):
        for i in range(4):
            proj.pool += [proj.sample(vec=proj.near(proj.query(s, i), 0.9 - 0.001 * j)) for j in range(5)]
    _, stats, outs = proj.run(tmp_path / "rr", top_k=5, similarity_threshold=0.0, budget=12, per_subject_quota=True)
    assert [len(o) for o in outs] == [4, 4, 4]
    assert stats["overall"]["kept"] == 12 and stats["overall"]["dropped_budget"] > 0
    _, stats, outs = proj.run(tmp_path / "bf", top_k=5, similarity_threshold=0.0, budget=12, per_subject_quota=False)
    assert [len(o) for o in outs] == [0, 0, 12]


def test_near_duplicate_removal(tmp_path):
    proj = Project(n_pool=150)
    q = proj.query("basic_medicine", 3)
    base = proj.near(q, 0.93)
    group = [proj.sample(vec=unit(base + 0.001 * proj.rng.normal(size=proj.dim))) for _ in range(4)]
    proj.pool += group
    _, stats, outs = proj.run(tmp_path / "off", top_k=5, similarity_threshold=0.5)
    assert sum(r["id"] in {g["record"]["id"] for g in group} for r in outs[1]) == 4
    _, stats, outs = proj.run(tmp_path / "on", top_k=5, similarity_threshold=0.5, near_duplicate_threshold=0.99)
    assert sum(r["id"] in {g["record"]["id"] for g in group} for r in outs[1]) == 1
    assert stats["subjects"]["basic_medicine"]["dropped_near_duplicate"] == 3


def test_ngram_guard_drops_reworded_benchmark_copy(tmp_path):
    proj = Project(n_pool=150)
    item = proj.bench["clinical_medicine"][5]  # a test-split item: no vector, guarded by n-grams only
    q = list(item["question"])
    for pos in (3, 20, 38):
        q[pos] = "改"
    copy = proj.sample(prompt="请回答：" + "".join(q), vec=proj.near(proj.query("clinical_medicine", 0), 0.93))
    proj.pool.append(copy)
    _, stats, outs = proj.run(tmp_path, top_k=5, similarity_threshold=0.5)
    assert copy["record"]["id"] not in _kept_ids(outs)
    assert sum(stats["subjects"]["clinical_medicine"]["dropped_guard"].values()) == 1
    drop = stats["guard_drops"][0]
    assert drop["benchmark_id"] == item["id"] and drop["reason"] in ("exact_ngram", "containment", "fuzzy")


def test_train_topk_mean_end_to_end(tmp_path):
    proj = Project(n_pool=300)
    for s in SUBJECTS:
        proj.pool += [proj.sample(vec=proj.near(proj.query(s, 0), 0.9 - 0.001 * j)) for j in range(6)]
    with pytest.raises(ValueError, match="budget"):
        proj.run(tmp_path / "x", strategy="train_topk_mean")
    _, stats, outs = proj.run(tmp_path, strategy="train_topk_mean", budget=9, topk_mean_m=2, similarity_threshold=0.0)
    assert [len(o) for o in outs] == [3, 3, 3]
    assert all("best_similarity" in r for o in outs for r in o)
    assert stats["overall"]["kept"] == 9


def test_stale_vectors_are_reported_with_file_and_line(tmp_path):
    proj = Project(n_pool=120)
    proj.pool.append(proj.sample(vec=proj.near(proj.query("physician", 0), 0.93)))
    p = proj.write(tmp_path)
    # rewrite one shard with a changed record: its id no longer matches the vectors row
    shard = Path(p["pool_shards"][0])
    rows = load_jsonl(shard)
    rows = [dict(r, id="0" * 16) for r in rows]
    write_jsonl(shard, rows)
    outs = [str(tmp_path / f"o/{s}.jsonl") for s in SUBJECTS]
    with pytest.raises(InputError, match=r"shard-00000\.jsonl:\d+: field 'id'"):
        run_recall(
            subjects=SUBJECTS,
            query_vectors=p["queries"],
            benchmark_files=p["benchmark"],
            pool_vectors=p["pool_vectors"],
            pool_shards=p["pool_shards"],
            recall_outputs=outs,
            statistics_path=tmp_path / "s.json",
            histogram_path=tmp_path / "h.png",
            top_k=200,
            similarity_threshold=-1,
            backend="numpy",
            progress=False,
        )
    assert not Path(outs[0]).exists()


def test_recall_statistics_file_has_per_subject_and_overall(tmp_path):
    proj = Project(n_pool=100)
    _, stats, _ = proj.run(tmp_path)
    on_disk = read_json(tmp_path / "results/recall/recall_statistics.json")
    assert set(on_disk["subjects"]) == set(SUBJECTS)
    for key in (
        "questions",
        "candidates_seen",
        "recalled",
        "unique",
        "kept",
        "dropped_threshold",
        "dropped_max_similarity",
        "dropped_guard",
        "dropped_duplicate",
        "dropped_duplicate_text",
        "similarity",
    ):
        assert key in on_disk["overall"]
    assert on_disk["overall"]["questions"] == 12
    assert on_disk["overall"]["similarity"]["n"] == on_disk["overall"]["kept"]


def test_torch_recall_claims_a_gpu_and_numpy_does_not(tmp_path, monkeypatch, caplog):
    """recall with the torch/auto backend holds a device like every other GPU job (here: a host
    that reports two GPUs, device 0 held by another job)."""
    import logging

    from evalsel.core import gpu

    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpu.CLAIMED_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(gpu.COUNT_ENV, "2")
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path / "locks"))
    proj = Project(n_pool=60)
    with gpu.claim(1) as held, caplog.at_level(logging.INFO, logger="evalsel.core.gpu"):
        assert held == ["0"]
        # the recall job is another process, which does not inherit the holder's environment
        monkeypatch.delenv(gpu.CLAIMED_ENV, raising=False)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setenv(gpu.TIMEOUT_ENV, "5")
        proj.run(tmp_path / "torch", backend="torch", gpus=1)
        assert "claimed GPUs 1" in caplog.text
        caplog.clear()
        proj.run(tmp_path / "numpy", backend="numpy", gpus=1)
        assert "claimed GPUs" not in caplog.text
