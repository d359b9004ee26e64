"""SFT sets: mix ratio, equal arm sizes (samples or tokens), seeded draws and shuffles, formats, the
leak guard on random draws and the contamination report, on small synthetic projects."""

from __future__ import annotations

from pathlib import Path

import pytest
from real_pool import SUBJECTS as SUBJECTS_REAL
from real_pool import hash_vectors, selection_paths, write_real_benchmark, write_real_pool
from test_recall import SUBJECTS, Project

from evalsel.core.io import InputError, load_jsonl, read_json, write_jsonl
from evalsel.guard.leak import NgramIndex, load_benchmark_items, sample_segments
from evalsel.sets.build import build_sft, mix_size, to_alpaca, to_sharegpt


def _project(seed=0, n_pool=400):
    proj = Project(n_pool=n_pool, seed=seed)
    for s in SUBJECTS:
        for i in range(4):
            proj.pool += [proj.sample(vec=proj.near(proj.query(s, i), 0.9 - 0.01 * j)) for j in range(3)]
    return proj


def _build(proj: Project, root: Path, recall_kw=None, **kw) -> tuple[dict, dict]:
    p, _, _ = proj.run(root, top_k=3, similarity_threshold=0.8, **(recall_kw or {}))
    settings = dict(
        fmt="sharegpt",
        random_mix_ratio=0.2,
        random_match="samples",
        seed=42,
        leak_guard={"ngram_n": 13},
        longest_seed_n=8,
        max_similarity=0.95,
        recall_splits=["val"],
        eval_splits=["val"],
        progress=False,
    )
    settings.update(kw)
    out = {
        k: root / f"results/{v}"
        for k, v in dict(
            eval_driven_path="sft/eval_driven.jsonl",
            random_path="sft/random.jsonl",
            statistics_path="sft/sft_statistics.json",
            contamination_path="sft/contamination.json",
        ).items()
    }
    stats = build_sft(
        recall_files=[str(root / f"results/recall/{s}.jsonl") for s in SUBJECTS],
        recall_statistics=root / "results/recall/recall_statistics.json",
        benchmark_files=p["benchmark"],
        benchmark_vectors=p["queries"],
        pool_vectors=p["pool_vectors"],
        pool_shards=p["pool_shards"],
        **out,
        **settings,
    )
    return p, stats


def _files(root):
    return load_jsonl(root / "results/sft/eval_driven.jsonl"), load_jsonl(root / "results/sft/random.jsonl")


def test_mix_size():
    assert mix_size(80, 0.2) == 20
    assert mix_size(36, 0.0) == 0
    assert mix_size(3, 0.5) == 3
    with pytest.raises(ValueError):
        mix_size(10, 1.0)


def test_mix_ratio_equal_sizes_and_origins(tmp_path):
    proj = _project()
    _, stats = _build(proj, tmp_path)
    ev, rnd = _files(tmp_path)
    recalled = [r["id"] for s in SUBJECTS for r in load_jsonl(tmp_path / f"results/recall/{s}.jsonl")]
    assert len(recalled) == 36
    origins = [r["origin"] for r in ev]
    assert origins.count("recalled") == 36 and origins.count("random_mix") == mix_size(36, 0.2) == 9
    assert len(ev) == len(rnd) == 45 and stats["equal_sizes"]
    assert {r["origin"] for r in rnd} == {"random"}
    assert len({r["id"] for r in ev}) == len(ev) and len({r["id"] for r in rnd}) == len(rnd)
    pool = {it["record"]["id"]: it["record"] for it in proj.pool}
    for r in ev:
        if r["origin"] == "random_mix":
            assert r["id"] not in recalled and pool[r["id"]]["medical"]
        assert r["conversations"] == pool[r["id"]]["conversations"]
    # the random arm is drawn from the whole pool: non-medical samples appear (a quarter of the pool)
    assert any(not pool[r["id"]]["medical"] for r in rnd)
    assert stats["random_mix"]["drawn"] == 9 and stats["random_mix"]["shortfall"] == 0
    assert stats["actual_mix_ratio"] == 0.2


def test_seed_fixes_draws_and_shuffle(tmp_path):
    proj = _project()
    _build(proj, tmp_path / "a")
    _build(proj, tmp_path / "b")
    _build(proj, tmp_path / "c", seed=7)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert [r["id"] for r in a[1]] != [r["id"] for r in c[1]]
    assert {r["id"] for r in a[1]} != {r["id"] for r in c[1]}
    # the shuffle mixes recalled and random samples instead of appending them
    origins = [r["origin"] for r in a[0]]
    assert origins != sorted(origins, key=lambda o: o != "recalled")


def test_token_matched_random_arm(tmp_path):
    proj = _project()
    _, stats = _build(proj, tmp_path, random_match="tokens")
    arms = stats["arms"]
    assert stats["token_count"] == "characters"
    assert arms["random"]["tokens"] >= arms["eval_driven"]["tokens"]
    ev, rnd = _files(tmp_path)
    last = max(len("\n".join(t["value"] for t in r["conversations"])) for r in rnd)
    assert arms["random"]["tokens"] - arms["eval_driven"]["tokens"] <= last


def test_alpaca_format_and_multi_turn_history(tmp_path):
    rec = {
        "id": "x",
        "system": "你是医生",
        "conversations": [
            {"from": "human", "value": "问1"},
            {"from": "gpt", "value": "答1"},
            {"from": "human", "value": "问2"},
            {"from": "gpt", "value": "答2"},
        ],
    }
    assert to_alpaca(rec, "random") == {
        "id": "x",
        "origin": "random",
        "instruction": "问2",
        "input": "",
        "output": "答2",
        "history": [["问1", "答1"]],
        "system": "你是医生",
    }
    assert to_sharegpt(dict(rec, system=""), "recalled") == {
        "id": "x",
        "origin": "recalled",
        "conversations": rec["conversations"],
    }
    with pytest.raises(InputError, match="alternate"):
        to_alpaca(dict(rec, conversations=rec["conversations"][:3]), "random")
    proj = _project()
    _build(proj, tmp_path, fmt="alpaca")
    ev, rnd = _files(tmp_path)
    assert all(set(r) >= {"instruction", "input", "output", "origin"} and "conversations" not in r for r in ev + rnd)


def test_random_draws_pass_the_leak_guard_and_report(tmp_path):
    proj = _project(n_pool=60)
    # leaks planted among the few random candidates: n-gram copies of test-split items and cosine copies
    leaks = []
    for s in SUBJECTS:
        item = proj.bench[s][-1]
        q = list(item["question"])
        q[10], q[25] = "改", "动"
        leaks.append(proj.sample(source="med", prompt="".join(q)))
        leaks.append(proj.sample(source="general", vec=proj.query(s, 1)))
    proj.pool += leaks * 1
    root = tmp_path
    _, stats = _build(proj, root, random_mix_ratio=0.5)
    ev, rnd = _files(root)
    final_ids = {r["id"] for r in ev + rnd}
    assert not final_ids & {lk["record"]["id"] for lk in leaks}
    dropped = stats["random"]["dropped"]
    guard_reasons = ("exact_ngram", "containment", "fuzzy", "options")
    assert sum(dropped.get(r, 0) + stats["random_mix"]["dropped"].get(r, 0) for r in guard_reasons) >= 1
    # no final sample shares a 13-gram with any benchmark item (every split)
    items = load_benchmark_items([root / f"results/benchmark/{s}.jsonl" for s in SUBJECTS])
    index = NgramIndex(items, 13)
    for r in ev + rnd:
        assert (
            index.matches(sample_segments({"system": r.get("system", ""), "conversations": r["conversations"]})) == {}
        )
    report = read_json(root / "results/sft/contamination.json")
    assert report["max_longest_shared_chars"] < 13 and report["items"] == len(items)
    rows = {r["id"]: r for r in report["benchmark"]}
    for s in SUBJECTS:
        assert rows[f"{s}/val/0"]["max_cosine"] is not None and rows[f"{s}/test/0"]["max_cosine"] is None
    planted = {lk["record"]["id"] for lk in leaks}
    reported = {d["sample_id"] for r in report["benchmark"] for d in r["dropped"]}
    assert reported & planted
    assert stats["contamination"]["max_longest_shared_chars"] == report["max_longest_shared_chars"]


def test_longest_shared_reported_for_near_copies(tmp_path):
    proj = _project(n_pool=40)
    item = proj.bench["physician"][0]
    # shares 10 consecutive characters with the question: below n=13, so it is allowed and reported
    proj.pool.append(
        proj.sample(prompt="相关问题" + item["question"][5:15], vec=proj.near(proj.query("physician", 0), 0.93))
    )
    _build(proj, tmp_path)
    rows = {r["id"]: r for r in read_json(tmp_path / "results/sft/contamination.json")["benchmark"]}
    assert rows[item["id"]]["longest_shared_chars"] == 10
    assert rows[item["id"]]["longest_shared_sample"] == proj.pool[-1]["record"]["id"]


def test_stale_recall_file_is_refused(tmp_path):
    proj = _project(n_pool=40)
    _build(proj, tmp_path)
    rec_file = tmp_path / "results/recall/physician.jsonl"
    rows = load_jsonl(rec_file)
    rows[1]["id"] = "ffffffffffffffff"
    write_jsonl(rec_file, rows)
    with pytest.raises(InputError, match=r"physician\.jsonl:2: field 'id'"):
        build_sft(
            recall_files=[str(rec_file)],
            recall_statistics=tmp_path / "results/recall/recall_statistics.json",
            benchmark_files=[str(tmp_path / f"results/benchmark/{s}.jsonl") for s in SUBJECTS],
            benchmark_vectors=[str(tmp_path / f"results/vectors/benchmark/{s}.npy") for s in SUBJECTS],
            pool_vectors=sorted(map(str, (tmp_path / "results/vectors/pool").rglob("*.npy"))),
            pool_shards=sorted(map(str, (tmp_path / "results/pool").rglob("*.jsonl"))),
            eval_driven_path=tmp_path / "x/e.jsonl",
            random_path=tmp_path / "x/r.jsonl",
            statistics_path=tmp_path / "x/s.json",
            contamination_path=tmp_path / "x/c.json",
            progress=False,
        )
    assert not (tmp_path / "x/e.jsonl").exists()


_hash_vectors = hash_vectors  # the name the tests below use


def test_real_data_recall_and_sft_keep_benchmark_text_out(shared_data, tmp_path):
    """C-Eval medical questions against 1,500 real pool samples per file, with a C-Eval question planted
    (three characters changed): recall drops it and the final sets hold no 13-gram of any item, every split."""

    from evalsel.select.recall import run_recall

    subjects = SUBJECTS_REAL
    bench = write_real_benchmark(shared_data, tmp_path, subjects)
    # a recall question reworded: its vector is close to the question's, so recall meets it
    target = max((r for r in bench["clinical_medicine"] if r["split"] == "val"), key=lambda r: len(r["question"]))
    q = list(target["question"])
    for pos in (len(q) // 4, len(q) // 2, 3 * len(q) // 4):
        q[pos] = "某"
    planted_q = "".join(q)

    def plant(stem, n, turns):
        return [planted_q, turns[1]] if stem == "medical_qa_alpaca" and n == 700 else turns

    pool_vectors, pool_shards = write_real_pool(shared_data, tmp_path, 1500, edit=plant)
    from evalsel.core.io import read_jsonl

    planted = [r["id"] for p in pool_shards for _, r in read_jsonl(p) if r["conversations"][0]["value"] == planted_q]
    planted_id = planted[0] if planted else None
    assert planted_id

    bfiles, qfiles, rfiles = selection_paths(tmp_path, subjects)
    rstats = run_recall(
        subjects=subjects,
        query_vectors=qfiles,
        benchmark_files=bfiles,
        pool_vectors=pool_vectors,
        pool_shards=pool_shards,
        recall_outputs=rfiles,
        statistics_path=tmp_path / "results/recall/recall_statistics.json",
        histogram_path=tmp_path / "results/recall/similarity_hist.png",
        top_k=20,
        similarity_threshold=0.3,
        max_similarity=0.95,
        backend="numpy",
        progress=False,
    )
    assert rstats["overall"]["kept"] > 100
    stats = build_sft(
        recall_files=rfiles,
        recall_statistics=tmp_path / "results/recall/recall_statistics.json",
        benchmark_files=bfiles,
        benchmark_vectors=qfiles,
        pool_vectors=pool_vectors,
        pool_shards=pool_shards,
        eval_driven_path=tmp_path / "results/sft/eval_driven.jsonl",
        random_path=tmp_path / "results/sft/random.jsonl",
        statistics_path=tmp_path / "results/sft/sft_statistics.json",
        contamination_path=tmp_path / "results/sft/contamination.json",
        recall_splits=["val"],
        eval_splits=["val"],
        progress=False,
    )
    ev, rnd = _files(tmp_path)
    assert len(ev) == len(rnd) == stats["arms"]["eval_driven"]["samples"]
    assert planted_id not in {r["id"] for r in ev + rnd}
    index = NgramIndex(load_benchmark_items(bfiles), 13)
    for r in ev + rnd:
        assert index.matches(sample_segments({"conversations": r["conversations"]})) == {}
    report = read_json(tmp_path / "results/sft/contamination.json")
    assert report["max_longest_shared_chars"] < 13
    dropped_for_target = {
        d["sample_id"] for row in report["benchmark"] if row["id"] == target["id"] for d in row["dropped"]
    }
    assert planted_id in {d["sample_id"] for d in rstats["guard_drops"]}
    assert planted_id in dropped_for_target
    assert stats["recalled"]["dropped_by_guard"] == 0  # recall had already removed it
