"""The evaluator cross-checked against lm-evaluation-harness (rule crosscheck, off by default).

The scored benchmark is exported as a local lm-evaluation-harness task: a JSONL of the very
prompts ``evaluate`` scores (the chat template rendered with the generation prompt, from the
same function) and a ``multiple_choice`` task whose choices are the option letters with an empty
target delimiter. ``lm_eval`` then scores each letter's log-likelihood with its own Hugging Face
loader (``hf``, with ``peft=`` for an adapter), and every question's choice and letter
probabilities are compared with the project's eval file.

One difference is expected and bounded: lm-eval moves the context's trailing whitespace into the
continuation, so with the chat template (which ends in a newline) it scores "\\nA" after the
context without its newline, where ``evaluate`` scores "A" after the full context. The newline's
log-probability is the same for every option, so the choice and the probabilities normalised
over the options are the same; only the raw log-likelihoods differ, by that one constant per
question (reported as ``shared_offset``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from evalsel.core.io import atomic_write, read_json, write_json, write_jsonl
from evalsel.core.settings import default

log = logging.getLogger(__name__)

TASK = "evalsel_crosscheck"
LETTERS = "ABCDE"


def export_task(
    benchmark_paths: list[str | os.PathLike],
    eval_splits: list[str],
    base_model: str,
    out_dir: str | os.PathLike,
    few_shot: int = default("eval.few_shot"),
) -> Path:
    """Write the task directory (``<TASK>.yaml`` and ``<TASK>.jsonl``); returns it."""
    from transformers import AutoTokenizer

    from evalsel.evaluate.multiple_choice import build_prompt, load_questions

    questions, shots = load_questions(benchmark_paths, eval_splits, few_shot)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    rows = []
    for q in questions:
        letters = list(LETTERS[: len(q["choices"])])
        rows.append(
            {
                "id": q["id"],
                "subject": q["subject"],
                "prompt": build_prompt(tokenizer, q, shots.get(q["subject"])),
                "letters": letters,
                "gold": letters.index(q["answer"]),
            }
        )
    out = Path(out_dir)
    data = out / f"{TASK}.jsonl"
    write_jsonl(data, rows)
    yaml_text = "\n".join(
        [
            f"task: {TASK}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    test: {data.resolve()}",
            "test_split: test",
            "output_type: multiple_choice",
            'doc_to_text: "{{prompt}}"',
            "doc_to_choice: letters",
            "doc_to_target: gold",
            'target_delimiter: ""',
            "metric_list:",
            "  - metric: acc",
            "    aggregation: mean",
            "    higher_is_better: true",
            "metadata:",
            "  version: 1.0",
            "",
        ]
    )
    with atomic_write(out / f"{TASK}.yaml") as fh:
        fh.write(yaml_text)
    return out


def run_lm_eval(
    task_dir: str | os.PathLike,
    base_model: str,
    adapter: str | None,
    batch_size: int = default("crosscheck.batch_size"),
) -> list[dict]:
    """lm-eval's samples of the exported task: per question its choices' log-likelihoods."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    args = {"pretrained": str(base_model), "dtype": "float32"}
    if adapter:
        args["peft"] = str(adapter)
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=args,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=batch_size,
        device="cpu",
        log_samples=True,
    )
    return out["samples"][TASK]


def _softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def compare(eval_json: dict, samples: list[dict], tolerance: float = 1e-4) -> dict:
    """Per question: the same choice? the option probabilities within ``tolerance``?"""
    ours = {q["id"]: q for q in eval_json["questions"]}
    rows, same, close, offsets, worst = [], 0, 0, [], 0.0
    for s in samples:
        doc = s["doc"]
        lls = [float(r[0]) for r in s["filtered_resps"]]
        theirs = _softmax(lls)
        pick = doc["letters"][max(range(len(lls)), key=lls.__getitem__)]
        q = ours.get(doc["id"])
        if q is None:
            raise ValueError(f"question {doc['id']!r} is in the exported task but not in the eval file")
        mine = [q["probs"][letter] for letter in doc["letters"]]
        diff = max(abs(a - b) for a, b in zip(mine, theirs))
        worst = max(worst, diff)
        agree = pick == q["pred"]
        same += agree
        close += diff <= tolerance
        offsets.append(lls[0] - math.log(max(mine[0], 1e-300)))
        if not agree or diff > tolerance:
            rows.append({"id": doc["id"], "ours": q["pred"], "lm_eval": pick, "max_prob_diff": diff})
    n = len(samples)
    acc_lm = sum(1 for s in samples if float(s["acc"]) == 1.0) / n if n else None
    return {
        "questions": n,
        "same_choice": same,
        "probabilities_within_tolerance": close,
        "tolerance": tolerance,
        "max_prob_diff": worst,
        "accuracy_evalsel": eval_json["overall"]["accuracy"],
        "accuracy_lm_eval": acc_lm,
        "agree": same == n and close == n and n == len(ours),
        "shared_offset": {"min": min(offsets), "max": max(offsets)} if offsets else None,
        "disagreements": rows,
    }


def crosscheck(
    *,
    benchmark_paths: list[str | os.PathLike],
    eval_splits: list[str],
    base_model: str,
    adapter: str | None,
    eval_path: str | os.PathLike,
    out_path: str | os.PathLike,
    task_dir: str | os.PathLike,
    few_shot: int = default("eval.few_shot"),
    batch_size: int = default("crosscheck.batch_size"),
) -> dict:
    """Export, run lm-eval on the same model and compare with ``eval_path``; writes the comparison."""
    ev = read_json(eval_path)
    if ev["mode"] != "logprob":
        raise ValueError(f"the lm-eval cross-check compares letter scoring (eval.mode logprob), not {ev['mode']!r}")
    export_task(benchmark_paths, eval_splits, base_model, task_dir, few_shot)
    result = compare(ev, run_lm_eval(task_dir, base_model, adapter, batch_size))
    result.update(model=ev["model"], base_model=str(base_model), adapter=adapter)
    write_json(out_path, result)
    log.info(
        "%s: lm-eval chose as evalsel on %d of %d questions (accuracy %.4f vs %.4f)",
        ev["model"],
        result["same_choice"],
        result["questions"],
        result["accuracy_lm_eval"],
        result["accuracy_evalsel"],
    )
    return result
