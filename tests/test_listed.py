"""The listed strategy (evalsel.select.listed): an arm of the pool samples a file names (an oracle, a
hand-picked set), in file order, every id checked against the prepared pool."""

from __future__ import annotations

import json

import pytest

from evalsel.core.io import InputError


def _pool(tmp_path, n=5):
    shard = tmp_path / "shard-00000.jsonl"
    rows = [
        {
            "id": f"id{i}",
            "source": "s",
            "medical": True,
            "system": "",
            "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}],
            "text": f"q{i}",
        }
        for i in range(n)
    ]
    shard.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [shard]


def test_listed_selection_keeps_file_order_and_counts_repeats(tmp_path):
    from evalsel.select.listed import listed_job

    ids = tmp_path / "ids.txt"
    ids.write_text("# an oracle\nid3\n\nid1\nid3\nid0\n", encoding="utf-8")
    stats = listed_job(
        ids_path=ids,
        pool_shards=_pool(tmp_path),
        selected_path=tmp_path / "selected.jsonl",
        statistics_path=tmp_path / "statistics.json",
    )
    rows = [json.loads(x) for x in (tmp_path / "selected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["id3", "id1", "id0"] and [r["rank"] for r in rows] == [1, 2, 3]
    assert stats["overall"] == {"listed": 4, "repeated_lines": 1, "kept": 3}


def test_an_id_not_in_the_pool_is_refused_at_its_line(tmp_path):
    from evalsel.select.listed import listed_job

    ids = tmp_path / "ids.txt"
    ids.write_text("id1\nid9\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"ids.txt:2: field 'id': 'id9' is not a sample of the prepared pool"):
        listed_job(
            ids_path=ids,
            pool_shards=_pool(tmp_path),
            selected_path=tmp_path / "s.jsonl",
            statistics_path=tmp_path / "st.json",
        )
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="names no pool id"):
        listed_job(
            ids_path=tmp_path / "empty.txt",
            pool_shards=_pool(tmp_path),
            selected_path=tmp_path / "s.jsonl",
            statistics_path=tmp_path / "st.json",
        )


def _config(arms):
    return {
        "arms": arms,
        "recall": {"strategy": "per_query_topk", "top_k": 3, "similarity_threshold": 0.5, "max_similarity": 0.95},
        "sft": {"random_mix_ratio": 0.2},
    }


def test_listed_arms_in_the_config(tmp_path, monkeypatch):
    from evalsel.select.arms import problems, resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.txt").write_text("id1\n")
    ok = _config(
        [
            {"name": "oracle", "strategy": "listed", "ids": "ids.txt", "mix_ratio": 0.0},
            {"name": "random", "strategy": "random", "match": "oracle"},
        ]
    )
    assert problems(ok) == []
    arm = resolve(ok)["oracle"]
    assert arm.selects and not arm.recalls and arm.ids == "ids.txt" and arm.mix_ratio == 0.0
    bad = _config(
        [
            {"name": "a", "strategy": "listed"},
            {"name": "b", "strategy": "listed", "ids": "nowhere.txt"},
            {"name": "c", "strategy": "cosine", "ids": "ids.txt"},
        ]
    )
    out = problems(bad)
    assert any("arms.a: strategy 'listed' needs 'ids'" in p for p in out)
    assert any("arms.b: the ids file 'nowhere.txt' does not exist" in p for p in out)
    assert any("arms.c: 'ids' does not apply to strategy 'cosine'" in p for p in out)
