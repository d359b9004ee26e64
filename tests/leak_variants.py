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
    # kinds added with guard v3 (issue 21)
    "traditional",
    "traditional_options_only",
    "zero_width",
    "multi_turn",
    "assistant_side",
    "markdown_table",
    "options_in_prose",
    "numbered_options",
    "synonyms_reordered",
)
# Kinds that keep only the options of the item (the stem rewritten): caught when the options carry
# enough text (three or more options, 8+ letters together); see tests/test_guard.py.
OPTIONS_ONLY = ("options_only_reworded", "traditional_options_only")
# Stem words and the synonyms the synonyms_reordered kind puts in their place.
SYNONYMS = {
    "下列": "以下",
    "哪一项": "哪个",
    "哪项": "哪个",
    "不正确": "有误",
    "错误": "有误",
    "属于": "算是",
    "常见": "多见",
}
ZWSP = "\u200b"


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


def _traditional(text: str) -> str:
    global _S2T
    if _S2T is None:
        import opencc

        _S2T = opencc.OpenCC("s2t")
    return _S2T.convert(text)


_S2T = None


def _conversation(item: dict, kind: str, q: str, choices: list[str], right: str) -> dict:
    letter = LETTERS[choices.index(right)]
    if kind == "multi_turn":
        turns = [
            ("human", f"老师，问您一道题：{q}"),
            ("gpt", "好的，请把选项也发给我。"),
            ("human", _options(choices)),
            ("gpt", f"答案是{letter}，{right}。"),
        ]
    else:  # assistant_side: the question is in the response, as a generated exercise
        turns = [
            ("human", "请出一道医学考试的单选题，并给出答案。"),
            ("gpt", f"题目：{q}\n{_options(choices)}\n答案：{letter}，{right}。"),
        ]
    return {
        "conversations": [{"from": f, "value": v} for f, v in turns],
        "_leak_of": item["id"],
        "_kind": kind,
    }


def texts_of(sample: dict) -> list[str]:
    """Every text of a planted record (alpaca fields or conversation turns): what is trained on."""
    if "conversations" in sample:
        return [t["value"] for t in sample["conversations"]]
    return [sample.get("instruction", ""), sample.get("input", ""), sample.get("output", "")]


def variant(item: dict, kind: str, seed: int = 0) -> dict:
    """One leak of ``item`` ({question, choices, answer}) as an alpaca record (or, for the
    multi-turn and assistant-side kinds, a conversation) with the answer key."""
    rng = random.Random(f"{item['id']}:{kind}:{seed}")
    q, choices = item["question"], list(item["choices"])
    answer = item.get("answer") or "A"
    right = choices[LETTERS.index(answer)]
    letters = LETTERS
    if kind in ("multi_turn", "assistant_side"):
        return _conversation(item, kind, q, choices, right)
    if kind in ("traditional", "traditional_options_only"):
        if kind == "traditional_options_only":
            q = f"{q[:2]}相关的这道题怎么做{q[-2:]}"
        q, choices = _traditional(q), [_traditional(c) for c in choices]
        right = choices[LETTERS.index(answer)]
        return {
            "instruction": f"{q}\n{_options(choices)}",
            "input": "",
            "output": _traditional(f"正确答案是{LETTERS[choices.index(right)]}，") + right + "。",
            "_leak_of": item["id"],
            "_kind": kind,
        }
    if kind == "zero_width":
        q = ZWSP.join(q[i : i + 2] for i in range(0, len(q), 2))
        choices = [ZWSP.join(c) for c in choices]
        right = choices[LETTERS.index(answer)]
    elif kind == "markdown_table":
        table = "\n".join(["| 选项 | 内容 |", "|---|---|", *(f"| {LETTERS[i]} | {c} |" for i, c in enumerate(choices))])
        return {
            "instruction": f"**{q}**\n\n{table}",
            "input": "",
            "output": f"**答案：{answer}**（{right}）",
            "_leak_of": item["id"],
            "_kind": kind,
        }
    elif kind == "options_in_prose":
        listed = "、".join(choices[:-1]) + f"还是{choices[-1]}"
        return {
            "instruction": f"{q}，是{listed}？",
            "input": "",
            "output": f"应该是{right}。",
            "_leak_of": item["id"],
            "_kind": kind,
        }
    elif kind == "numbered_options":
        return {
            "instruction": q + "\n" + "\n".join(f"{i + 1}) {c}" for i, c in enumerate(choices)),
            "input": "",
            "output": f"选{choices.index(right) + 1}：{right}",
            "_leak_of": item["id"],
            "_kind": kind,
        }
    elif kind == "synonyms_reordered":
        for a, b in SYNONYMS.items():
            q = q.replace(a, b)
        choices = choices[::-1]
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
    elif kind not in ("exact", "zero_width", "synonyms_reordered"):
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
