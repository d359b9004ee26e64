"""The report's words match its numbers (issue: "the report says only what the data supports"), on
synthetic evaluation files with known answers: each verdict uses its family's p, degenerate models
and identical answers are said where they occur, and "What this report can and cannot say" is
generated from the run. The sentences are asserted, so a wording regression fails here."""

from __future__ import annotations

import json

import pytest

from evalsel.report.compare import build_comparison, render_markdown


def _eval(model: str, rows: list[tuple[str, str, str]], mode: str = "logprob") -> dict:
    """rows: (subject, answer, pred) per question."""
    qs = [
        {"id": f"{s}/val/{i}", "subject": s, "answer": a, "pred": p, "correct": p == a}
        for i, (s, a, p) in enumerate(rows)
    ]
    return {
        "model": model,
        "base_model": "m",
        "adapter": None,
        "mode": mode,
        "splits": ["val"],
        "few_shot": 0,
        "questions": qs,
    }


def _write(tmp_path, name, rows, sub=""):
    d = tmp_path / sub if sub else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    path.write_text(json.dumps(_eval(name, rows)), encoding="utf-8")
    return str(path)


KEY = "ABCD"


def _key(i: int) -> str:
    return KEY[i % 4]


def _wrong(i: int) -> str:
    return KEY[(i + 1) % 4]


def _subjects_case():
    """Three subjects of 30 questions. In s1 eval_driven is right where base is wrong on 6
    questions and never the reverse: McNemar p = 2/64 = 0.031, Holm over 3 subjects 0.094."""
    base, ed, rnd = [], [], []
    for s in ("s1", "s2", "s3"):
        for i in range(30):
            a = _key(i)
            b_ok = i % 2 == 0
            base.append((s, a, a if b_ok else _wrong(i)))
            e_ok = b_ok or (s == "s1" and i in (1, 3, 5, 7, 9, 11))
            ed.append((s, a, a if e_ok else _wrong(i)))
            rnd.append((s, a, a if b_ok else _wrong(i)))
    return base, ed, rnd


def test_a_subject_significant_before_holm_but_not_after_is_not_called_significant(tmp_path):
    base, ed, rnd = _subjects_case()
    paths = [
        _write(tmp_path, "base", base),
        _write(tmp_path, "eval_driven-seed1", ed),
        _write(tmp_path, "random-seed1", rnd),
    ]
    rep = build_comparison(
        paths, ["eval_driven", "random"], [1], bootstrap_samples=200, recall_splits=["test"], eval_splits=["val"]
    )
    row = next(c for c in rep["comparisons"] if c["name"] == "eval_driven vs base")["scopes"]["s1"]
    assert row["p_value"] == pytest.approx(2 / 64)
    assert row["p_holm"] == pytest.approx(3 * 2 / 64)
    assert row["verdict"] == "no detectable difference"
    md = render_markdown(rep)
    assert "s1 +20.0 pts, p 0.031 (Holm 0.094): no detectable difference" in md
    assert "significant gain" not in md.split("## What this report")[0]
    assert (
        "Every verdict uses the Holm-adjusted p of its family (the raw p is shown beside): a subject row: Holm over "
        "the 3 subjects of each comparison; an overall row: Holm over the 3 comparisons of the targeted benchmark."
    ) in md
    assert rep["families"] == {
        "subject": "Holm over the 3 subjects of each comparison",
        "overall": "Holm over the 3 comparisons of the targeted benchmark",
    }


def test_a_constant_letter_model_is_flagged(tmp_path):
    rows = [("s", _key(i), _key(i)) for i in range(40)]
    base = [("s", _key(i), "B") for i in range(40)]  # answers B to everything
    ed = [("s", _key(i), "D" if i < 38 else _key(i)) for i in range(40)]  # D 39 times
    paths = [
        _write(tmp_path, "base", base),
        _write(tmp_path, "eval_driven-seed1", ed),
        _write(tmp_path, "random-seed1", rows),
    ]
    rep = build_comparison(paths, ["eval_driven", "random"], [1], bootstrap_samples=200)
    flagged = {d["model"]: d for d in rep["degenerate_models"]}
    assert set(flagged) == {"base", "eval_driven-seed1"}
    assert flagged["base"]["letter"] == "B" and flagged["base"]["count"] == 40 and flagged["base"]["key_share"] == 0.25
    md = render_markdown(rep)
    sentence = (
        "base answered B to 40 of 40 questions (100%; the answer key has B for 25%): its accuracy mostly measures "
        "how often B is right, and a difference against it can come from a change of preferred letter rather than "
        "of knowledge."
    )
    assert f"**Warning**: {sentence}" in md
    assert f"- {sentence}" in md.split("## What this report can and cannot say")[1]
    assert "| **base** (flagged) | 0% | 100% | 0% | 0% | B (100%) |" in md
    assert "| random-seed1 | 25% | 25% | 25% | 25% |" in md
    # the threshold is the config's
    rep2 = build_comparison(paths, ["eval_driven", "random"], [1], bootstrap_samples=200, max_letter_share=0.99)
    assert [d["model"] for d in rep2["degenerate_models"]] == ["base"]


def test_identical_arms_on_a_transfer_benchmark_are_said(tmp_path):
    base, ed, rnd = _subjects_case()
    paths = [
        _write(tmp_path, "base", base),
        _write(tmp_path, "eval_driven-seed1", ed),
        _write(tmp_path, "random-seed1", rnd),
    ]
    tr = [("t", _key(i), _key(i) if i % 3 else _wrong(i)) for i in range(50)]
    tpaths = [_write(tmp_path, m, tr, sub="transfer") for m in ("base", "eval_driven-seed1", "random-seed1")]
    rep = build_comparison(
        paths,
        ["eval_driven", "random"],
        [1],
        bootstrap_samples=200,
        transfer={"cmmlu": {"evals": tpaths, "splits": ["val"]}},
    )
    t = rep["transfer"]["cmmlu"]
    assert t["identical_comparisons"] == ["eval_driven vs base", "random vs base", "eval_driven vs random"]
    assert t["families"]["overall"] == "Holm over the 3 comparisons of cmmlu"
    md = render_markdown(rep)
    sentence = (
        "eval_driven and random gave the same answer to every question of cmmlu: the comparison carries no "
        "information (its interval is a point); it is not evidence that the two are equal in general."
    )
    transfer_section = md.split("## Transfer to benchmarks")[1].split("## Accuracy")[0]
    assert f"- {sentence}" in transfer_section
    assert sentence in md.split("## What this report can and cannot say")[1]
    assert "cmmlu: Holm over the 3 comparisons of cmmlu" in md
    # the transfer table names the family p and prints the smallest significant difference unsigned
    assert "| p | p (Holm) | smallest significant (pts) | verdict |" in transfer_section
    assert (
        "| eval_driven vs random | +0.0 | [+0.0, +0.0] | 1.000 | 1.000 | 12.0 | no detectable difference |"
        in transfer_section
    )


def test_what_the_report_can_and_cannot_say(tmp_path):
    base, ed, rnd = _subjects_case()
    paths = [
        _write(tmp_path, "base", base),
        _write(tmp_path, "eval_driven-seed1", ed),
        _write(tmp_path, "random-seed1", rnd),
    ]
    sft = tmp_path / "sft_statistics.json"
    sft.write_text(json.dumps({"contamination": {"drops_by_reason": {"containment": 3, "options": 2}}}))
    rep = build_comparison(
        paths,
        ["eval_driven", "random"],
        [1],
        bootstrap_samples=200,
        recall_splits=["val"],
        eval_splits=["val"],
        sft_statistics=str(sft),
    )
    section = render_markdown(rep).split("## What this report can and cannot say")[1].split("\n## ")[0]
    assert "- Not held out: split(s) val were recall queries and scored questions." in section
    assert (
        "- One training seed (1) per arm: the intervals cover the sampling of questions, not training noise" in section
    )
    assert (
        "- 90 scored questions: no difference below" in section
        and '"no detectable difference" is not "no difference".' in section
    )
    assert (
        "- The contamination guard dropped 5 training samples as matching a benchmark item (3 containment, 2 options): "
        "results/sft/contamination_review.md shows each reason's evidence"
    ) in section


def test_several_seeds_show_their_gaps_and_spread(tmp_path):
    base, ed, rnd = _subjects_case()
    paths = [_write(tmp_path, "base", base)]
    for s in (1, 2, 3):
        paths += [_write(tmp_path, f"eval_driven-seed{s}", ed), _write(tmp_path, f"random-seed{s}", rnd)]
    rep = build_comparison(
        paths, ["eval_driven", "random"], [1, 2, 3], bootstrap_samples=200, recall_splits=["test"], eval_splits=["val"]
    )
    md = render_markdown(rep)
    assert "Per seed: +6.7, +6.7, +6.7 pts (sd 0.0)." in md
    assert (
        "3 training seeds, pooled by the sign-flip test. eval_driven vs random, per seed: +6.7, +6.7, +6.7 points (sd 0.0); every seed in the same direction."
        in md
    )
