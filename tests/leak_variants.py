"""Planted leaks: training samples derived from a benchmark item in the ways copies reach real pools.

Each variant is an alpaca record whose response carries the answer key, i.e. a sample that would
teach the answer of an evaluated question. Used by the acceptance tests and perf/bench_guard.py.
"""

from __future__ import annotations

import random

LETTERS = "ABCDE"
# Characters swapped in by the edit variants (common in Chinese medical text).
FILLER = "的病症治疗患者常见检查引起导致主要表现药物"
STEM_WORDS = (
    "下列",
    "哪一项",
    "哪项",
    "哪个",
    "哪种",
    "属于",
    "不正确",
    "正确",
    "错误",
    "的是",
    "是",
    "____",
    "（ ）",
    "()",
    "（）",
)
FULL = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}  # ASCII -> full-width
PUNCT = {"，": ",", "。": ".", "？": "?", "：": ":", "（": "(", "）": ")", "、": "/", "；": ";"}

KINDS = (
    "exact",
    "substituted",
    "inserted",
    "deleted",
    "options_shuffled",
    "relettered",
    "embedded",
    "without_stem",
    "width_punct",
    "options_only_reworded",
)


def _edit(q: str, rng: random.Random, kind: str, n: int = 2) -> str:
    chars = list(q)
    positions = sorted(rng.sample(range(len(chars)), min(n, len(chars))), reverse=True)
    for p in positions:
        if kind == "substituted":
            chars[p] = rng.choice([c for c in FILLER if c != chars[p]])
        elif kind == "inserted":
            chars.insert(p, rng.choice(FILLER))
        elif kind == "deleted" and len(chars) > 2:
            del chars[p]
    return "".join(chars)


def _options(choices: list[str], letters: str = LETTERS, sep: str = ". ") -> str:
    return "\n".join(f"{letters[i]}{sep}{c}" for i, c in enumerate(choices))


def variant(item: dict, kind: str, seed: int = 0) -> dict:
    """One leak of ``item`` ({question, choices, answer}) as an alpaca record with the answer key."""
    rng = random.Random(f"{item['id']}:{kind}:{seed}")
    q, choices = item["question"], list(item["choices"])
    answer = item.get("answer") or "A"
    right = choices[LETTERS.index(answer)]
    letters = LETTERS
    if kind in ("substituted", "inserted", "deleted"):
        q = _edit(q, rng, kind)
    elif kind == "options_shuffled":
        rng.shuffle(choices)
    elif kind == "relettered":
        letters = "abcde"
        choices = choices[1:] + choices[:1]
    elif kind == "embedded":
        q = f"医生您好，我在准备执业考试，有道题一直拿不准：{q}，想请您帮忙看看应该选哪个？"
    elif kind == "without_stem":
        for w in STEM_WORDS:
            q = q.replace(w, "")
    elif kind == "width_punct":
        q = "".join(FULL.get(c, c) for c in q)
        q = "".join(PUNCT.get(c, c) for c in q).replace("____", " ( ) ")
        choices = ["".join(FULL.get(c, c) for c in ch) for ch in choices]
    elif kind == "options_only_reworded":
        # the stem rewritten in other words (the first and last characters kept), options verbatim
        q = f"{q[:2]}相关的这道题怎么做{q[-2:]}"
    elif kind != "exact":
        raise ValueError(f"unknown leak kind {kind!r}")
    new_letter = letters[choices.index(right)] if right in choices else letters[0]
    return {
        "instruction": f"{q}\n{_options(choices, letters)}",
        "input": "",
        "output": f"正确答案是{new_letter}，{right}。",
        "_leak_of": item["id"],
        "_kind": kind,
    }


def variants(item: dict, kinds=KINDS) -> list[dict]:
    return [variant(item, k) for k in kinds]
