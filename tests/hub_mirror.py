"""Local copies of the Hugging Face dataset repositories the default config reads, in their exact
layout, written from the project's own demo data (never from ../shared):

- ``shibing624/medical``: the loading script ``medical.py`` at the root beside ``README.md``,
  ``finetune/{train,valid,test}_zh_0.json`` (JSON lines of alpaca records despite the suffix),
  ``finetune/train_en_1.json``, ``pretrain/train_encyclopedia.json`` and ``reward/train.json``.
- ``ceval/ceval-exam`` after its Parquet conversion: ``<subject>/{dev,val,test}-00000-of-00001.parquet``
  with columns id (int32), question, A, B, C, D, answer, explanation; the test split's answers
  and explanations are empty strings, as on the hub; a README with one config per subject.

``hub_mirror`` in the config points at the folder; the project then runs the real ``datasets``
builders on it exactly as on ``hf://datasets``.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "data"

MEDICAL_SCRIPT = '''"""Loading script of the dataset (datasets < 4 ran it; datasets 4+ refuses it)."""
import datasets

_URLS = {"finetune": {"train": "finetune/train_zh_0.json"}}


class Medical(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIGS = [datasets.BuilderConfig(name="finetune"), datasets.BuilderConfig(name="pretrain")]
'''


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_medical(root: Path, train: list[dict] | None = None) -> Path:
    """``root/shibing624/medical`` with the demo's alpaca pool as ``finetune/train_zh_0.json``."""
    repo = root / "shibing624" / "medical"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "medical.py").write_text(MEDICAL_SCRIPT, encoding="utf-8")
    (repo / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [zh, en]\n---\n# medical\n", encoding="utf-8")
    # the real files hold exactly these three columns in every record
    rows = (
        train
        if train is not None
        else [
            {k: r.get(k, "") for k in ("instruction", "input", "output")}
            for r in _read_jsonl(DEMO / "pool" / "medical_alpaca.jsonl")
        ]
    )
    _write_jsonl(repo / "finetune" / "train_zh_0.json", rows)
    _write_jsonl(repo / "finetune" / "valid_zh_0.json", rows[:5])
    _write_jsonl(repo / "finetune" / "test_zh_0.json", rows[5:10])
    _write_jsonl(
        repo / "finetune" / "train_en_1.json",
        [{"instruction": "What lowers blood pressure?", "input": "", "output": "Less salt, more exercise."}],
    )
    _write_jsonl(repo / "pretrain" / "train_encyclopedia.json", [{"text": r["output"]} for r in rows[:5]])
    _write_jsonl(
        repo / "reward" / "train.json",
        [
            {"question": r["instruction"], "response_chosen": r["output"], "response_rejected": "不知道。"}
            for r in rows[:5]
        ],
    )
    return repo


CEVAL_COLUMNS = ("id", "question", "A", "B", "C", "D", "answer", "explanation")


def write_ceval(root: Path, subjects=("clinical_medicine", "basic_medicine", "physician")) -> Path:
    """``root/ceval/ceval-exam`` from the demo benchmark: dev and val with answers, test without
    (test holds the demo's dev questions reworded as new items, answers blank)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = root / "ceval" / "ceval-exam"
    schema = pa.schema([("id", pa.int32())] + [(c, pa.string()) for c in CEVAL_COLUMNS[1:]])
    configs = []
    for subject in subjects:
        splits = {}
        for split in ("dev", "val"):
            rows = _read_jsonl(DEMO / "benchmark" / split / f"{subject}.jsonl")
            four = [r for r in rows if all(r.get(c) for c in "ABCD") and not r.get("E")]
            splits[split] = [
                {"id": i, **{c: str(r.get(c) or "") for c in CEVAL_COLUMNS[1:]}} for i, r in enumerate(four)
            ]
        splits["test"] = [
            {**r, "id": i, "question": "（测试）" + r["question"], "answer": "", "explanation": ""}
            for i, r in enumerate(splits["dev"] + splits["val"][:3])
        ]
        for split, rows in splits.items():
            path = repo / subject / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        configs.append(
            f"- config_name: {subject}\n  data_files:\n"
            + "".join(f"  - split: {s}\n    path: {subject}/{s}-*\n" for s in ("test", "val", "dev"))
        )
    (repo / "README.md").write_text(
        "---\nconfigs:\n" + "".join(configs) + "license: cc-by-nc-sa-4.0\n---\n# C-Eval\n", encoding="utf-8"
    )
    return repo


def write_mirror(root: Path) -> Path:
    write_medical(root)
    write_ceval(root)
    return root
