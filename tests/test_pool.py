"""Pool preparation: format detection, normalisation, content ids, dedup and skip counting, sharding, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from evalsel.core.io import InputError, read_json
from evalsel.data.pool import (
    BadRecord,
    SkipRecord,
    conversation_id,
    detect_format,
    load_pool_dir,
    normalise_record,
    run_pool_prepare,
)

REPO = Path(__file__).resolve().parents[1]
Q, A = "高血压患者每天吃盐不宜超过多少克？", "一般建议每人每天食盐不超过5克。"
SYSTEM = "你是一名医生。"


def norm(record, fmt="auto", **kw):
    kw.setdefault("source", "s")
    kw.setdefault("medical", True)
    return normalise_record(record, fmt, **kw)


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


def qa(i: int) -> dict:
    return {
        "question": f"第{i}个问题：糖尿病患者如何控制血糖？",
        "answer": f"第{i}个回答：饮食控制、规律运动并遵医嘱用药。",
    }


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- detection and normalisation


@pytest.mark.parametrize(
    "record, fmt",
    [
        ({"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]}, "sharegpt"),
        ({"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]}, "messages"),
        ({"instruction": Q, "input": "", "output": A}, "alpaca"),
        ({"instruction": Q, "output": A}, "alpaca"),
        ({"question": Q, "answer": A}, "qa"),
        ({"query": Q, "response": A}, "qa"),
        ({"prompt": Q, "completion": A}, None),
        ({"question": Q}, None),
        (["not", "a", "dict"], None),
    ],
)
def test_detect_format(record, fmt):
    assert detect_format(record) == fmt


def test_every_format_normalises_to_the_same_sample_and_id():
    records = [
        {"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]},
        {"conversations": [{"from": "user", "value": Q}, {"from": "assistant", "value": A}]},
        {"conversations": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]},
        {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": Q}]}, {"role": "assistant", "content": A}]},
        {"instruction": Q, "input": "", "output": A},
        {"instruction": "", "input": Q, "output": A},
        {"question": f"  {Q}\n", "answer": A},
        {"query": Q, "response": A},
    ]
    out = [norm(r, source=f"src{i}", origin=f"f:{i}") for i, r in enumerate(records)]
    ids = {o["id"] for o in out}
    assert len(ids) == 1, "the same conversation must get the same id in any format and source"
    for i, o in enumerate(out):
        assert o["conversations"] == [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]
        assert o["system"] == "" and o["text"] == Q and o["source"] == f"src{i}" and o["origin"] == f"f:{i}"
        assert o["medical"] is True
    # The id is sha1-16 of the canonical JSON of (system, conversations): a documented contract.
    canon = json.dumps(
        {"system": "", "conversations": out[0]["conversations"]},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    assert out[0]["id"] == hashlib.sha1(canon.encode()).hexdigest()[:16]
    assert (
        conversation_id("", [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]) == "c0049128ce5c5649"
    )  # pinned: a change would invalidate every cached vector


def test_system_prompt_is_part_of_the_identity():
    plain = norm({"question": Q, "answer": A})
    with_system = [
        norm({"question": Q, "answer": A, "system": SYSTEM}),
        norm({"instruction": Q, "input": "", "output": A, "system": SYSTEM}),
        norm(
            {
                "conversations": [
                    {"from": "system", "value": SYSTEM},
                    {"from": "human", "value": Q},
                    {"from": "gpt", "value": A},
                ]
            }
        ),
        norm(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": Q},
                    {"role": "assistant", "content": A},
                ]
            }
        ),
    ]
    assert {r["system"] for r in with_system} == {SYSTEM}
    assert len({r["id"] for r in with_system}) == 1
    assert with_system[0]["id"] != plain["id"]
    assert all(t["from"] != "system" for r in with_system for t in r["conversations"])


def test_multi_turn_sharegpt_messages_and_alpaca_history():
    turns = [
        ("胸痛怎么办？", "先休息并尽快就医。"),
        ("需要做什么检查？", "心电图和心肌酶。"),
        ("要住院吗？", "视检查结果而定。"),
    ]
    share = {
        "conversations": [t for q, a in turns for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]
    }
    msgs = {
        "messages": [{"role": "system", "content": SYSTEM}]
        + [t for q, a in turns for t in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    }
    alpaca = {
        "instruction": turns[2][0],
        "input": "",
        "output": turns[2][1],
        "history": [list(t) for t in turns[:2]],
        "system": SYSTEM,
    }
    s, m, a = norm(share), norm(msgs), norm(alpaca)
    assert [t["from"] for t in s["conversations"]] == ["human", "gpt"] * 3
    assert s["conversations"][4]["value"] == "要住院吗？"
    assert m["conversations"] == a["conversations"] == s["conversations"]
    assert m["id"] == a["id"] != s["id"]  # same turns, but these two carry a system prompt
    assert s["text"] == "胸痛怎么办？\n需要做什么检查？\n要住院吗？"
    full = norm(share, embed_text="prompt_response")["text"]
    assert full.startswith("胸痛怎么办？\n先休息并尽快就医。\n需要做什么检查？")


def test_alpaca_input_is_appended_to_the_instruction():
    r = norm({"instruction": "请判断下列说法是否正确。", "input": "感冒需要用抗生素。", "output": "不正确。"})
    assert r["conversations"][0]["value"] == "请判断下列说法是否正确。\n感冒需要用抗生素。"


def test_text_is_cut_to_max_chars_and_counted():
    from collections import Counter

    mods = Counter()
    r = norm({"question": "问" * 50, "answer": A}, max_chars=20, modified=mods)
    assert r["text"] == "问" * 20 and r["conversations"][0]["value"] == "问" * 50
    assert mods["text_truncated"] == 1


def test_turn_cleanup_is_counted():
    from collections import Counter

    mods = Counter()
    rec = {
        "conversations": [
            {"from": "gpt", "value": "您好，请问有什么可以帮您？"},
            {"from": "human", "value": "我头痛"},
            {"from": "human", "value": "已经三天了"},
            {"from": "gpt", "value": "  "},
            {"from": "gpt", "value": "建议测量血压。"},
            {"from": "human", "value": "好的谢谢"},
        ]
    }
    r = norm(rec, modified=mods)
    assert r["conversations"] == [
        {"from": "human", "value": "我头痛\n已经三天了"},
        {"from": "gpt", "value": "建议测量血压。"},
    ]
    assert mods == Counter(
        leading_assistant_turns_dropped=1,
        consecutive_turns_merged=1,
        empty_turns_dropped=1,
        trailing_user_turns_dropped=1,
    )


@pytest.mark.parametrize(
    "record, reason, kw",
    [
        ({"instruction": "", "input": "", "output": ""}, "empty", {}),
        ({"conversations": [{"from": "gpt", "value": "你好"}]}, "no_user_turn", {}),
        ({"conversations": [{"from": "human", "value": "在吗？"}]}, "no_assistant_turn", {}),
        ({"question": Q, "answer": ""}, "no_assistant_turn", {}),
        ({"question": "痛", "answer": A}, "too_short_prompt", {}),
        ({"question": Q, "answer": "嗯"}, "too_short_response", {}),
        ({"question": Q, "answer": A}, "too_short_response", {"min_chars": len(A) + 1}),
    ],
)
def test_unusable_records_are_skipped_with_a_reason(record, reason, kw):
    with pytest.raises(SkipRecord) as exc:
        norm(record, **kw)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    "record, fmt, reason, field",
    [
        ({"prompt": Q, "completion": A}, "auto", "unrecognised_format", None),
        ({"question": Q, "answer": A}, "sharegpt", "unrecognised_format", "conversations"),
        ({"conversations": "not a list"}, "auto", "invalid_record", "conversations"),
        (
            {"conversations": [{"from": "human", "value": Q}, {"from": "robot", "value": A}]},
            "auto",
            "invalid_record",
            "conversations[1].from",
        ),
        (
            {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": 5}]},
            "auto",
            "invalid_record",
            "messages[1].content",
        ),
        (
            {"conversations": [{"from": "human", "value": Q}, {"from": "system", "value": "x"}]},
            "auto",
            "invalid_record",
            "conversations[1]",
        ),
        ({"instruction": Q, "output": A, "history": [["only one"]]}, "auto", "invalid_record", "history[0]"),
        ({"instruction": ["list"], "output": A}, "auto", "invalid_record", "instruction"),
    ],
)
def test_bad_records_name_the_field(record, fmt, reason, field):
    with pytest.raises(BadRecord) as exc:
        norm(record, fmt)
    assert exc.value.reason == reason and exc.value.field == field


# --------------------------------------------------------------------------- preparing a source


def test_prepare_counts_every_skipped_record(tmp_path):
    records = [qa(i) for i in range(6)]
    records += [qa(1), qa(2)]  # exact duplicates
    records += [{"question": "痛", "answer": A}, {"question": Q, "answer": "嗯"}]  # too short
    records += [{"instruction": "", "input": "", "output": ""}]  # empty
    records += [{"conversations": [{"from": "human", "value": "在吗？"}]}]  # no assistant turn
    records += [{"instruction": qa(3)["question"], "input": "", "output": qa(3)["answer"]}]  # same sample, other format
    src = write_jsonl(tmp_path / "pool.jsonl", records)
    man = run_pool_prepare(tmp_path / "out" / "demo", "demo", path=str(src), shard_size=100)
    st = man["statistics"]
    assert man["count"] == st["kept"] == 6
    assert st["skipped"] == {
        "duplicate": 3,
        "too_short_prompt": 1,
        "too_short_response": 1,
        "empty": 1,
        "no_assistant_turn": 1,
    }
    assert st["read"] == len(records) == st["kept"] + st["skipped_total"]
    assert st["first_skipped"]["duplicate"] == f"{src}:7"
    assert st["formats"] == {"qa": 6}
    assert st["modified"] == {}  # changes to records that were then skipped are not counted
    recs = list(load_pool_dir(tmp_path / "out" / "demo"))
    assert [r["origin"] for r in recs] == [f"{src}:{i}" for i in range(1, 7)]
    assert len({r["id"] for r in recs}) == 6


def test_sharding_and_manifest(tmp_path):
    src = write_jsonl(tmp_path / "pool.jsonl", [qa(i) for i in range(25)])
    out = tmp_path / "results" / "pool" / "src"
    man = run_pool_prepare(out, "src", path=str(src), shard_size=10, medical=False, embed_text="prompt_response")
    assert man["shards"] == ["shard-00000", "shard-00001", "shard-00002"]
    assert man["source"] == "src" and man["count"] == 25
    assert read_json(out / "manifest.json") == man
    sizes = [sum(1 for _ in open(out / f"{s}.jsonl", encoding="utf-8")) for s in man["shards"]]
    assert sizes == man["statistics"]["records_per_shard"] == [10, 10, 5]
    recs = list(load_pool_dir(out))
    assert [r["conversations"][0]["value"] for r in recs] == [qa(i)["question"] for i in range(25)]
    assert all(r["medical"] is False and r["source"] == "src" and "_format" not in r for r in recs)
    assert recs[0]["text"] == qa(0)["question"] + "\n" + qa(0)["answer"]
    assert leftovers(out.parent) == []
    # A rerun replaces the whole directory: no stale shard survives.
    run_pool_prepare(out, "src", path=str(src), shard_size=100)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.jsonl"]
    assert leftovers(out.parent) == []


def test_max_samples_bounds_the_records_read(tmp_path):
    src = write_jsonl(tmp_path / "pool.jsonl", [qa(i) for i in range(30)] + ["{broken"])
    man = run_pool_prepare(tmp_path / "o", "s", path=str(src), max_samples=12, shard_size=5)
    assert man["statistics"]["read"] == man["count"] == 12 and len(man["shards"]) == 3


def test_malformed_json_line_names_file_and_line_and_leaves_nothing(tmp_path):
    src = write_jsonl(tmp_path / "pool.jsonl", [qa(0), qa(1), '{"question": "x", "answer": ', qa(3)])
    out = tmp_path / "out" / "s"
    with pytest.raises(InputError) as exc:
        run_pool_prepare(out, "s", path=str(src), shard_size=1)
    assert exc.value.path == str(src) and exc.value.line == 3 and "malformed JSON" in str(exc.value)
    assert str(exc.value).startswith(f"{src}:3:")
    assert not out.exists() and leftovers(out.parent) == []


def test_unrecognised_record_is_an_error_naming_file_line_and_field(tmp_path):
    src = write_jsonl(tmp_path / "pool.jsonl", [qa(0), {"prompt": "x", "completion": "y"}])
    out = tmp_path / "out" / "s"
    with pytest.raises(InputError) as exc:
        run_pool_prepare(out, "s", path=str(src))
    assert exc.value.line == 2 and "unrecognised record (keys: completion, prompt)" in str(exc.value)
    assert not out.exists() and leftovers(out.parent) == []

    src2 = write_jsonl(
        tmp_path / "pool2.jsonl", [{"conversations": [{"from": "human", "value": Q}, {"from": "bot?", "value": A}]}]
    )
    with pytest.raises(InputError, match=r"pool2\.jsonl:1: field 'conversations\[1\]\.from': unknown role 'bot\?'"):
        run_pool_prepare(out, "s", path=str(src2))

    src3 = write_jsonl(tmp_path / "pool3.jsonl", [qa(0)])
    with pytest.raises(InputError, match=r"pool3\.jsonl:1: field 'instruction': not a alpaca record"):
        run_pool_prepare(out, "s", path=str(src3), fmt="alpaca")


def test_on_bad_record_skip_counts_them(tmp_path):
    src = write_jsonl(
        tmp_path / "pool.jsonl",
        [
            qa(0),
            {"prompt": "x", "completion": "y"},
            42,
            {"messages": [{"role": "tool", "content": "x"}]},
            qa(1),
        ],
    )
    man = run_pool_prepare(tmp_path / "o", "s", path=str(src), on_bad_record="skip")
    st = man["statistics"]
    assert st["skipped"] == {"unrecognised_format": 2, "invalid_record": 1}
    assert st["first_skipped"]["invalid_record"] == f"{src}:4"
    assert st["kept"] == 2 and st["read"] == 5 == st["kept"] + st["skipped_total"]


def test_empty_pool_is_an_error_and_leaves_nothing(tmp_path):
    src = write_jsonl(tmp_path / "pool.jsonl", [{"question": "痛", "answer": A}, {"prompt": "x"}])
    out = tmp_path / "out" / "s"
    with pytest.raises(InputError, match=r"no record kept out of 2 read"):
        run_pool_prepare(out, "s", path=str(src), on_bad_record="skip")
    assert not out.exists() and leftovers(out.parent) == []


def test_failed_rerun_keeps_the_previous_output(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [qa(0)])
    bad = write_jsonl(tmp_path / "bad.jsonl", [qa(0), "not json"])
    out = tmp_path / "out" / "s"
    run_pool_prepare(out, "s", path=str(good))
    with pytest.raises(InputError):
        run_pool_prepare(out, "s", path=str(bad))
    assert read_json(out / "manifest.json")["count"] == 1 and leftovers(out.parent) == []


@pytest.mark.parametrize(
    "kw, field",
    [
        ({}, "pool.sources[s]"),
        ({"path": "a.jsonl", "hf_name": "x/y"}, "pool.sources[s]"),
        ({"path": "a.txt"}, "pool.sources[s].path"),
        ({"path": "a.jsonl", "fmt": "chatml"}, "pool.sources[s].format"),
        ({"path": "a.jsonl", "on_bad_record": "ignore"}, "pool.on_bad_record"),
        ({"path": "a.jsonl", "embed_text": "response"}, "pool.embed_text"),
    ],
)
def test_bad_settings_are_refused_before_reading(tmp_path, kw, field):
    with pytest.raises(InputError) as exc:
        run_pool_prepare(tmp_path / "o", "s", **kw)
    assert exc.value.field == field
    assert not (tmp_path / "o").exists()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="pool file not found"):
        run_pool_prepare(tmp_path / "o", "s", path=str(tmp_path / "nope.jsonl"))


def test_json_csv_and_parquet_sources_match_jsonl(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    records = [
        {"instruction": "什么是贫血？", "input": "", "output": "血红蛋白低于正常值。"},
        {"instruction": "解释下列名词", "input": "黄疸", "output": "皮肤和巩膜发黄。", "system": SYSTEM},
        {"instruction": "血压多少算高？", "input": "", "output": "140/90mmHg及以上。"},
    ]
    sharegpt = [
        {
            "conversations": [
                {"from": "human", "value": "发烧了怎么办？"},
                {"from": "gpt", "value": "多喝水，必要时退热。"},
            ]
        }
    ]

    def ids(path, **kw):
        out = tmp_path / "out" / Path(path).name.replace(".", "_")
        run_pool_prepare(out, "s", path=str(path), **kw)
        return [(r["id"], r["origin"].rsplit(":", 1)[1]) for r in load_pool_dir(out)]

    want = ids(write_jsonl(tmp_path / "p.jsonl", records))
    (tmp_path / "p.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    assert ids(tmp_path / "p.json") == want
    pd.DataFrame(records).to_parquet(tmp_path / "p.parquet")  # the missing system becomes None
    assert ids(tmp_path / "p.parquet") == want
    with open(tmp_path / "p.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["instruction", "input", "output", "system"])
        w.writeheader()
        w.writerows(records)
    assert [i for i, _ in ids(tmp_path / "p.csv")] == [i for i, _ in want]
    # Nested lists in a CSV cell are JSON text.
    with open(tmp_path / "c.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["conversations"])
        w.writeheader()
        w.writerow({"conversations": json.dumps(sharegpt[0]["conversations"], ensure_ascii=False)})
    # the same record; a CSV origin names its file line (the header is line 1)
    assert ids(tmp_path / "c.csv") == [(i, "2") for i, _ in ids(write_jsonl(tmp_path / "c.jsonl", sharegpt))]


def test_json_list_errors(tmp_path):
    (tmp_path / "d.json").write_text('{"data": []}', encoding="utf-8")
    with pytest.raises(InputError, match="expected a JSON list"):
        run_pool_prepare(tmp_path / "o", "s", path=str(tmp_path / "d.json"))
    (tmp_path / "e.json").write_text('[\n{"question": "x",\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"e\.json:3: malformed JSON"):
        run_pool_prepare(tmp_path / "o", "s", path=str(tmp_path / "e.json"))


def test_hub_sources_stream_through_the_packaged_builder(tmp_path, hub_mirror):
    """The default source (shibing624/medical, finetune/train_zh_0.json beside medical.py) read by
    the real datasets code from a mirror of the repository: no loading script is looked up."""
    import datasets

    man = run_pool_prepare(
        tmp_path / "o",
        "med",
        hf_name="shibing624/medical",
        hf_data_files="finetune/train_zh_0.json",
        split="train",
        max_samples=7,
        shard_size=3,
        hub_mirror=hub_mirror,
    )
    assert man["count"] == 7 and len(man["shards"]) == 3
    recs = list(load_pool_dir(tmp_path / "o"))
    assert [r["origin"] for r in recs][:2] == ["hf:shibing624/medical:train:0", "hf:shibing624/medical:train:1"]
    first = json.loads(
        (hub_mirror / "shibing624/medical/finetune/train_zh_0.json").read_text(encoding="utf-8").splitlines()[0]
    )
    assert recs[0]["conversations"][0]["value"] == first["instruction"]
    # globs and lists of files work the same way
    man = run_pool_prepare(
        tmp_path / "o2",
        "med",
        hf_name="shibing624/medical",
        hf_data_files=["finetune/valid_zh_*.json", "finetune/test_zh_0.json"],
        hub_mirror=hub_mirror,
    )
    assert man["count"] == 10
    # what the old call did: datasets itself refuses the repository because of its script
    with pytest.raises(RuntimeError, match="Dataset scripts are no longer supported"):
        datasets.load_dataset(str(hub_mirror / "shibing624" / "medical"), split="train", streaming=True)


def test_hub_errors_name_the_source_and_what_to_set(tmp_path, hub_mirror, monkeypatch):
    # a script-only repository read without hf_data_files: the setting and the candidate files
    with pytest.raises(InputError) as exc:
        run_pool_prepare(tmp_path / "o", "med", hf_name="shibing624/medical", hub_mirror=hub_mirror)
    msg = str(exc.value)
    assert "hf:shibing624/medical:train" in msg and "set hf_data_files" in msg
    assert "finetune/train_zh_0.json" in msg
    # a pattern matching nothing
    with pytest.raises(InputError, match="no file of shibing624/medical matches hf_data_files.*train_zh_0.json"):
        run_pool_prepare(
            tmp_path / "o",
            "med",
            hf_name="shibing624/medical",
            hf_data_files="finetune/nope.json",
            hub_mirror=hub_mirror,
        )
    # a repository missing from the mirror
    with pytest.raises(InputError, match="not in the hub mirror"):
        run_pool_prepare(tmp_path / "o", "x", hf_name="someone/absent", hub_mirror=hub_mirror)
    # the hub itself, offline: one line saying what to do
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="cannot reach the Hugging Face Hub.*set hub_mirror"):
        run_pool_prepare(tmp_path / "o", "med", hf_name="shibing624/medical", hf_data_files="finetune/train_zh_0.json")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- the demo pool and the real data


def test_demo_pool_files(tmp_path):
    pool = REPO / "demo" / "data" / "pool"
    expected = {
        "medical_alpaca.jsonl": "alpaca",
        "medical_consult_qa.jsonl": "qa",
        "medical_dialogue_sharegpt.jsonl": "sharegpt",
        "medical_chat_messages.jsonl": "messages",
        "general_sharegpt.jsonl": "sharegpt",
    }
    assert sorted(p.name for p in pool.glob("*.jsonl")) == sorted(expected)
    reasons = set()
    ids: dict[str, set] = {}
    for name, fmt in expected.items():
        man = run_pool_prepare(tmp_path / name, name[:-6], path=str(pool / name), shard_size=50)
        st = man["statistics"]
        assert st["formats"] == {fmt: st["kept"]}
        assert st["read"] == st["kept"] + st["skipped_total"]
        reasons |= set(st["skipped"])
        ids[name] = {r["id"] for r in load_pool_dir(tmp_path / name)}
    assert {"duplicate", "empty", "too_short_prompt", "too_short_response", "no_assistant_turn"} <= reasons
    # Some samples are in two files (two formats) and share their id.
    assert ids["medical_alpaca.jsonl"] & ids["medical_consult_qa.jsonl"]
    total = sum(len(v) for v in ids.values())
    assert 280 <= total <= 400


def test_demo_pool_has_exactly_one_planted_leak():
    """One pool sample shares a 13-character n-gram with a demo val question: the leak guard's target."""

    def grams(text, n=13):
        return {text[i : i + n] for i in range(len(text) - n + 1)}

    bench = set()
    for path in (REPO / "demo" / "data" / "benchmark" / "val").glob("*.jsonl"):
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            bench |= grams(row["question"])
    hits = [
        line
        for path in (REPO / "demo" / "data" / "pool").glob("*.jsonl")
        for line in open(path, encoding="utf-8")
        if grams(line) & bench
    ]
    assert len(hits) == 1 and "52岁" in hits[0]


@pytest.mark.shared_data
def test_real_pool_files(shared_data, tmp_path):
    """Every real pool file is detected as its format and no record is dropped without a counted reason."""
    expected = {
        "medical_qa_alpaca.jsonl": "alpaca",
        "medical_dialogue_sharegpt.jsonl": "sharegpt",
        "medical_consult_qa.jsonl": "qa",
        "tcm_qa.jsonl": "qa",
        "general_zh_sharegpt.jsonl": "sharegpt",
    }
    known = {"duplicate", "empty", "no_user_turn", "no_assistant_turn", "too_short_prompt", "too_short_response"}
    for name, fmt in expected.items():
        path = shared_data / "pool" / name
        man = run_pool_prepare(
            tmp_path / name, "real", path=str(path), max_samples=3000, shard_size=1000, on_bad_record="error"
        )
        st = man["statistics"]
        with open(path, encoding="utf-8") as fh:
            lines = sum(1 for line in fh if line.strip())
        assert st["read"] == min(3000, lines), name
        assert st["formats"] == {fmt: st["kept"]}, name
        assert st["read"] == st["kept"] + st["skipped_total"], name
        assert set(st["skipped"]) <= known, (name, st["skipped"])
        assert st["kept"] > 0.9 * st["read"], (name, st["skipped"])
        assert sum(1 for _ in load_pool_dir(tmp_path / name)) == st["kept"]


# --------------------------------------------------------------------------- encodings and unreadable lines

GOOD = {"instruction": "什么是贫血？", "input": "", "output": "血红蛋白低于正常值。"}
OTHER = {"instruction": "血压多少算高？", "input": "", "output": "140/90mmHg及以上。"}


def _line(rec, encoding="utf-8") -> bytes:
    return (json.dumps(rec, ensure_ascii=False) + "\n").encode(encoding)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_a_gbk_file_is_named_with_its_line_and_the_encoding_it_looks_like(tmp_path, suffix):
    path = tmp_path / f"gbk{suffix}"
    if suffix == ".jsonl":
        path.write_bytes(_line(GOOD) + _line(OTHER, "gbk"))
        line = 2
    elif suffix == ".json":
        path.write_bytes(
            (
                "[\n" + json.dumps(GOOD, ensure_ascii=False) + ",\n" + json.dumps(OTHER, ensure_ascii=False) + "\n]\n"
            ).encode("gbk")
        )
        line = 2
    else:
        path.write_bytes(b"instruction,input,output\n" + "什么是贫血？,,血红蛋白低于正常值。\n".encode("gbk"))
        line = 2
    with pytest.raises(InputError) as exc:
        run_pool_prepare(tmp_path / "out", "s", path=str(path))
    assert exc.value.path == str(path) and exc.value.line == line
    assert "not valid utf-8" in exc.value.problem and "GB18030" in exc.value.problem
    assert "encoding: gb18030" in exc.value.problem
    # and with the encoding set, the same file reads
    if suffix != ".jsonl":
        manifest = run_pool_prepare(tmp_path / "ok", "s", path=str(path), encoding="gb18030")
        assert manifest["count"] >= 1


def test_skip_counts_undecodable_malformed_and_bom_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + _line(GOOD)  # a BOM on the first line: read
        + b"{not json\n"  # malformed JSON
        + _line(OTHER, "gbk")  # undecodable
        + b"\xef\xbb\xbf"
        + _line({**GOOD, "output": "另一个回答。"})
    )  # a BOM mid-file: read
    with pytest.raises(InputError) as exc:
        run_pool_prepare(tmp_path / "strict", "s", path=str(path))
    assert exc.value.line == 2 and "malformed JSON" in exc.value.problem
    manifest = run_pool_prepare(tmp_path / "out", "s", path=str(path), on_bad_record="skip")
    stats = manifest["statistics"]
    assert manifest["count"] == 2
    assert stats["skipped"] == {"malformed_json": 1, "undecodable": 1}
    assert stats["first_skipped"]["undecodable"].endswith("mixed.jsonl:3")


def test_skip_leaves_an_undecodable_csv_line_out(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(
        b"instruction,input,output\n"
        + "什么是贫血？,,血红蛋白低于正常值。\n".encode("gbk")
        + "血压多少算高？,,140/90mmHg及以上。\n".encode()
    )
    manifest = run_pool_prepare(tmp_path / "out", "s", path=str(path), on_bad_record="skip")
    assert manifest["count"] == 1 and manifest["statistics"]["skipped"] == {"undecodable": 1}
    (rec,) = list(load_pool_dir(tmp_path / "out"))
    assert rec["origin"].endswith("p.csv:3")


def test_no_network_names_the_mirror_whatever_the_http_client(tmp_path):
    """Offline mode not set and no network: the real hub client's exception (httpx.ConnectError
    here, which is not the built-in ConnectionError) still gives the hub_mirror hint. The hub is
    pointed at a closed port on 127.0.0.1, so nothing leaves the machine."""
    import subprocess
    import sys

    import httpx

    from evalsel.core.hub import is_network_error

    try:
        raise RuntimeError("datasets wrapped it") from httpx.ConnectError("[Errno -2] Name or service not known")
    except RuntimeError as exc:
        assert is_network_error(exc)
    assert not is_network_error(ValueError("unknown split"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))},
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONPATH": str(REPO / "src"),
    }
    code = (
        "from evalsel.data.pool import run_pool_prepare\n"
        f"run_pool_prepare({str(tmp_path / 'o')!r}, 'med', hf_name='shibing624/medical', "
        "hf_data_files='finetune/train_zh_0.json')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "cannot reach the Hugging Face Hub for shibing624/medical" in last and "set hub_mirror" in last, proc.stderr[
        -2000:
    ]
