"""The control world of the real-model controls (demo/control/build.py): deterministic, and built so
that the shortcuts a sceptic would suspect cannot score."""

from __future__ import annotations

import json
from collections import Counter

from conftest import REPO
from control import build_module

DATA = REPO / "demo/control/data"


def _jsonl(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_the_world_is_what_the_script_writes(tmp_path):
    build_module().main(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file())
    assert written == committed
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), rel


def test_options_are_equally_familiar_and_equally_long():
    """Every option is the same-type value of a scored disease (so the eval-driven set, which holds
    every scored disease's facts, mentions each option as often as the answer); all are 8 letters."""
    world = json.loads((DATA / "world.json").read_text())
    mod = build_module()
    for protocol in ("heldout", "crossfact", "negative"):
        scored = _jsonl(DATA / protocol / "val/fiction.jsonl")
        group = {mod.disease_of(q) for q in scored}
        values = {f: {w[f] for w in world if w["disease"] in group} for f in mod.FACTS}
        for q in scored:
            opts = [q[c] for c in "ABCD"]
            assert set(opts) <= values[mod.fact_of(q)] and len(set(opts)) == 4
            assert {len(o) for o in opts} == {8}
        # answers spread over the letters
        assert max(Counter(q["answer"] for q in scored).values()) <= 0.4 * len(scored)


def test_no_question_shares_13_characters_with_the_pool():
    """The guard's exact rule (13 letters or digits, normalised) has nothing to find: the facts are
    stated in other words, so they are learnt, not copied."""
    from evalsel.guard.leak import normalise

    grams = set()
    for path in DATA.glob("*/*/fiction.jsonl"):
        for q in _jsonl(path):
            t = normalise(q["question"])
            grams |= {t[i : i + 13] for i in range(len(t) - 12)}
    for path in DATA.glob("pool_*.jsonl"):
        for rec in _jsonl(path):
            t = normalise(json.dumps(rec, ensure_ascii=False))
            assert not any(t[i : i + 13] in grams for i in range(len(t) - 12)), rec


def test_the_swap_probe_names_a_disease_whose_value_is_not_an_option():
    mod = build_module()
    world = json.loads((DATA / "world.json").read_text())
    by = {w["disease"]: w for w in world}
    scored = _jsonl(DATA / "heldout/val/fiction.jsonl")
    swapped = mod.swap_diseases(scored, world)
    group = {mod.disease_of(q) for q in scored}
    for q, s in zip(scored, swapped):
        other = mod.disease_of(s)
        assert other != mod.disease_of(q) and other in group
        assert by[other][mod.fact_of(q)] not in {q[c] for c in "ABCD"}
        assert {k: v for k, v in s.items() if k not in ("question", "swapped_from")} == {
            k: v for k, v in q.items() if k != "question"
        }


def test_the_oracle_lists_every_sample_about_the_scored_diseases():
    mod = build_module()
    oracle = [x for x in (DATA / "oracle_ids.txt").read_text().splitlines() if x and not x.startswith("#")]
    scored = {mod.disease_of(q) for q in _jsonl(DATA / "heldout/val/fiction.jsonl")}
    about = set()
    for path in DATA.glob("pool_*.jsonl"):
        for rec in _jsonl(path):
            if any(d in json.dumps(rec) for d in scored):
                about.add(mod.pool_id(rec))
    assert set(oracle) == about and len(oracle) == len(scored) * 8
    # the negative world scores other diseases, whose samples the eval-driven recall cannot find
    negative = {mod.disease_of(q) for q in _jsonl(DATA / "negative/val/fiction.jsonl")}
    assert not negative & scored
    recall_neg = {q["question"].split("cases of ")[1].rstrip(".") for q in _jsonl(DATA / "negative/test/fiction.jsonl")}
    assert recall_neg == scored
