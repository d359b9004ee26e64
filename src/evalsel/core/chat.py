"""Prompt building shared by training, evaluation and serving: SFT records to chat messages,
C-Eval multiple-choice prompts, and assistant-token masks under a model's chat template.
"""

from __future__ import annotations

import os
from typing import Any

from evalsel.core.io import InputError
from evalsel.core.records import LETTERS

#: C-Eval's Chinese subject names (subject_mapping.json of the C-Eval repository).
CEVAL_SUBJECTS_ZH = {
    "clinical_medicine": "临床医学",
    "basic_medicine": "基础医学",
    "physician": "医师资格",
    "college_chemistry": "大学化学",
    "high_school_biology": "高中生物",
    "middle_school_biology": "初中生物",
    "veterinary_medicine": "兽医学",
}

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def subject_zh(subject: str) -> str:
    """Chinese name of a C-Eval subject; unknown subjects keep their name with spaces for '_'."""
    return CEVAL_SUBJECTS_ZH.get(subject, subject.replace("_", " "))


#: The prompt languages of benchmarks (config ``benchmark.language``, ``transfer[].language``):
#: C-Eval's Chinese prompt, or MMLU's English one (lm-evaluation-harness's wording).
LANGUAGES = ("zh", "en")


def ceval_header(subject: str, language: str = "zh") -> str:
    """The line that opens a question's prompt: C-Eval's (zh) or MMLU's (en)."""
    if language == "en":
        return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}."
    if language != "zh":
        raise ValueError(f"prompt language {language!r} is not one of {LANGUAGES}")
    return f"以下是中国关于{subject_zh(subject)}考试的单项选择题，请选出其中的正确答案。"


def format_question(record: dict, with_answer: bool = False, language: str = "zh") -> str:
    """The answer-only layout: question, one 'X. option' line per choice, then '答案：' (zh,
    C-Eval) or 'Answer:' (en, MMLU)."""
    text = record["question"]
    for letter, choice in zip(LETTERS, record["choices"]):
        text += f"\n{letter}. {choice}"
    text += "\nAnswer:" if language == "en" else "\n答案："
    if with_answer:
        text += (" " if language == "en" else "") + record["answer"]
    return text


def question_messages(record: dict, shots: list[dict] | None = None, language: str = "zh") -> list[dict]:
    """Chat messages that ask one question, with ``shots`` as prior user/assistant turns.

    The subject header opens the first user message (C-Eval's own prompt, or MMLU's in English);
    each shot's assistant turn is its answer letter alone, which is what the scored turn should
    produce.
    """
    header = ceval_header(record["subject"], language) + "\n\n"
    messages: list[dict] = []
    for shot in shots or []:
        messages.append({"role": "user", "content": format_question(shot, language=language)})
        messages.append({"role": "assistant", "content": shot["answer"]})
    messages.append({"role": "user", "content": format_question(record, language=language)})
    messages[0] = {"role": "user", "content": header + messages[0]["content"]}
    return messages


def sft_messages(record: Any, path: str | os.PathLike | None = None, line: int | None = None) -> list[dict]:
    """Chat messages of one SFT record (ShareGPT ``conversations`` or alpaca ``instruction/input/output``
    with its optional ``history`` of earlier [user, assistant] exchanges).

    Refuses, with :class:`InputError` naming ``path:line`` and the field: a record that is
    neither format, unknown roles, non-string or empty values, and conversations without an
    assistant turn.
    """
    if not isinstance(record, dict):
        raise InputError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    messages: list[dict] = []
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise InputError(path, line, "system", "must be a string")
    if system:
        messages.append({"role": "system", "content": system})
    if "conversations" in record:
        messages += _sharegpt_turns(record["conversations"], path, line)
    elif "instruction" in record and "output" in record:
        messages += _alpaca_turns(record, path, line)
    else:
        raise InputError(path, line, None, "neither ShareGPT ('conversations') nor alpaca ('instruction', 'output')")
    if not any(m["role"] == "assistant" for m in messages):
        raise InputError(path, line, "conversations", "has no assistant ('gpt') turn to learn from")
    first = next(m["role"] for m in messages if m["role"] != "system")
    if first != "user":
        raise InputError(path, line, "conversations", "the first turn after the system prompt must be from 'human'")
    return messages


def _sharegpt_turns(conv: Any, path, line) -> list[dict]:
    if not isinstance(conv, list) or not conv:
        raise InputError(path, line, "conversations", "must be a non-empty list")
    messages = []
    for i, turn in enumerate(conv):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise InputError(path, line, field, "must be an object with 'from' and 'value'")
        role = _ROLES.get(turn.get("from", turn.get("role")))
        if role is None:
            raise InputError(path, line, f"{field}.from", f"unknown role {turn.get('from')!r} (human, gpt, system)")
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str) or not value.strip():
            raise InputError(path, line, f"{field}.value", "must be a non-empty string")
        messages.append({"role": role, "content": value})
    return messages


def _alpaca_turns(record: dict, path, line) -> list[dict]:
    for key in ("instruction", "input", "output"):
        if not isinstance(record.get(key, ""), str):
            raise InputError(path, line, key, "must be a string")
    # earlier exchanges, [[user, assistant], ...] (LLaMA-Factory's alpaca "history")
    history = record.get("history") or []
    if not isinstance(history, list):
        raise InputError(path, line, "history", "must be a list of [user, assistant] pairs")
    messages = []
    for i, pair in enumerate(history):
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(isinstance(x, str) and x.strip() for x in pair)
        ):
            raise InputError(path, line, f"history[{i}]", "must be a [user, assistant] pair of non-empty strings")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = record["instruction"]
    if record.get("input"):
        prompt = f"{prompt}\n{record['input']}" if prompt else record["input"]
    if not prompt.strip():
        raise InputError(path, line, "instruction", "instruction and input are both empty")
    if not record["output"].strip():
        raise InputError(path, line, "output", "must be a non-empty string")
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` with the tokenizer's chat template; return the text and the character
    spans of every assistant reply (its content and the end-of-turn marker the template adds).

    A reply's span starts where the rendering of the conversation up to it with the generation
    prompt ends. Refuses a template whose renderings are not prefixes of each other (for example
    one that rewrites earlier turns), since then the assistant tokens cannot be located.
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start_text = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        end_text = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(start_text) and full.startswith(end_text) and len(end_text) > len(start_text)):
            raise ValueError(
                "the chat template does not render conversations as prefixes of each other; "
                "assistant tokens cannot be located for loss masking"
            )
        spans.append((len(start_text), len(end_text)))
    return full, spans
