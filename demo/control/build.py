"""Writes the control world of the real-model controls (synthetic, written for the project, English):
300 fictional diseases, each with the drug that treats it and the germ that causes it, every fact
stated in four question-answer phrasings across a pool in the four pool formats, plus unrelated
general samples; and the benchmarks of three protocols over that one pool:

- ``heldout`` (the positive control): recall with reworded questions (split ``test``, no answers)
  about 30 diseases A, score cloze questions (split ``val``) about the same facts;
- ``crossfact``: recall with the drug questions of A, score the germ questions of A;
- ``negative``: recall with the questions of A, score the questions of 30 other diseases B.

Nothing here is medical knowledge. English, because the control's model (SmolLM2-135M-Instruct)
is an English-centric model: Chinese costs it about 1.7 tokens a character and it barely reads it.

    python demo/control/build.py       # rewrites demo/control/data/ (deterministic)

What rules the shortcuts out (docs/results.md "Real-model controls"):
- every option of a question is the value of the same type of another scored disease, so in the
  eval-driven set every option is as frequent as the answer: "prefer the familiar string" scores
  chance; all drugs and germs are 8 letters, so no option wins by its length;
- the scored questions are worded unlike every pool sample (no 13-character string in common, so
  the contamination guard has nothing to drop) and unlike the recall questions;
- ``swap_diseases`` writes the swap probe: each scored question about another scored disease
  whose value is not among its options; a model that learnt the associations falls to chance.
- ``oracle_ids.txt``: the pool ids of every sample about the diseases A (the learnability ceiling).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data"
SEED = 11
N_DISEASES, N_SCORED = 300, 30
FACTS = ("drug", "germ")
CONS, VOWELS = "bdfgklmnprstvz", "aeiou"
KINDS = ("fever", "palsy", "pox", "rot", "itch", "ague")

# Pool phrasings: the disease in the prompt, the fact at the start of the answer (as an answer to
# a short question would give it). None shares a 13-character string with a benchmark question.
SAY = {
    "drug": [
        ("What should a patient with {d} take?", "{x}. Patients with {d} are given {x}."),
        ("How is {d} treated?", "With {x}: {d} responds well to {x}."),
        ("Which drug works against {d}?", "{x} works against {d}."),
        ("My child has {d}. What medicine helps?", "{x}. Children with {d} take {x} too."),
    ],
    "germ": [
        ("What gives people {d}?", "{x}. The germ {x} is behind {d}."),
        ("Which germ is to blame in {d}?", "{x} is to blame in {d}."),
        ("How do people catch {d}?", "{x}. People catch {d} from the germ {x}."),
        ("Where does {d} come from?", "From {x}, a germ; {x} infection leads to {d}."),
    ],
}
# Scored (cloze: each option's text is scored as the answer) and recall wordings.
SCORED = {"drug": "The drug of choice for {d} is", "germ": "The organism that causes {d} is"}
RECALL = {"drug": "Name the treatment prescribed in cases of {d}.", "germ": "Name the pathogen found in cases of {d}."}
# The RL split of the heldout world (split ``rl``, labelled, never scored): the recall questions'
# labelled twin in a third wording, multiple choice (demo/control/rl.yaml).
# No 13-character string in common with a scored question (the RL prompts pass the guard) nor
# with a pool sample (tests/test_control_world.py).
RL_ASK = {"drug": "Doctors treat {d} with which medicine?", "germ": "{d}: which organism sets it off?"}
GENERAL = [
    ("Write a short birthday wish.", "Happy birthday! Wishing you a year full of joy and good friends."),
    (
        "How can I improve my English listening?",
        "Listen to native audio for twenty minutes every day, first for gist, then for detail.",
    ),
    ("Suggest a weekend activity.", "Take a walk in a park, or visit a museum with friends."),
    (
        "How do I cook rice?",
        "Rinse the rice, add water, bring it to the boil, then simmer it covered for fifteen minutes.",
    ),
    ("What is compound interest?", "Interest earned on both the principal and the interest added before."),
    ("How should I water a cactus?", "Water it deeply but rarely, and let the soil dry out in between."),
    (
        "Recommend a first programming language.",
        "Python: its syntax is readable and it has a library for almost everything.",
    ),
    ("How do I keep basil alive?", "Give it sun, water it when the topsoil is dry, and pinch off the flowers."),
]
FORMATS = ("alpaca", "sharegpt", "messages", "qa")


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(CONS if i % 2 == 0 else VOWELS) for i in range(n))


def make_world(rng: random.Random) -> list[dict]:
    """Diseases (a 5-letter stem and a kind: at most 10 letters) with an 8-letter drug (-ol) and
    an 8-letter germ (-ia), every stem distinct in its first four letters."""
    world, prefixes, values = [], set(), set()
    while len(world) < N_DISEASES:
        stem = _word(rng, 5)
        d = stem.capitalize() + " " + rng.choice(KINDS)
        x = _word(rng, 6).capitalize() + "ol"
        g = _word(rng, 6).capitalize() + "ia"
        keys = {stem[:4], x[:4].lower(), g[:4].lower()}
        if len(keys) < 3 or keys & prefixes or x in values or g in values:
            continue
        prefixes |= keys
        values |= {x, g}
        world.append({"disease": d, "drug": x, "germ": g})
    return world


def record(fmt: str, q: str, a: str) -> dict:
    if fmt == "alpaca":
        return {"instruction": q, "input": "", "output": a}
    if fmt == "sharegpt":
        return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    if fmt == "messages":
        return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    return {"question": q, "answer": a}


def questions(rng: random.Random, group: list[dict], facts=FACTS, start: int = 0) -> tuple[list[dict], list[dict]]:
    """The scored cloze questions (4 options: the answer and 3 same-type values of other diseases
    of ``group``) and the recall questions about ``group`` (reworded, options drawn alike, no
    answer: like C-Eval's test split)."""
    scored, recall = [], []
    for i, w in enumerate(group, start=start):
        for fact in facts:
            options, recall_options = ([*rng.sample([o[fact] for o in group if o is not w], 3), w[fact]] for _ in "ab")
            rng.shuffle(options)
            rng.shuffle(recall_options)
            scored.append(
                {
                    "id": f"{fact}-{i}",
                    "question": SCORED[fact].format(d=w["disease"]),
                    **dict(zip("ABCD", options)),
                    "answer": "ABCD"[options.index(w[fact])],
                    "explanation": "",
                }
            )
            recall.append(
                {
                    "id": f"recall-{fact}-{i}",
                    "question": RECALL[fact].format(d=w["disease"]),
                    **dict(zip("ABCD", recall_options)),
                    "answer": "",
                    "explanation": "",
                }
            )
    return scored, recall


def rl_questions(rng: random.Random, group: list[dict]) -> list[dict]:
    """The labelled RL questions about ``group``: each fact asked in the RL wording, the answer
    among 3 same-type values of other diseases of ``group`` (options drawn afresh)."""
    out = []
    for i, w in enumerate(group):
        for fact in FACTS:
            options = [*rng.sample([o[fact] for o in group if o is not w], 3), w[fact]]
            rng.shuffle(options)
            out.append(
                {
                    "id": f"rl-{fact}-{i}",
                    "question": RL_ASK[fact].format(d=w["disease"]),
                    **dict(zip("ABCD", options)),
                    "answer": "ABCD"[options.index(w[fact])],
                    "explanation": "",
                }
            )
    return out


def swap_diseases(scored: list[dict], world: list[dict]) -> list[dict]:
    """The swap probe: each scored question asks about another disease of the same scored group
    whose value is none of its options (options and answer unchanged): a model that learnt the
    associations has no option to prefer, one that learnt which strings are familiar still does.
    The partner is the first such disease after the question's own, in group order. Takes the
    builder's rows (options A-D) or the workflow's normalised records (``choices``)."""
    by_name = {w["disease"]: w for w in world}
    names = list(dict.fromkeys(disease_of(q) for q in scored))
    out = []
    for q in scored:
        fact, own = fact_of(q), disease_of(q)
        options = set(q["choices"]) if "choices" in q else {q[c] for c in "ABCD" if c in q}
        k = names.index(own)
        partner = next(
            n
            for n in (names[(k + step) % len(names)] for step in range(1, len(names)))
            if by_name[n][fact] not in options
        )
        out.append({**q, "question": SCORED[fact].format(d=partner), "swapped_from": own})
    return out


def fact_of(q: dict) -> str:
    """The fact a question asks (its id is ``<fact>-<n>``, or ``<subject>/<split>/<fact>-<n>``)."""
    return str(q["id"]).rsplit("/", 1)[-1].split("-")[0]


def disease_of(q: dict) -> str:
    """The disease a scored question names."""
    pre, post = SCORED[fact_of(q)].split("{d}")
    return q["question"][len(pre) : len(q["question"]) - len(post)]


def pool_id(raw: dict) -> str:
    """The id pool_prepare gives a raw record (its content hash)."""
    from evalsel.data.pool import normalise_record

    return normalise_record(raw, source="control", medical=True)["id"]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(out: Path = OUT) -> None:
    rng = random.Random(SEED)
    world = make_world(rng)
    pools: dict[str, list[dict]] = {f: [] for f in FORMATS}
    about: dict[str, list[str]] = {}  # disease -> pool ids of its samples
    for k, w in enumerate(world):
        for fact in FACTS:
            for j, (q, a) in enumerate(SAY[fact]):
                fmt = FORMATS[(k + j) % len(FORMATS)]
                raw = record(fmt, q.format(d=w["disease"], x=w[fact]), a.format(d=w["disease"], x=w[fact]))
                pools[fmt].append(raw)
                about.setdefault(w["disease"], []).append(pool_id(raw))
    general = [
        record("sharegpt", q + ("" if j < len(GENERAL) else f" (take {j // len(GENERAL) + 1})"), a)
        for j, (q, a) in enumerate(GENERAL * 15)
    ]
    for fmt, rows in pools.items():
        rng.shuffle(rows)
        _jsonl(out / f"pool_{fmt}.jsonl", rows)
    _jsonl(out / "pool_general.jsonl", general)

    group_a, group_b = world[:N_SCORED], world[N_SCORED : 2 * N_SCORED]
    scored_a, recall_a = questions(rng, group_a)
    scored_b, _ = questions(rng, group_b, start=N_SCORED)
    bench = {
        "heldout": (recall_a, scored_a),
        "crossfact": (
            [r for r in recall_a if r["id"].startswith("recall-drug")],
            [q for q in scored_a if q["id"].startswith("germ")],
        ),
        "negative": (recall_a, scored_b),
    }
    for name, (recall, scored) in bench.items():
        _jsonl(out / name / "test" / "fiction.jsonl", recall)
        _jsonl(out / name / "val" / "fiction.jsonl", scored)
    # its own generator: the files above stay as they were before the RL split was added
    _jsonl(out / "heldout" / "rl" / "fiction.jsonl", rl_questions(random.Random(SEED + 1), group_a))
    (out / "oracle_ids.txt").write_text(
        "# pool ids of every sample about the 30 scored diseases (heldout and crossfact)\n"
        + "".join(i + "\n" for w in group_a for i in about[w["disease"]]),
        encoding="utf-8",
    )
    (out / "oracle_negative_ids.txt").write_text(
        "# pool ids of every sample about the 30 diseases the negative world scores\n"
        + "".join(i + "\n" for w in group_b for i in about[w["disease"]]),
        encoding="utf-8",
    )
    (out / "world.json").write_text(json.dumps(world, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    n_pool = sum(map(len, pools.values())) + len(general)
    print(f"{len(world)} diseases, {n_pool} pool samples, {len(scored_a)} scored questions a protocol")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    main()
