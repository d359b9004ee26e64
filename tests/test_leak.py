"""Leak guard: normalisation, the n-gram check catching reworded benchmark copies (synthetic and real
C-Eval questions), the exact longest shared substring, and benchmark input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evalsel.core.io import InputError, write_jsonl
from evalsel.guard.leak import (
    BenchmarkItem,
    NgramIndex,
    load_benchmark_items,
    longest_shared,
    normalise,
    sample_segments,
)


def _item(i, question, choices=("甲", "乙", "丙", "丁"), subject="physician", split="test"):
    return {
        "id": f"{subject}/{split}/{i}",
        "subject": subject,
        "split": split,
        "question": question,
        "choices": list(choices),
        "answer": "A",
        "explanation": "",
    }


def _sample(*turns, system=""):
    roles = ["human", "gpt"]
    return {"system": system, "conversations": [{"from": roles[i % 2], "value": t} for i, t in enumerate(turns)]}


def _lcs(a: str, b: str) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def test_normalise_folds_width_case_and_punctuation():
    assert normalise("ＡＢｃ， 患者 ６０％____！") == "abc患者60"
    assert normalise("Hello,\tWorld\n") == "helloworld"


def test_reworded_copy_is_caught_and_unrelated_text_is_not(tmp_path):
    q = "患者男性，45岁，反复上腹痛3年，进食后缓解，夜间痛醒，最可能的诊断是____"
    path = tmp_path / "b.jsonl"
    write_jsonl(
        path, [_item(0, q, ["胃溃疡", "十二指肠溃疡", "胃癌", "慢性胃炎"]), _item(1, "下列哪项不是肝硬化的表现？")]
    )
    items = load_benchmark_items([path])
    index = NgramIndex(items, 13)
    assert index.too_short == 1  # the short question cannot be checked at n=13: counted, not hidden
    reworded = q.replace("45", "46").replace("3年", "三年").replace("，", " ")
    hits = index.matches(sample_segments(_sample("请问：" + reworded, "答案是十二指肠溃疡。")))
    assert set(hits) == {0} and len(hits[0]) == 13
    # the copy hidden in the assistant turn or the system prompt is caught too
    assert index.matches(sample_segments(_sample("你好", "原题：" + reworded)))
    assert index.matches(sample_segments(_sample("你好", "好的", system=q)))
    unrelated = "高血压患者应低盐饮食，每日食盐摄入量不超过5克，最可能的诊断是原发性高血压。"
    assert index.matches(sample_segments(_sample(unrelated, "是的。"))) == {}


def test_real_ceval_question_planted_with_changes_is_caught(shared_data):
    files = sorted((shared_data / "ceval_medical").glob("*/physician.jsonl"))
    records = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            records.append(_item(r["id"], r["question"], [r[c] for c in "ABCD"], split=f.parent.name))
    records = [dict(r, id=f"{r['split']}/{n}") for n, r in enumerate(records)]
    items = [
        BenchmarkItem(
            r["id"], r["subject"], r["split"], [normalise(r["question"])] + [normalise(c) for c in r["choices"]]
        )
        for r in records
    ]
    index = NgramIndex(items, 13)
    target = max(range(len(records)), key=lambda i: len(records[i]["question"]))
    q = list(records[target]["question"])
    assert len(q) >= 60
    for pos in (len(q) // 4, len(q) // 2, 3 * len(q) // 4):
        q[pos] = "某"
    hits = index.matches(sample_segments(_sample("".join(q), "选" + records[target]["choices"][0])))
    assert target in hits


def test_longest_shared_matches_brute_force():
    rng = np.random.default_rng(0)
    alphabet = "甲乙丙丁戊"

    def text(n):
        return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))

    items = [BenchmarkItem(f"b{i}", "s", "test", [text(int(rng.integers(5, 30))) for _ in range(2)]) for i in range(12)]
    samples = [(f"s{j}", [text(int(rng.integers(5, 40))) for _ in range(3)]) for j in range(15)]
    got = longest_shared(items, samples, seed_n=3)
    for it, (n, sid) in zip(items, got):
        per_sample = [max(_lcs(a, b) for a in it.segments for b in segs) for _, segs in samples]
        best = max(per_sample)
        assert n == (best if best >= 3 else 0)
        if best >= 3:
            assert sid == samples[per_sample.index(best)][0]  # first sample wins a tie


def test_longest_shared_reports_zero_below_seed():
    items = [BenchmarkItem("b", "s", "test", ["abcdefghij"])]
    assert longest_shared(items, [("x", ["zzabcdzz"])], seed_n=5) == [(0, None)]
    assert longest_shared(items, [("x", ["zzabcdezz"]), ("y", ["bcdefgh"])], seed_n=5) == [(7, "y")]


@pytest.mark.parametrize(
    "record, field",
    [
        ({"id": "a", "subject": "s", "split": "val", "choices": ["x"]}, "question"),
        ({"id": "a", "subject": "s", "split": "val", "question": "q", "choices": "x"}, "choices"),
        ({"id": 3, "subject": "s", "split": "val", "question": "q", "choices": []}, "id"),
    ],
)
def test_bad_benchmark_records_name_file_line_and_field(tmp_path, record, field):
    path = tmp_path / "b.jsonl"
    write_jsonl(path, [_item(0, "问题一"), record])
    with pytest.raises(InputError, match=rf"b\.jsonl:2: field '{field}'"):
        load_benchmark_items([path])


def test_duplicate_benchmark_id_is_refused(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(a, [_item(0, "问题一")])
    write_jsonl(b, [_item(0, "问题二")])
    with pytest.raises(InputError, match="duplicate benchmark id"):
        load_benchmark_items([a, b])


def test_the_normaliser_folds_traditional_and_invisible_characters():
    """One normal form for benchmark items and samples: a Traditional-character copy, one with
    zero-width spaces inside words, and a full-width one all fold into the Simplified original;
    light_normalise keeps token breaks (where the guard's option boundaries come from)."""
    from evalsel.guard.leak import item_of, light_normalise

    original = "有机磷杀虫药中毒的特效解毒药是阿托品和碘解磷定"
    assert normalise("有機磷殺蟲藥中毒的特效解毒藥是阿托品和碘解磷定") == normalise(original)
    assert normalise("有机\u200b磷杀\u200d虫药中毒的特效解毒药是阿托品和碘解磷定\u00ad") == normalise(original)
    assert normalise("ＡＢＣ，有机磷") == "abc有机磷"
    assert light_normalise("血压130/70mmHg，心率 80次/分") == "血压130 70mmhg 心率 80次 分"
    assert light_normalise("30, 40,50") == "30 40 50"
    # Simplified text is left as it is
    assert normalise("后来乾隆皇帝") == normalise("後來乾隆皇帝")
    item = item_of(_item(0, "甲狀腺功能亢進症最常見的病因是"))
    assert item.segments[0] == normalise("甲状腺功能亢进症最常见的病因是")
