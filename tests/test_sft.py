"""SFT sets: mix ratio, equal arm sizes (samples or tokens), seeded draws and shuffles, formats, the
leak guard on random draws and the contamination report, on small synthetic projects."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalsel.io import InputError, load_jsonl, read_json, write_jsonl
from evalsel.leak import NgramIndex, load_benchmark_items, sample_segments
from evalsel.sft import build_sft, mix_size, to_alpaca, to_sharegpt
from test_recall import SUBJECTS, Project


def _project(seed=0, n_pool=400):
    proj = Project(n_pool=n_pool, seed=seed)
    for s in SUBJECTS:
        for i in range(4):
            proj.pool += [proj.sample(vec=proj.near(proj.query(s, i), 0.9 - 0.01 * j)) for j in range(3)]
    return proj


def _build(proj: Project, root: Path, recall_kw=None, **kw) -> tuple[dict, dict]:
    p, _, _ = proj.run(root, top_k=3, similarity_threshold=0.8, **(recall_kw or {}))
    settings = dict(fmt="sharegpt", random_mix_ratio=0.2, random_match="samples", seed=42, ngram_n=13, longest_seed_n=8,
                    max_similarity=0.95, recall_splits=["val"], eval_splits=["val"], progress=False)
    settings.update(kw)
    out = {k: root / f"results/{v}" for k, v in dict(eval_driven_path="sft/eval_driven.jsonl", random_path="sft/random.jsonl",
                                                      statistics_path="sft/sft_statistics.json",
                                                      contamination_path="recall/contamination.json").items()}
    stats = build_sft(recall_files=[str(root / f"results/recall/{s}.jsonl") for s in SUBJECTS],
                      recall_statistics=root / "results/recall/recall_statistics.json", benchmark_files=p["benchmark"],
                      benchmark_vectors=p["queries"], pool_vectors=p["pool_vectors"], pool_shards=p["pool_shards"], **out, **settings)
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
    rec = {"id": "x", "system": "你是医生", "conversations": [
        {"from": "human", "value": "问1"}, {"from": "gpt", "value": "答1"},
        {"from": "human", "value": "问2"}, {"from": "gpt", "value": "答2"}]}
    assert to_alpaca(rec, "random") == {"id": "x", "origin": "random", "instruction": "问2", "input": "", "output": "答2",
                                        "history": [["问1", "答1"]], "system": "你是医生"}
    assert to_sharegpt(dict(rec, system=""), "recalled") == {"id": "x", "origin": "recalled", "conversations": rec["conversations"]}
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
    for n, s in enumerate(SUBJECTS):
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
    assert dropped.get("ngram", 0) + stats["random_mix"]["dropped"].get("ngram", 0) >= 1
    # no final sample shares a 13-gram with any benchmark item (every split)
    items = load_benchmark_items([root / f"results/benchmark/{s}.jsonl" for s in SUBJECTS])
    index = NgramIndex(items, 13)
    for r in ev + rnd:
        assert index.matches(sample_segments({"system": r.get("system", ""), "conversations": r["conversations"]})) == {}
    report = read_json(root / "results/recall/contamination.json")
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
    proj.pool.append(proj.sample(prompt="相关问题" + item["question"][5:15], vec=proj.near(proj.query("physician", 0), 0.93)))
    _build(proj, tmp_path)
    rows = {r["id"]: r for r in read_json(tmp_path / "results/recall/contamination.json")["benchmark"]}
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
        build_sft(recall_files=[str(rec_file)], recall_statistics=tmp_path / "results/recall/recall_statistics.json",
                  benchmark_files=[str(tmp_path / f"results/benchmark/{s}.jsonl") for s in SUBJECTS],
                  benchmark_vectors=[str(tmp_path / f"results/vectors/benchmark/{s}.npy") for s in SUBJECTS],
                  pool_vectors=sorted(map(str, (tmp_path / "results/vectors/pool").rglob("*.npy"))),
                  pool_shards=sorted(map(str, (tmp_path / "results/pool").rglob("*.jsonl"))),
                  eval_driven_path=tmp_path / "x/e.jsonl", random_path=tmp_path / "x/r.jsonl",
                  statistics_path=tmp_path / "x/s.json", contamination_path=tmp_path / "x/c.json", progress=False)
    assert not (tmp_path / "x/e.jsonl").exists()
