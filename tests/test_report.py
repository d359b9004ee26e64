"""Comparison report on hand-built eval files: numbers agree with hand computation, bad inputs are refused."""

from __future__ import annotations

import json

import pytest

from evalsel.core.io import InputError
from evalsel.report.compare import build_comparison, parse_model, write_report
from evalsel.report.stats import mcnemar_exact, wilson_interval

SUBJECTS = {"basic_medicine": 10, "physician": 20}


def _eval(model, correct_by_subject, mode="logprob"):
    qs = []
    for subject, flags in correct_by_subject.items():
        for i, ok in enumerate(flags):
            qs.append(
                {
                    "id": f"{subject}/val/{i}",
                    "subject": subject,
                    "answer": "A",
                    "pred": "A" if ok else "B",
                    "probs": {"A": 0.6 if ok else 0.4, "B": 0.4 if ok else 0.6},
                    "correct": bool(ok),
                }
            )
    subjects = {s: {"n": len(f), "correct": sum(f), "accuracy": sum(f) / len(f)} for s, f in correct_by_subject.items()}
    n = sum(len(f) for f in correct_by_subject.values())
    k = sum(sum(f) for f in correct_by_subject.values())
    return {
        "model": model,
        "base_model": "tiny",
        "adapter": None,
        "mode": mode,
        "splits": ["val"],
        "few_shot": 0,
        "subjects": subjects,
        "overall": {"n": n, "correct": k, "accuracy": k / n},
        "unparsed": 0,
        "questions": qs,
    }


def _write(tmp_path, model, flags, **kw):
    path = tmp_path / f"{model}.json"
    path.write_text(json.dumps(_eval(model, flags, **kw)), encoding="utf-8")
    return str(path)


# base: basic 5/10, physician 8/20
BASE = {"basic_medicine": [1] * 5 + [0] * 5, "physician": [1] * 8 + [0] * 12}
# eval_driven: basic gains 4, loses 0 -> 9/10; physician gains 9, loses 1 -> 16/20
ED = {"basic_medicine": [1] * 5 + [1] * 4 + [0], "physician": [1] * 7 + [0] + [1] * 9 + [0] * 3}
# random: basic same as base; physician gains 2, loses 2
RND = {"basic_medicine": list(BASE["basic_medicine"]), "physician": [0, 0] + [1] * 6 + [1, 1] + [0] * 10}


@pytest.fixture
def one_seed(tmp_path):
    return [
        _write(tmp_path, "base", BASE),
        _write(tmp_path, "eval_driven-seed1", ED),
        _write(tmp_path, "random-seed1", RND),
    ]


def _comp(rep, name):
    return next(c for c in rep["comparisons"] if c["name"] == name)


def test_numbers_match_hand_computation(one_seed, tmp_path):
    contamination = tmp_path / "contamination.json"
    rows = [
        {
            "id": "physician/val/0",
            "subject": "physician",
            "evaluated": True,
            "max_cosine": 0.91,
            "longest_shared_chars": 9,
            "dropped": [{"id": "x", "shared": 14}],
        },
        {
            "id": "physician/val/1",
            "subject": "physician",
            "evaluated": True,
            "max_cosine": 0.62,
            "longest_shared_chars": 0,
            "dropped": [],
        },
        {
            "id": "basic_medicine/val/0",
            "subject": "basic_medicine",
            "evaluated": True,
            "max_cosine": 0.70,
            "longest_shared_chars": 0,
            "dropped": [],
        },
        {
            "id": "basic_medicine/dev/0",
            "subject": "basic_medicine",
            "evaluated": False,
            "max_cosine": 0.99,
            "longest_shared_chars": 12,
            "dropped": [],
        },
    ]
    contamination.write_text(json.dumps({"ngram_n": 13, "items": 4, "max_cosine": 0.99, "benchmark": rows}))
    rep = build_comparison(
        one_seed,
        arms=["eval_driven", "random"],
        seeds=[1],
        alpha=0.05,
        bootstrap_samples=2000,
        seed=0,
        recall_splits=["val"],
        eval_splits=["val"],
        contamination=str(contamination),
    )
    assert rep["n_questions"] == {"basic_medicine": 10, "physician": 20, "overall": 30}
    base = rep["models"]["base"]["scopes"]
    assert base["physician"]["accuracy"] == 8 / 20
    assert (base["physician"]["ci_low"], base["physician"]["ci_high"]) == wilson_interval(8, 20, 0.05)
    assert (base["overall"]["ci_low"], base["overall"]["ci_high"]) == wilson_interval(13, 30, 0.05)

    ed = _comp(rep, "eval_driven vs base")["scopes"]
    assert ed["basic_medicine"]["b_right_a_wrong"] == 4 and ed["basic_medicine"]["a_right_b_wrong"] == 0
    assert ed["basic_medicine"]["p_value"] == mcnemar_exact(4, 0) == 0.125
    assert ed["basic_medicine"]["verdict"] == "no detectable difference"  # +40 points, yet n=10 cannot show it
    assert ed["physician"]["p_value"] == mcnemar_exact(9, 1) == pytest.approx(0.021484375)
    assert ed["physician"]["verdict"] == "significant gain"
    assert ed["overall"]["b_right_a_wrong"] == 13 and ed["overall"]["a_right_b_wrong"] == 1
    assert ed["overall"]["diff"] == pytest.approx(12 / 30)
    assert ed["overall"]["ci_low"] > 0 and ed["overall"]["verdict"] == "significant gain"
    # Holm over the two subjects: sorted p (0.0215, 0.125) -> (2 * 0.0215, max(0.043, 0.125))
    assert ed["physician"]["p_holm"] == pytest.approx(2 * 0.021484375)
    assert ed["basic_medicine"]["p_holm"] == pytest.approx(0.125)
    assert ed["basic_medicine"]["min_significant_difference"] == pytest.approx(0.6)

    rnd = _comp(rep, "random vs base")["scopes"]
    assert rnd["overall"]["diff"] == 0 and rnd["overall"]["p_value"] == 1.0
    assert rnd["overall"]["verdict"] == "no detectable difference"
    head = _comp(rep, "eval_driven vs random")["scopes"]["overall"]
    assert head["diff"] == pytest.approx(12 / 30)

    assert rep["design"]["overlap"] == ["val"] and not rep["design"]["held_out"]
    assert rep["contamination"]["max_cosine"] == 0.99 and rep["contamination"]["benchmark"] == "[4 items]"
    by = rep["contamination_by_subject"]
    # only evaluated items count: the dev item with cosine 0.99 is not one
    assert by["overall"] == {
        "items": 3,
        "with_dropped_samples": 1,
        "with_shared_chars": 1,
        "max_longest_shared_chars": 9,
        "max_cosine": 0.91,
        "median_max_cosine": 0.70,
        "cosine_at_least_0.9": 1,
    }
    assert by["physician"]["items"] == 2 and by["basic_medicine"]["max_cosine"] == 0.70


def test_loss_verdict(tmp_path):
    worse = {"basic_medicine": [0] * 10, "physician": [0] * 20}
    paths = [
        _write(tmp_path, "base", {"basic_medicine": [1] * 10, "physician": [1] * 20}),
        _write(tmp_path, "random-seed3", worse),
    ]
    rep = build_comparison(paths, arms=["random"], seeds=[3], bootstrap_samples=200)
    r = rep["comparisons"][0]["scopes"]["overall"]
    assert r["verdict"] == "significant loss" and r["diff"] == -1.0


def test_several_seeds_aggregate(tmp_path):
    # two seeds: seed 1 is ED, seed 2 is base itself -> per question, seed-mean correctness
    paths = [
        _write(tmp_path, "base", BASE),
        _write(tmp_path, "eval_driven-seed1", ED),
        _write(tmp_path, "eval_driven-seed2", BASE),
    ]
    rep = build_comparison(paths, arms=["eval_driven"], seeds=[1, 2], bootstrap_samples=500)
    summ = rep["arm_summary"]["eval_driven"]["scopes"]["overall"]
    assert summ["per_seed"] == {"1": pytest.approx(25 / 30), "2": pytest.approx(13 / 30)}
    assert summ["accuracy"] == pytest.approx(19 / 30)
    comp = rep["comparisons"][0]
    r = comp["scopes"]["overall"]
    assert r["test"].startswith("exact sign-flip")
    # differences (2 * seed-mean - 2 * base): +1 on 13 questions, -1 on 1: the sign-flip test equals McNemar(13, 1)
    assert r["p_value"] == pytest.approx(mcnemar_exact(13, 1))
    assert r["diff"] == pytest.approx(6 / 30)
    assert [ps["seed"] for ps in comp["per_seed"]] == [1, 2]
    assert comp["per_seed"][1]["scopes"]["overall"]["p_value"] == 1.0


def test_write_report_files(one_seed, tmp_path):
    out = tmp_path / "report"
    write_report(
        one_seed,
        out / "compare.md",
        out / "compare.json",
        out / "compare.png",
        arms=["eval_driven", "random"],
        seeds=[1],
        bootstrap_samples=500,
        recall_splits=["dev"],
        eval_splits=["val"],
    )
    md = (out / "compare.md").read_text(encoding="utf-8")
    for text in (
        "basic_medicine",
        "physician",
        "overall",
        "significant gain",
        "Held out",
        "Wilson",
        "McNemar",
        "eval_driven vs random",
    ):
        assert text in md, text
    data = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert data["design"]["held_out"] is True
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_refuses_mismatched_inputs(tmp_path, one_seed):
    with pytest.raises(ValueError, match="random-seed2"):
        build_comparison(one_seed, arms=["random"], seeds=[2])
    other = tmp_path / "other"
    other.mkdir()
    short = dict(BASE, physician=BASE["physician"][:-1])
    paths = [_write(other, "base", BASE), _write(other, "random-seed1", short)]
    with pytest.raises(InputError, match=r"random-seed1\.json: field 'questions': question set differs"):
        build_comparison(paths, arms=["random"], seeds=[1])
    paths = [_write(other, "base", BASE), _write(other, "random-seed1", RND, mode="generate")]
    with pytest.raises(InputError, match="field 'mode'"):
        build_comparison(paths, arms=["random"], seeds=[1])
    bad = _eval("random-seed1", RND)
    bad["questions"][3]["correct"] = "yes"
    (other / "random-seed1.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"questions\[3\]\.correct"):
        build_comparison([paths[0], str(other / "random-seed1.json")], arms=["random"], seeds=[1])
    with pytest.raises(ValueError):
        parse_model("eval_driven")


def test_arms_are_compared_with_base_random_and_each_other_holm_over_the_family(one_seed, tmp_path):
    """Four arms: each vs base, each selection arm vs the random arm sized like it, the selection
    arms with each other; the overall verdicts use Holm over all of these comparisons, so a gain
    that would pass alone (p 0.031) does not pass among ten."""
    # weak: base plus 6 right answers on physician (exact McNemar 6/0: p 0.03125)
    weak = {"basic_medicine": list(BASE["basic_medicine"]), "physician": [1] * 14 + [0] * 6}
    paths = one_seed + [_write(tmp_path, "dsir-seed1", weak), _write(tmp_path, "rds-seed1", ED)]
    specs = {
        "eval_driven": {"strategy": "cosine"},
        "rds": {"strategy": "rds"},
        "dsir": {"strategy": "dsir"},
        "random": {"strategy": "random", "match": "eval_driven"},
    }
    rep = build_comparison(
        paths, arms=list(specs), seeds=[1], bootstrap_samples=500, arm_specs=specs, recall_splits=["test"]
    )
    names = [c["name"] for c in rep["comparisons"]]
    assert names == [
        "eval_driven vs base",
        "rds vs base",
        "dsir vs base",
        "random vs base",
        "eval_driven vs random",
        "rds vs random",
        "dsir vs random",
        "rds vs eval_driven",
        "dsir vs eval_driven",
        "dsir vs rds",
    ]
    assert rep["family_size"] == 10
    raw = [c["scopes"]["overall"]["p_value"] for c in rep["comparisons"]]
    from evalsel.report.compare import holm

    assert [c["scopes"]["overall"]["p_holm"] for c in rep["comparisons"]] == pytest.approx(holm(raw))
    d = _comp(rep, "dsir vs base")["scopes"]["overall"]
    assert d["p_value"] == pytest.approx(mcnemar_exact(6, 0)) and d["p_value"] < 0.05
    assert d["p_holm"] > 0.05 and d["verdict"] == "no detectable difference"
    assert _comp(rep, "rds vs base")["scopes"]["overall"]["verdict"] == "significant gain"
    same = _comp(rep, "rds vs eval_driven")["scopes"]["overall"]
    assert same["diff"] == 0 and same["discordant_rate"] == 0
    md_path = tmp_path / "c.md"
    write_report(
        paths,
        md_path,
        tmp_path / "c.json",
        tmp_path / "c.png",
        arms=list(specs),
        seeds=[1],
        bootstrap_samples=500,
        arm_specs=specs,
    )
    md = md_path.read_text(encoding="utf-8")
    assert (
        "random (random, sized like eval_driven)" in md
        and "an overall row: Holm over the 10 comparisons of the targeted benchmark" in md
    )


def test_transfer_leaves_out_what_any_arm_matched(one_seed, tmp_path):
    """Per-arm guard files: the union of their items is left out for every model."""
    g1 = tmp_path / "contamination/eval_driven.json"
    g2 = tmp_path / "contamination/random.json"
    g1.parent.mkdir()
    g1.write_text(json.dumps({"items": 30, "contaminated_items": 1, "contaminated": {"physician/val/8": []}}))
    g2.write_text(json.dumps({"items": 30, "contaminated_items": 1, "contaminated": {"basic_medicine/val/9": []}}))
    rep = build_comparison(
        one_seed,
        arms=["eval_driven", "random"],
        seeds=[1],
        bootstrap_samples=500,
        transfer={"other": {"evals": one_seed, "splits": ["val"], "contamination": [str(g1), str(g2)]}},
    )
    t = rep["transfer"]["other"]
    assert t["n_questions"]["overall"] == 28
    assert t["excluded"] == {"items": 30, "left_out": 2, "by_arm": {"eval_driven": 1, "random": 1}}
    # physician/val/8: eval_driven right, base wrong -> one gain fewer than on all 30
    assert _comp(t, "eval_driven vs base")["scopes"]["overall"]["b_right_a_wrong"] == 12
