"""The real-model positive control, one seed (CI): SmolLM2-135M-Instruct imported from its GGUF file,
LoRA, held out (recall with reworded questions, score others), in the control world of
demo/control (fictional diseases: no model can know them beforehand), with the eval-driven and
random arms (demo/control/ci.yaml). The workflow must find the effect with headroom, and each
sabotage or shortcut that would make a result look real must make it fail:

- the swap probe: each scored question names another scored disease (options unchanged). Today's
  earlier control (a random-weight model, distractors drawn from anywhere) kept its accuracy
  under this swap (42.2% before and after): it had learnt which strings were familiar, not which
  disease they belong to. Here every option is a scored disease's value, as frequent in the
  eval-driven set as the answer, so only the association scores, and the swap must remove the gain;
- the base model's answers in place of the adapter's, and shuffled answer labels: no gain left.

The three-seed run with the oracle arm (every sample about the scored diseases: the ceiling), the
negative world and the cross-fact variant are in test_control_heavy.py.
"""

from __future__ import annotations

import json
import random

import pytest
from control import (
    SIGNIFICANT,
    accuracies,
    compare,
    evaluate_on,
    overall,
    p_after_moving,
    report,
    run_world,
    runs,
    scored_records,
    swapped_records,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def control_run(tmp_path_factory):
    return run_world(tmp_path_factory.mktemp("control"), "control", ["ci.yaml"], seeds=[1])


def test_the_workflow_finds_the_effect_with_headroom(control_run):
    rep = report(control_run)
    acc = accuracies(rep)
    print(f"\ncontrol, seed 1: {acc}")
    assert set(acc) == {"base", "eval_driven", "random"}, acc
    for name in ("eval_driven vs base", "eval_driven vs random"):
        o = overall(rep, name)
        print(f"{name}: {o['diff']:+.3f}, p {o['p_value']:.2g}, Holm over the family {o['p_holm']:.2g}")
        assert o["verdict"] == SIGNIFICANT, (name, o)
        assert o["p_holm"] < 0.01, (name, o)
    # headroom: two of eval-driven's answers moving against it leave the verdicts significant
    ev = control_run / "results/eval"
    _, base = runs([ev / "base.json"])
    _, rnd = runs([ev / "random-seed1.json"])
    _, arm = runs([ev / "eval_driven-seed1.json"])
    for other in (base, rnd):
        assert p_after_moving(other, arm, k=2) < 0.01


def test_held_out_and_nothing_guarded_away(control_run):
    """The protocol the default config uses, and a world whose facts are learnt, not copied."""
    rep = report(control_run)
    assert rep["design"]["held_out"] is True, rep["design"]
    sel = json.loads((control_run / "results/select/eval_driven/statistics.json").read_text())
    assert sum(sel["overall"]["dropped_guard"].values()) == 0
    sft = json.loads((control_run / "results/sft/sft_statistics.json").read_text())
    assert sft["contamination"]["max_longest_shared_chars"] < 13
    # recall found the facts: the eval-driven set holds nearly every sample about the scored diseases
    oracle = {x.strip() for x in (control_run / "../../demo/control/data/oracle_ids.txt").read_text().splitlines()}
    oracle = {x for x in oracle if x and not x.startswith("#")}
    picked = {
        json.loads(x)["id"] for x in (control_run / "results/select/eval_driven/fiction.jsonl").read_text().splitlines()
    }
    assert len(picked & oracle) >= 0.9 * len(oracle)


def test_the_swap_probe_removes_the_gain(control_run, tmp_path):
    """Each question about another scored disease (whose value is not among the options): a model
    that learnt the associations has nothing to prefer, so eval-driven falls to random's level."""
    paths = evaluate_on(control_run, swapped_records(control_run), tmp_path, ["eval_driven-seed1", "random-seed1"])
    _, rnd = runs([paths["random-seed1"]])
    _, arm = runs([paths["eval_driven-seed1"]])
    swapped = compare(rnd, arm)
    original = overall(report(control_run), "eval_driven vs random")
    print(
        f"\nswap probe: eval-driven {arm.mean():.3f} vs random {rnd.mean():.3f} (p {swapped['p_value']:.2g}); "
        f"unswapped gain {original['diff']:+.3f}"
    )
    assert original["verdict"] == SIGNIFICANT
    assert swapped["verdict"] != SIGNIFICANT and swapped["p_value"] > 0.05
    assert arm.mean() < 0.45  # chance is 0.25


def test_sabotage_base_in_place_of_the_adapter(control_run):
    ev = control_run / "results/eval"
    _, base = runs([ev / "base.json"])
    _, rnd = runs([ev / "random-seed1.json"])
    fake = base.copy()  # an evaluation that never applied the adapter
    assert compare(base, fake)["verdict"] != SIGNIFICANT
    assert compare(rnd, fake)["verdict"] != SIGNIFICANT


def test_sabotage_shuffled_labels(control_run):
    """Every answer letter replaced by another option's: the models' answers no longer score."""
    rng = random.Random(0)
    answers = {}
    for q in scored_records(control_run):
        right = "ABCD"[: len(q["choices"])].index(q["answer"])
        answers[q["id"]] = "ABCD"[rng.choice([k for k in range(len(q["choices"])) if k != right])]
    ev = control_run / "results/eval"
    _, base = runs([ev / "base.json"], answers)
    _, rnd = runs([ev / "random-seed1.json"], answers)
    _, arm = runs([ev / "eval_driven-seed1.json"], answers)
    assert compare(base, arm)["verdict"] != SIGNIFICANT
    assert compare(rnd, arm)["verdict"] != SIGNIFICANT
