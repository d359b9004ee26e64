"""Multiple-choice evaluation as C-Eval's answer-only mode and lm-evaluation-harness score it:
the probability of each option letter as the next token after the chat-formatted prompt
(default), or greedy generation with robust answer extraction.
"""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evalsel.core.chat import LANGUAGES, LETTERS, ceval_header, question_messages
from evalsel.core.io import InputError, write_json
from evalsel.core.records import read_records
from evalsel.core.settings import default

log = logging.getLogger(__name__)

MODES = ("logprob", "cloze", "generate")
# cloze: how the options' log-likelihoods are compared (the prediction uses "per_char", as
# lm-evaluation-harness's acc_norm and OLMES do; all three accuracies are reported)
CLOZE_NORMS = ("total", "per_token", "per_char")


# ---------------------------------------------------------------- benchmark records


def load_questions(
    benchmark_paths: list[str | os.PathLike], eval_splits: list[str], few_shot: int = default("eval.few_shot")
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Questions of ``eval_splits`` (file order) and, per subject, its first ``few_shot`` dev questions.

    Refuses malformed records, duplicate ids, no question at all, and a subject with fewer dev
    questions than ``few_shot`` (each with an InputError naming the file).
    """
    questions: list[dict] = []
    dev: dict[str, list[dict]] = {}
    source: dict[str, str] = {}
    for path, line, rec in read_records(benchmark_paths):
        source.setdefault(rec["subject"], path)
        if rec["split"] in eval_splits or (few_shot and rec["split"] == "dev"):
            if rec["answer"] is None:
                raise InputError(
                    path,
                    line,
                    "answer",
                    f"question {rec['id']} of split {rec['split']!r} has no answer: "
                    "a split without answers can be a recall split, not an eval or few-shot split",
                )
        if rec["split"] in eval_splits:
            questions.append(rec)
        elif rec["split"] == "dev":
            dev.setdefault(rec["subject"], []).append(rec)
    for subject in dict.fromkeys(q["subject"] for q in questions):
        found = len(dev.get(subject, []))
        if found < few_shot:
            raise InputError(
                source[subject],
                None,
                "split",
                f"few_shot={few_shot} needs {few_shot} 'dev' questions of {subject}, found {found}",
            )
    if not questions:
        raise InputError(
            None, None, "split", f"no question of splits {eval_splits} in {[str(p) for p in benchmark_paths]}"
        )
    shots = {s: recs[:few_shot] for s, recs in dev.items()} if few_shot else {}
    return questions, shots


def build_prompt(tokenizer, record: dict, shots: list[dict] | None = None, language: str = "zh") -> str:
    """The chat-template text of one question, ending with the assistant generation prompt."""
    return tokenizer.apply_chat_template(
        question_messages(record, shots, language), tokenize=False, add_generation_prompt=True
    )


# ---------------------------------------------------------------- models


def load_model(
    base_model: str, adapter: str | os.PathLike | None = None, device: str | None = None, device_map: str | None = None
):
    """``(model, tokenizer)`` in eval mode: the base model, the base with a LoRA adapter applied
    unmerged (PeftModel), or a full model directory given as ``adapter`` (full fine-tuning output).

    The tokenizer comes from the adapter directory when it has one. bf16 (or fp16) on CUDA, fp32 on
    CPU. ``device_map="auto"`` spreads the model over every visible GPU instead of moving it to ``device``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsel.core.models import is_adapter_dir
    from evalsel.core.precision import inference_dtype

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = inference_dtype(device, what="evaluation")
    tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else base_model
    tokenizer = AutoTokenizer.from_pretrained(tok_src)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map:
        kwargs["device_map"] = device_map
    if adapter and is_adapter_dir(adapter):
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
        model = PeftModel.from_pretrained(model, str(adapter))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(adapter or base_model), **kwargs)
    if not device_map:
        model.to(device)
    model.eval()
    return model, tokenizer


def letter_token_ids(tokenizer, n: int = 5) -> list[int]:
    """Token id of each of the first ``n`` option letters; refuses a tokenizer that splits a letter."""
    ids = []
    for letter in LETTERS[:n]:
        enc = tokenizer.encode(letter, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(
                f"option letter {letter!r} is {len(enc)} tokens for this tokenizer; letter scoring needs one"
            )
        ids.append(enc[0])
    return ids


def _left_padded(seqs: list[list[int]], pad_id: int, device) -> dict:
    """Batch tensors with left padding and position ids that start at 0 on each real token."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": pos.to(device)}


def _batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first, so memory peaks at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for k in range(0, len(order), batch_size):
        yield order[k : k + batch_size]


def score_letters(
    model, tokenizer, prompts: list[str], n_options: list[int], batch_size: int = default("eval.batch_size")
) -> list[dict]:
    """Next-token letter probabilities of each prompt, one forward pass per batch.

    Returns, per prompt, ``{"probs": {letter: p}, "letter_mass": m}``: ``probs`` is the softmax
    over the question's own option letters; ``letter_mass`` is the share of the full next-token
    distribution that falls on them (low when the model would not answer with a letter).
    """
    import torch
    from tqdm.auto import tqdm

    letter_ids = letter_token_ids(tokenizer, max(n_options))
    seqs = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[dict] = [{}] * len(prompts)
    with torch.inference_mode():
        for batch in tqdm(
            list(_batches([len(s) for s in seqs], batch_size)), desc="score", unit="batch", mininterval=5
        ):
            inputs = _left_padded([seqs[i] for i in batch], pad_id, device)
            logits = model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            for row, i in enumerate(batch):
                sel = logp[row, letter_ids[: n_options[i]]]
                probs = torch.softmax(sel, dim=-1).tolist()
                out[i] = {
                    "probs": {LETTERS[k]: probs[k] for k in range(n_options[i])},
                    "letter_mass": float(sel.exp().sum()),
                }
    return out


def cloze_prompt(tokenizer, record: dict, language: str = "zh") -> str:
    """The question alone (no options, no letters) under the chat template, ending where the
    assistant's answer starts: each option's text is scored as that answer's continuation."""
    text = ceval_header(record["subject"], language) + "\n\n" + record["question"].replace("____", "")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def score_cloze(
    model, tokenizer, prompts: list[str], choices: list[list[str]], batch_size: int = default("eval.batch_size")
) -> list[dict]:
    """Log-likelihood of each option's text as the continuation of its prompt (batched).

    Context and option are tokenised apart and concatenated, so the option's tokens are the same
    whatever the context ends with. Returns per prompt ``{"total", "per_token", "per_char"}``:
    lists (one per option) of the summed log-probability, that sum over the option's token count,
    and over its character count.
    """
    import torch
    from tqdm.auto import tqdm

    pairs, spans = [], []
    for i, (p, opts) in enumerate(zip(prompts, choices)):
        ctx = tokenizer(p, add_special_tokens=False)["input_ids"]
        for j, o in enumerate(opts):
            cont = tokenizer(o, add_special_tokens=False)["input_ids"]
            if not cont:
                raise ValueError(f"option {j} of prompt {i} tokenises to nothing")
            pairs.append(ctx + cont)
            spans.append((i, j, len(cont), len(o)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    sums = [0.0] * len(pairs)
    with torch.inference_mode():
        for batch in tqdm(
            list(_batches([len(s) for s in pairs], batch_size)), desc="cloze", unit="batch", mininterval=5
        ):
            inputs = _left_padded([pairs[k] for k in batch], pad_id, device)
            # left padding puts every option at the end of its row: only the last positions' logits
            # are needed (the LM head and log-softmax over the vocabulary skip the context)
            keep = max(spans[k][2] for k in batch) + 1
            logits = model(**inputs, logits_to_keep=keep).logits
            logp = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
            target = inputs["input_ids"][:, -(keep - 1) :]
            tok_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            for row, k in enumerate(batch):
                n = spans[k][2]
                sums[k] = float(tok_logp[row, -n:].sum())
    out = [{"total": [0.0] * len(c), "per_token": [0.0] * len(c), "per_char": [0.0] * len(c)} for c in choices]
    for k, (i, j, n_tok, n_chr) in enumerate(spans):
        out[i]["total"][j] = sums[k]
        out[i]["per_token"][j] = sums[k] / n_tok
        out[i]["per_char"][j] = sums[k] / max(1, n_chr)
    return out


def generate_answers(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int = default("eval.batch_size"),
    max_new_tokens: int = default("eval.max_new_tokens"),
    repetition_penalty: float = default("eval.repetition_penalty"),
) -> list[str]:
    """Greedy completions (special tokens removed) of each prompt, batched with left padding.

    Greedy means greedy: sampling defaults and the repetition penalty a model's
    generation_config carries (Qwen2.5-Instruct: 1.05) are overridden (``repetition_penalty``
    1.0 unless the config's ``eval.repetition_penalty`` says otherwise)."""
    import torch
    from tqdm.auto import tqdm

    seqs = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out = [""] * len(prompts)
    with torch.inference_mode():
        for batch in tqdm(
            list(_batches([len(s) for s in seqs], batch_size)), desc="generate", unit="batch", mininterval=5
        ):
            inputs = _left_padded([seqs[i] for i in batch], pad_id, device)
            inputs.pop("position_ids")  # generate derives them from the attention mask
            gen = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=repetition_penalty,
            )
            width = inputs["input_ids"].shape[1]
            for row, i in enumerate(batch):
                out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return out


# ---------------------------------------------------------------- answer extraction


def extract_answer(text: str, choices: list[str]) -> str | None:
    """The option letter a free-text answer gives, or None when it cannot be told.

    Tried in order: a reply that starts with a letter ("B", "B.", "(B)"), "答案是B"/"答案：B",
    "选B"/"选项B", "answer is B", "B是正确的", a reply that quotes exactly one option's text,
    then the first standalone letter. Only the question's own letters count.
    """
    valid = LETTERS[: len(choices)]
    t = unicodedata.normalize("NFKC", text).strip()
    if not t:
        return None
    L = f"[{valid}]"
    end = r"(?![A-Za-z])"
    patterns = [
        rf"^[\s(\[【]*({L}){end}",
        rf"答案\s*(?:应该?|应当|可能)?\s*(?:是|为|选)?\s*[:：]?\s*[(\[【]?\s*({L}){end}",
        rf"(?:选择|选项|选)\s*[(\[【]?\s*({L}){end}",
        rf"[Aa]nswer\s*(?:is|:)?\s*[(\[]?\s*({L}){end}",
        rf"(?<![A-Za-z])({L})\s*(?:项|选项)?\s*(?:是|为)?\s*(?:正确|对的)",
    ]
    for pat in patterns:
        m = re.search(pat, t)
        if m:
            return m.group(1)
    quoted = [valid[k] for k, c in enumerate(choices) if len(c.strip()) >= 2 and c.strip() in t]
    if len(quoted) == 1:
        return quoted[0]
    m = re.search(rf"(?<![A-Za-z])({L}){end}", t)
    return m.group(1) if m else None


# ---------------------------------------------------------------- the run


def summarise(rows: list[dict]) -> dict:
    """``{"n", "correct", "accuracy"}`` of question rows."""
    n = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    return {"n": n, "correct": correct, "accuracy": correct / n if n else None}


def evaluate(
    benchmark_paths: list[str | os.PathLike],
    eval_splits: list[str],
    base_model: str,
    out_path: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    model_name: str | None = None,
    mode: str = default("eval.mode"),
    few_shot: int = default("eval.few_shot"),
    batch_size: int = default("eval.batch_size"),
    max_new_tokens: int = default("eval.max_new_tokens"),
    gpus: int = 0,
    threads: int | None = None,
    repetition_penalty: float = default("eval.repetition_penalty"),
    language: str = "zh",
) -> dict:
    """Score every question of ``eval_splits`` and write the eval JSON (see docs/ARCHITECTURE.md).

    Returns the written object. ``threads`` caps torch's CPU threads. Refuses an unknown mode and
    bad benchmark records (before the model loads). In generate mode, ``probs`` is null and answers that cannot be parsed count as
    wrong and in ``unparsed``.
    """
    if mode not in MODES:
        raise ValueError(f"eval mode {mode!r} is not one of {MODES}")
    if language not in LANGUAGES:
        raise ValueError(f"prompt language {language!r} is not one of {LANGUAGES}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    questions, shots = load_questions(benchmark_paths, eval_splits, few_shot)
    log.info("%d questions (%s), %d-shot, mode %s", len(questions), ",".join(eval_splits), few_shot, mode)
    started = time.monotonic()
    from evalsel.core.gpu import claim
    from evalsel.core.models import set_threads

    set_threads(threads)
    with claim(gpus) as devices:
        # several GPUs hold one large model split by layers; one GPU or the CPU holds it whole
        model, tokenizer = load_model(base_model, adapter, device_map="auto" if len(devices) > 1 else None)
        rows = SCORERS[mode](
            model,
            tokenizer,
            questions,
            shots=shots,
            language=language,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
        )
    subjects = {}
    for s in dict.fromkeys(q["subject"] for q in questions):
        subjects[s] = summarise([r for r in rows if r["subject"] == s])
    result = {
        "model": model_name or ("base" if adapter is None else Path(adapter).name),
        "base_model": str(base_model),
        "adapter": None if adapter is None else str(adapter),
        "mode": mode,
        "splits": list(eval_splits),
        "few_shot": few_shot,
        "language": language,
        "subjects": subjects,
        "overall": summarise(rows),
        "unparsed": sum(1 for r in rows if r["pred"] is None),
        "runtime_s": round(time.monotonic() - started, 3),
        "questions": rows,
    }
    if mode == "logprob":
        result["letter_mass_mean"] = sum(r["letter_mass"] for r in rows) / len(rows)
    if mode == "cloze":  # the accuracy under each normalisation (the prediction uses per_char)
        result["cloze_accuracy"] = {n: sum(r["cloze_correct"][n] for r in rows) / len(rows) for n in CLOZE_NORMS}
    write_json(out_path, result)
    o = result["overall"]
    log.info(
        "%s: %d/%d correct (%.4f), %d unparsed",
        result["model"],
        o["correct"],
        o["n"],
        o["accuracy"],
        result["unparsed"],
    )
    return result


def _row(q: dict, pred: str | None, probs: dict | None, **extra) -> dict:
    return {
        "id": q["id"],
        "subject": q["subject"],
        "answer": q["answer"],
        "pred": pred,
        "probs": probs,
        "correct": pred == q["answer"],
        **extra,
    }


def _cloze_rows(model, tokenizer, questions: list[dict], *, language: str, batch_size: int, **_) -> list[dict]:
    """Each option's text scored as the continuation of the question (prediction: per_char)."""
    prompts = [cloze_prompt(tokenizer, q, language) for q in questions]
    scores = score_cloze(model, tokenizer, prompts, [q["choices"] for q in questions], batch_size)
    rows = []
    for q, sc in zip(questions, scores):
        preds = {norm: LETTERS[max(range(len(v)), key=v.__getitem__)] for norm, v in sc.items()}
        rows.append(
            _row(
                q,
                preds["per_char"],
                None,
                cloze={norm: [round(x, 6) for x in v] for norm, v in sc.items()},
                cloze_correct={norm: p == q["answer"] for norm, p in preds.items()},
            )
        )
    return rows


def _logprob_rows(
    model, tokenizer, questions: list[dict], *, shots: dict, language: str, batch_size: int, **_
) -> list[dict]:
    """Each option letter's probability as the next token after the prompt."""
    prompts = [build_prompt(tokenizer, q, shots.get(q["subject"]), language) for q in questions]
    scores = score_letters(model, tokenizer, prompts, [len(q["choices"]) for q in questions], batch_size)
    rows = []
    for q, sc in zip(questions, scores):
        pred = max(sc["probs"], key=sc["probs"].get)
        rows.append(_row(q, pred, sc["probs"], letter_mass=sc["letter_mass"]))
    return rows


def _generate_rows(
    model,
    tokenizer,
    questions: list[dict],
    *,
    shots: dict,
    language: str,
    batch_size: int,
    max_new_tokens: int,
    repetition_penalty: float,
) -> list[dict]:
    """A generated answer, its letter extracted (None when it names none)."""
    prompts = [build_prompt(tokenizer, q, shots.get(q["subject"]), language) for q in questions]
    texts = generate_answers(model, tokenizer, prompts, batch_size, max_new_tokens, repetition_penalty)
    return [_row(q, extract_answer(text, q["choices"]), None, response=text) for q, text in zip(questions, texts)]


# The one dispatch on eval.mode: how each mode builds its prompts and scores them.
SCORERS = {"cloze": _cloze_rows, "logprob": _logprob_rows, "generate": _generate_rows}
