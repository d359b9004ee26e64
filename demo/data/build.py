"""Regenerate the demo benchmark and pool files from the tables beside this script (deterministic).

Run: python demo/data/build.py   (writes demo/data/benchmark/ and demo/data/pool/)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_benchmark import BENCHMARK, KEEP_ORDER, LEAK, RECALL  # noqa: E402
from pool_facts import GENERAL, OFF_TARGET, TOPICS  # noqa: E402

LETTERS = "ABCDE"
DOCTOR = "你是一名经验丰富的全科医生，请用通俗易懂的语言回答患者的问题。"
ASSISTANT = "你是一个专业、严谨的医学知识助手。"
FOLLOW_UPS = ["另外，", "还想问一下，", "明白了。", "谢谢。", "好的。"]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def build_benchmark(rng: random.Random) -> dict[str, list[dict]]:
    """C-Eval-shaped rows; 2-option rows omit C/D, 3-option rows leave D empty, 5-option rows add E."""
    out = {}
    for (subject, split), items in BENCHMARK.items():
        used = [0] * len(LETTERS)  # answer letters balanced: the least used valid position wins
        rows = []
        for i, (_topic, question, options, explanation) in enumerate(items):
            correct, others = options[0], list(options[1:])
            if set(options) <= KEEP_ORDER:
                order = ["正确", "错误"]
            else:
                rng.shuffle(others)
                least = min(used[: len(options)])
                pos = rng.choice([k for k in range(len(options)) if used[k] == least])
                order = others[:pos] + [correct] + others[pos:]
            row = {"id": i, "question": question}
            for k, letter in enumerate(LETTERS):
                if k < len(order):
                    row[letter] = order[k]
                elif len(order) == 3 and letter == "D":
                    row[letter] = ""
            used[order.index(correct)] += 1
            row["answer"] = LETTERS[order.index(correct)]
            row["explanation"] = explanation
            rows.append(row)
        out[f"{split}/{subject}"] = rows
    for subject, items in RECALL.items():  # recall-only: options shuffled, no answer (C-Eval's test)
        rows = []
        for i, (_topic, question, options) in enumerate(items):
            order = list(options)
            if not set(options) <= KEEP_ORDER:
                rng.shuffle(order)
            rows.append({"id": i, "question": question, **dict(zip(LETTERS, order)), "answer": "", "explanation": ""})
        out[f"test/{subject}"] = rows
    return out


def sharegpt(turns: list[tuple[str, str]], system: str | None = None, roles=("human", "gpt")) -> dict:
    conv = [{"from": "system", "value": system}] if system else []
    for q, a in turns:
        conv += [{"from": roles[0], "value": q}, {"from": roles[1], "value": a}]
    return {"conversations": conv}


def messages(turns: list[tuple[str, str]], system: str) -> dict:
    msgs = [{"role": "system", "content": system}]
    for q, a in turns:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": msgs}


def dialogue(rng: random.Random, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Two or three exchanges of one topic; follow-up questions get a conversational opener."""
    chosen = rng.sample(pairs, min(len(pairs), rng.choice([2, 3])))
    return [(q if i == 0 else rng.choice(FOLLOW_UPS) + q, a) for i, (q, a) in enumerate(chosen)]


def build_pool(rng: random.Random) -> dict[str, list[dict]]:
    pairs = [(t, q, a) for t, lst in {**TOPICS, **OFF_TARGET}.items() for q, a in lst]
    rng.shuffle(pairs)
    alpaca, qa, share, chat = [], [], [], []
    cycle = ["alpaca", "qa", "alpaca", "sharegpt", "qa", "messages", "alpaca", "qa", "sharegpt", "alpaca"]
    for i, (_topic, q, a) in enumerate(pairs):
        fmt = cycle[i % len(cycle)]
        if fmt == "alpaca":
            if len(alpaca) % 6 == 5:
                rec = {"instruction": "请回答下面的医学问题。", "input": q, "output": a}
            else:
                rec = {"instruction": q, "input": "", "output": a}
            if len(alpaca) % 9 == 4:
                rec["system"] = DOCTOR
            alpaca.append(rec)
        elif fmt == "qa":
            qa.append({"query": q, "response": a} if len(qa) % 8 == 7 else {"question": q, "answer": a})
        elif fmt == "sharegpt":
            k = len(share)
            share.append(
                sharegpt(
                    [(q, a)],
                    system=DOCTOR if k % 7 == 3 else None,
                    roles=("user", "assistant") if k % 5 == 2 else ("human", "gpt"),
                )
            )
        else:
            chat.append(messages([(q, a)], ASSISTANT))

    for topic in sorted(OFF_TARGET)[:6]:
        share.append(sharegpt(dialogue(rng, OFF_TARGET[topic])))
    # Multi-turn dialogues on benchmark topics: ShareGPT, OpenAI messages and alpaca with history.
    topics = sorted(TOPICS)
    for i, topic in enumerate(rng.sample(topics, 40)):
        turns = dialogue(rng, TOPICS[topic])
        if i < 26:
            share.append(sharegpt(turns, system=DOCTOR if i % 4 == 0 else None))
        elif i < 34:
            chat.append(messages(turns, ASSISTANT))
        else:
            *history, (q, a) = turns
            alpaca.append({"instruction": q, "input": "", "output": a, "history": [list(h) for h in history]})

    # The same sample in two formats and two files gets the same id in both sources.
    for rec in rng.sample([r for r in qa if "question" in r], 6):
        alpaca.append({"instruction": rec["question"], "input": "", "output": rec["answer"]})
    # Exact duplicates within a file (dropped and counted by pool_prepare).
    alpaca += [dict(r) for r in rng.sample(alpaca, 3)]
    qa += [dict(r) for r in rng.sample(qa, 2)]
    share += [json.loads(json.dumps(rng.choice(share)))]
    # Unusable records, each skipped with its own reason.
    alpaca.append({"instruction": "谢谢医生", "input": "", "output": "嗯"})  # too_short_response
    alpaca.append({"instruction": "", "input": "", "output": ""})  # empty
    qa.append({"question": "痛", "answer": "请具体描述一下哪里痛、痛了多久，有没有其他不舒服。"})  # too_short_prompt
    share.append({"conversations": [{"from": "human", "value": "医生在吗？"}]})  # no_assistant_turn
    # One lightly reworded copy of a val question: the n-gram leak guard must catch it.
    qa.append({"question": LEAK["question"], "answer": LEAK["answer"]})

    general = []
    for item in GENERAL:
        turns = [item[:2]] + ([item[2]] if len(item) > 2 else [])
        general.append(sharegpt(turns))

    for records in (alpaca, qa, share, chat, general):
        rng.shuffle(records)
    return {
        "medical_alpaca.jsonl": alpaca,
        "medical_consult_qa.jsonl": qa,
        "medical_dialogue_sharegpt.jsonl": share,
        "medical_chat_messages.jsonl": chat,
        "general_sharegpt.jsonl": general,
    }


def ngrams(text: str, n: int) -> set[str]:
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def check_leak(benchmark: dict[str, list[dict]], pool: dict[str, list[dict]], n: int = 13) -> list[str]:
    """Pool records sharing a character n-gram with a val or test question or option (must be just
    the planted one)."""
    grams = set()
    for key, rows in benchmark.items():
        if key.startswith(("val/", "test/")):
            for row in rows:
                grams |= ngrams(row["question"], n)
                for letter in LETTERS:
                    grams |= ngrams(row.get(letter, ""), n)
    hits = []
    for name, records in pool.items():
        for rec in records:
            text = json.dumps(rec, ensure_ascii=False)
            if ngrams(text, n) & grams:
                hits.append(f"{name}: {text[:60]}")
    return hits


def main() -> None:
    benchmark = build_benchmark(random.Random(20240521))
    pool = build_pool(random.Random(7))
    for key, rows in benchmark.items():
        write_jsonl(HERE / "benchmark" / f"{key}.jsonl", rows)
    for name, records in pool.items():
        write_jsonl(HERE / "pool" / name, records)
    hits = check_leak(benchmark, pool)
    if len(hits) != 1:
        raise SystemExit(f"expected exactly one planted leak, found {len(hits)}: {hits}")
    sizes = {name: len(r) for name, r in pool.items()}
    print(f"benchmark: {sum(map(len, benchmark.values()))} questions; pool: {sum(sizes.values())} records {sizes}")


if __name__ == "__main__":
    main()
