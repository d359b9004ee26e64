"""Benchmark loading: C-Eval rows (hub and local JSONL/CSV), column mapping, 2-5 options, validation errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evalsel.core.io import InputError, load_jsonl
from evalsel.data.benchmark import load_benchmark, normalise_split, resolve_columns, run_benchmark_fetch

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["clinical_medicine", "basic_medicine", "physician"]


def row(i, answer="A", **kw):
    r = {
        "id": i,
        "question": f"第{i}题：成人心肺复苏的按压频率是____",
        "A": "100~120次/分",
        "B": "60~80次/分",
        "C": "80~100次/分",
        "D": "140次/分以上",
        "answer": answer,
        "explanation": "",
    }
    r.update(kw)
    return r


def split(rows, split_name="val", columns=None, where="f.jsonl"):
    return normalise_split(
        ((i + 1, r) for i, r in enumerate(rows)),
        subject="physician",
        split=split_name,
        columns=resolve_columns(columns),
        where=where,
    )


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


# --------------------------------------------------------------------------- row normalisation (shared by hub and local)


def test_ceval_row_is_normalised():
    (rec,) = split([row(7, answer=" b ", explanation=" 指南推荐。 ")])
    assert rec == {
        "id": "physician/val/7",
        "subject": "physician",
        "split": "val",
        "question": "第7题：成人心肺复苏的按压频率是____",
        "choices": ["100~120次/分", "60~80次/分", "80~100次/分", "140次/分以上"],
        "answer": "B",
        "explanation": "指南推荐。",
    }


@pytest.mark.parametrize(
    "options, n",
    [
        ({"C": "", "D": ""}, 2),  # empty at the end
        ({"C": None, "D": None}, 2),
        ({"D": ""}, 3),
        ({"E": "200次/分"}, 5),
        ({}, 4),
    ],
)
def test_two_to_five_options(options, n):
    r = row(0, **options)
    (rec,) = split([r])
    assert len(rec["choices"]) == n


def test_missing_option_keys_count_as_absent():
    r = {"id": 0, "question": "对还是错？____", "A": "对", "B": "错", "answer": "B"}
    (rec,) = split([r])
    assert rec["choices"] == ["对", "错"] and rec["answer"] == "B" and rec["explanation"] == ""


@pytest.mark.parametrize(
    "bad, field, message",
    [
        (row(0, answer="E"), "answer", "answer 'E' is not among the question's options (A, B, C, D)"),
        (row(0, answer="D", D=""), "answer", "answer 'D' is not among the question's options (A, B, C)"),
        (row(0, answer="X"), "answer", "not among the question's options"),
        (row(0, B="", C="", D=""), "options", "fewer than 2 options"),
        (row(0, B=""), "B", "option is empty but a later option is not"),
        (row(0, question="  "), "question", "missing or empty question"),
    ],
)
def test_bad_rows_name_file_line_and_field(bad, field, message):
    rows = [row(10), row(11), bad]
    with pytest.raises(InputError) as exc:
        split(rows, where="bench/val/physician.jsonl")
    assert exc.value.path == "bench/val/physician.jsonl" and exc.value.line == 3 and exc.value.field == field
    assert message in str(exc.value)
    assert str(exc.value).startswith(f"bench/val/physician.jsonl:3: field '{field}': ")


def test_duplicate_ids_are_refused():
    with pytest.raises(InputError, match=r"f\.jsonl:3: field 'id': duplicate id 'physician/val/1' \(first at line 2\)"):
        split([row(0), row(1), row(1)])


def test_a_split_without_answers_is_refused():
    with pytest.raises(InputError, match="split 'test' has no answers"):
        split([row(0, answer=""), row(1, answer=None)], split_name="test")
    with pytest.raises(InputError) as exc:
        split([row(0), row(1, answer="")])
    assert exc.value.line == 2 and exc.value.field == "answer"


def test_ids_default_to_the_row_position():
    rows = [{k: v for k, v in row(i).items() if k != "id"} for i in range(3)]
    assert [r["id"] for r in split(rows)] == ["physician/val/0", "physician/val/1", "physician/val/2"]


def test_column_mapping_and_a_list_column():
    rows = [{"qid": "q1", "stem": "下列哪项正确？", "opts": ["甲", "乙", "丙"], "key": "c", "why": "因为丙。"}]
    (rec,) = split(
        rows, columns={"id": "qid", "question": "stem", "options": "opts", "answer": "key", "explanation": "why"}
    )
    assert rec["id"] == "physician/val/q1" and rec["choices"] == ["甲", "乙", "丙"] and rec["answer"] == "C"
    assert rec["explanation"] == "因为丙。"
    with pytest.raises(InputError, match="unknown column key"):
        resolve_columns({"stem": "question"})
    with pytest.raises(InputError, match="need 2 to 5 column names"):
        resolve_columns({"options": ["A"]})


# --------------------------------------------------------------------------- local files and the hub


def test_local_jsonl_several_splits_in_order(tmp_path):
    write_jsonl(tmp_path / "dev" / "physician.jsonl", [row(0), row(1, answer="C")])
    write_jsonl(tmp_path / "val" / "physician.jsonl", [row(0, answer="D")])
    recs = load_benchmark(
        "physician", ["val", "dev"], "local", local_path=str(tmp_path / "{split}" / "{subject}.jsonl")
    )
    assert [r["id"] for r in recs] == ["physician/val/0", "physician/dev/0", "physician/dev/1"]
    assert [r["answer"] for r in recs] == ["D", "A", "C"]


def test_local_errors(tmp_path):
    pattern = str(tmp_path / "{split}" / "{subject}.jsonl")
    with pytest.raises(InputError, match=r"val/physician\.jsonl: file not found"):
        load_benchmark("physician", ["val"], "local", local_path=pattern)
    write_jsonl(tmp_path / "val" / "physician.jsonl", [row(0), '{"id": 1, "question": '])
    with pytest.raises(InputError, match=r"val/physician\.jsonl:2: malformed JSON"):
        load_benchmark("physician", ["val"], "local", local_path=pattern)
    with pytest.raises(InputError, match=r"lacks \{split\}"):
        load_benchmark("physician", ["val"], "local", local_path=str(tmp_path / "{subject}.jsonl"))
    with pytest.raises(InputError, match="unknown source"):
        load_benchmark("physician", ["val"], "web")
    with pytest.raises(InputError, match="no splits"):
        load_benchmark("physician", [], "local", local_path=pattern)
    write_jsonl(tmp_path / "empty" / "physician.jsonl", [])
    with pytest.raises(InputError, match="has no rows"):
        load_benchmark("physician", ["empty"], "local", local_path=pattern)


def test_local_csv_with_a_column_mapping(tmp_path):
    path = tmp_path / "physician_val.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["编号", "题目", "选项一", "选项二", "选项三", "答案"])
        w.writerow(["a", "过敏性休克首选____", "肾上腺素", "多巴胺", "", "A"])
        w.writerow(["b", "多行\n题干____", "对", "错", "不确定", "c"])  # a quoted field spanning two lines
        w.writerow(["c", "下一题____", "甲", "乙", "", "C"])
    columns = {"id": "编号", "question": "题目", "answer": "答案", "options": ["选项一", "选项二", "选项三"]}
    pattern = str(tmp_path / "{subject}_{split}.csv")
    with pytest.raises(InputError) as exc:
        load_benchmark("physician", ["val"], "local", local_path=pattern, columns=columns)
    assert exc.value.line == 5 and exc.value.field == "答案"  # line numbers count the embedded newline
    path.write_text(
        path.read_text(encoding="utf-8").replace("c,下一题____,甲,乙,,C", "c,下一题____,甲,乙,,B"), encoding="utf-8"
    )
    recs = load_benchmark("physician", ["val"], "local", local_path=pattern, columns=columns)
    assert [r["choices"] for r in recs] == [["肾上腺素", "多巴胺"], ["对", "错", "不确定"], ["甲", "乙"]]
    assert [r["id"] for r in recs] == ["physician/val/a", "physician/val/b", "physician/val/c"]
    assert recs[1]["question"] == "多行\n题干____" and recs[1]["answer"] == "C"
    with pytest.raises(InputError, match=r"physician_val\.csv:1: field 'stem': column not in the header"):
        load_benchmark("physician", ["val"], "local", local_path=pattern, columns={**columns, "question": "stem"})


def test_ceval_parquet_layout_through_the_real_builder(hub_mirror):
    """C-Eval's hub layout (one Parquet folder per subject) read by datasets' parquet builder."""
    import pyarrow.parquet as pq

    recs = load_benchmark("physician", ["dev", "val"], "hf", hub_mirror=hub_mirror)
    table = pq.read_table(hub_mirror / "ceval/ceval-exam/physician/val-00000-of-00001.parquet")
    assert str(table.schema.field("id").type) == "int32"
    val = [r for r in recs if r["split"] == "val"]
    assert len(val) == table.num_rows and val[0]["id"] == "physician/val/0"
    assert val[0]["question"] == table.column("question")[0].as_py()
    assert all(len(r["choices"]) == 4 and r["answer"] in "ABCD" for r in recs)
    # the public test split has no answers: refused as a scored split, naming the hub source
    with pytest.raises(
        InputError, match=r"hf:ceval/ceval-exam:physician:test: field 'answer': split 'test' has no answers"
    ):
        load_benchmark("physician", ["test"], "hf", hub_mirror=hub_mirror)
    # ... but it can be a recall-only split: its questions come with answer null
    test = load_benchmark("physician", ["test", "val"], "hf", hub_mirror=hub_mirror, unscored_splits=["test"])
    assert {r["answer"] for r in test if r["split"] == "test"} == {None}
    assert all(r["answer"] in "ABCD" for r in test if r["split"] == "val")
    with pytest.raises(InputError, match="no file of ceval/ceval-exam matches benchmark.hf_data_files"):
        load_benchmark("surgery", ["val"], "hf", hub_mirror=hub_mirror)


def test_run_benchmark_fetch_writes_atomically(tmp_path):
    write_jsonl(tmp_path / "val" / "physician.jsonl", [row(0), row(1, answer="D")])
    out = tmp_path / "results" / "benchmark" / "physician.jsonl"
    recs = run_benchmark_fetch(
        out, "physician", ["val"], "local", local_path=str(tmp_path / "{split}" / "{subject}.jsonl")
    )
    assert load_jsonl(out) == recs and len(recs) == 2
    write_jsonl(tmp_path / "val" / "physician.jsonl", [row(0), row(1, answer="F")])
    with pytest.raises(InputError):
        run_benchmark_fetch(
            out, "physician", ["val"], "local", local_path=str(tmp_path / "{split}" / "{subject}.jsonl")
        )
    assert load_jsonl(out) == recs  # the failed run left the previous file untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["physician.jsonl"]


# --------------------------------------------------------------------------- the demo benchmark and real C-Eval


def test_demo_benchmark():
    pattern = str(REPO / "demo" / "data" / "benchmark" / "{split}" / "{subject}.jsonl")
    n_options = set()
    for subject in SUBJECTS:
        recs = load_benchmark(subject, ["dev", "val"], "local", local_path=pattern)
        assert sum(r["split"] == "dev" for r in recs) >= 3 and sum(r["split"] == "val" for r in recs) >= 12
        assert all(r["explanation"] for r in recs if r["split"] == "dev")
        n_options |= {len(r["choices"]) for r in recs}
        assert len({r["answer"] for r in recs}) >= 4  # answer letters are spread
    assert n_options == {2, 3, 4, 5}


@pytest.mark.shared_data
def test_real_ceval_val_through_the_local_loader(shared_data):
    pattern = str(shared_data / "ceval_medical" / "{split}" / "{subject}.jsonl")
    counts = {}
    for subject in SUBJECTS:
        recs = load_benchmark(subject, ["val"], "local", local_path=pattern)
        counts[subject] = len(recs)
        assert all(r["answer"] in "ABCD" and len(r["choices"]) == 4 and r["question"] for r in recs)
        assert len({r["id"] for r in recs}) == len(recs)
    assert counts == {"clinical_medicine": 22, "basic_medicine": 19, "physician": 49}


# --------------------------------------------------------------------------- answers, option columns, encodings


def _write_csv(path, header, rows, encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def test_a_multi_letter_answer_is_refused_at_its_source_line(tmp_path):
    _write_csv(
        tmp_path / "val_s.csv",
        ["id", "question", "A", "B", "C", "D", "answer"],
        [[1, "问题一", "甲", "乙", "丙", "丁", "A"], [2, "问题二", "甲", "乙", "丙", "丁", "BC"]],
    )
    with pytest.raises(InputError) as exc:
        load_benchmark("s", ["val"], "local", local_path=str(tmp_path / "{split}_{subject}.csv"))
    assert exc.value.line == 3 and exc.value.field == "answer"
    assert "multiple-answer" in exc.value.problem


def test_a_sixth_option_column_is_refused(tmp_path):
    _write_csv(
        tmp_path / "val_s.csv",
        ["id", "question", "A", "B", "C", "D", "E", "F", "answer"],
        [[1, "问题一", "甲", "乙", "丙", "丁", "戊", "己", "F"]],
    )
    with pytest.raises(InputError) as exc:
        load_benchmark("s", ["val"], "local", local_path=str(tmp_path / "{split}_{subject}.csv"))
    assert exc.value.field == "F" and "at most 5 options" in exc.value.problem


def test_an_option_column_outside_a_short_mapping_is_refused(tmp_path):
    _write_csv(
        tmp_path / "val_s.csv",
        ["id", "question", "A", "B", "C", "D", "E", "answer"],
        [[1, "问题一", "甲", "乙", "丙", "丁", "戊", "A"]],
    )
    cols = {"options": ["A", "B", "C", "D"]}
    with pytest.raises(InputError, match="add it to benchmark.local.columns.options") as exc:
        load_benchmark("s", ["val"], "local", local_path=str(tmp_path / "{split}_{subject}.csv"), columns=cols)
    assert exc.value.field == "E"


def test_a_gbk_benchmark_csv_is_named_and_reads_with_its_encoding(tmp_path):
    _write_csv(
        tmp_path / "val_s.csv",
        ["id", "question", "A", "B", "answer"],
        [[1, "发热的原因？", "感染", "骨折", "A"]],
        encoding="gbk",
    )
    pattern = str(tmp_path / "{split}_{subject}.csv")
    with pytest.raises(InputError) as exc:
        load_benchmark("s", ["val"], "local", local_path=pattern)
    assert exc.value.line == 2 and "GB18030" in exc.value.problem
    (rec,) = load_benchmark("s", ["val"], "local", local_path=pattern, encoding="gb18030")
    assert rec["question"] == "发热的原因？"
