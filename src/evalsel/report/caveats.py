"""What a comparison report can and cannot say, computed from the run: the answers each model gave
(a model that answers one letter to most questions is not measuring knowledge), pairs of models
that agreed on every question (no information, not evidence of equality), and the sentences of
the report's section "What this report can and cannot say". report.py builds the numbers and
renders; this module reads them.
"""

from __future__ import annotations

from collections import Counter

from evalsel.core.records import LETTERS

OVERALL = "overall"
#: a model whose most frequent answer takes more than this share of the questions is flagged
DEFAULT_MAX_LETTER_SHARE = 0.6


def answer_distribution(evals: dict[str, dict], ids: list[str]) -> dict:
    """The answers of each model on the questions ``ids`` (the compared ones), and the answer key's.

    Returns ``{"key": {...}, "models": {name: {...}}}``, each ``{"n", "counts": {letter: k},
    "unanswered", "top", "top_share"}`` (``unanswered``: no parsable answer, generate mode).
    """
    keep = set(ids)
    first = next(iter(evals.values()))
    key = [q["answer"] for q in first["questions"] if q["id"] in keep]
    out = {"key": _distribution(key), "models": {}}
    for name, ev in sorted(evals.items(), key=lambda kv: kv[0] != "base"):  # base first
        out["models"][name] = _distribution([q.get("pred") for q in ev["questions"] if q["id"] in keep])
    return out


def _distribution(answers: list) -> dict:
    counts = Counter(a for a in answers if a is not None)
    n = len(answers)
    top, k = counts.most_common(1)[0] if counts else (None, 0)
    return {
        "n": n,
        "counts": {letter: counts[letter] for letter in LETTERS if counts[letter]},
        "unanswered": n - sum(counts.values()),
        "top": top,
        "top_share": k / n if n else 0.0,
    }


def degenerate_models(distribution: dict, max_share: float = DEFAULT_MAX_LETTER_SHARE) -> list[dict]:
    """Models whose most frequent answer takes more than ``max_share`` of the questions, with the
    answer key's share of that letter (what such a model's accuracy mostly reflects)."""
    key = distribution["key"]
    out = []
    for name, d in distribution["models"].items():
        if d["top"] is not None and d["top_share"] > max_share:
            out.append(
                {
                    "model": name,
                    "letter": d["top"],
                    "count": d["counts"][d["top"]],
                    "n": d["n"],
                    "share": d["top_share"],
                    "key_share": key["counts"].get(d["top"], 0) / key["n"] if key["n"] else 0.0,
                }
            )
    return out


def identical_pairs(comparisons: list[dict]) -> list[str]:
    """Names of the comparisons whose two sides gave the same answer to every question (every seed)."""
    return [c["name"] for c in comparisons if c["scopes"][OVERALL]["discordant_rate"] == 0]


def degenerate_sentence(d: dict, where: str = "") -> str:
    return (
        f"{d['model']} answered {d['letter']} to {d['count']} of {d['n']} questions{where} "
        f"({100 * d['share']:.0f}%; the answer key has {d['letter']} for {100 * d['key_share']:.0f}%): its accuracy "
        f"mostly measures how often {d['letter']} is right, and a difference against it can come from a change of "
        "preferred letter rather than of knowledge."
    )


def identical_sentence(name: str, where: str = "") -> str:
    b, a = name.split(" vs ")
    return (
        f"{b} and {a} gave the same answer to every question{where}: the comparison carries no information "
        "(its interval is a point); it is not evidence that the two are equal in general."
    )


def can_and_cannot(rep: dict) -> list[str]:
    """The sentences of "What this report can and cannot say", in the order a reader needs them."""
    d, seeds = rep["design"], rep["seeds"]
    out = []
    if d["held_out"]:
        out.append(
            f"Held out: the scored questions ({', '.join(d['eval_splits'])}) played no part in selection (recall "
            f"used {', '.join(d['recall_splits']) or 'no split'}), so a gain is evidence about unseen questions of "
            "these subjects, as far as those splits are alike."
        )
    else:
        out.append(
            f"Not held out: split(s) {', '.join(d['overlap'])} were recall queries and scored questions. A gain "
            "shows that data similar to these very questions helps on them; it says nothing about unseen questions."
        )
    if len(seeds) == 1:
        out.append(
            f"One training seed ({seeds[0]}) per arm: the intervals cover the sampling of questions, not training "
            "noise; a gain of a few points could be one lucky run. Add seeds to train.seeds."
        )
    else:
        main = _main_comparison(rep)
        if main and main["per_seed"]:
            gaps = [100 * s["scopes"][OVERALL]["diff"] for s in main["per_seed"]]
            spread = (sum((g - sum(gaps) / len(gaps)) ** 2 for g in gaps) / (len(gaps) - 1)) ** 0.5
            out.append(
                f"{len(seeds)} training seeds, pooled by the sign-flip test. {main['name']}, per seed: "
                + ", ".join(f"{g:+.1f}" for g in gaps)
                + f" points (sd {spread:.1f})"
                + (
                    "; every seed in the same direction."
                    if len({g > 0 for g in gaps}) == 1
                    else "; the seeds disagree in sign."
                )
            )
        else:
            out.append(f"{len(seeds)} training seeds, pooled by the sign-flip test.")
    n = rep["n_questions"][OVERALL]
    first = rep["comparisons"][0]["scopes"][OVERALL] if rep["comparisons"] else None
    if first is not None:
        mds = first.get("min_significant_difference")
        mdds = [c["scopes"][OVERALL].get("mdd_80") for c in rep["comparisons"] if c["scopes"][OVERALL].get("mdd_80")]
        text = f"{n} scored questions: "
        text += (
            "no difference can be significant at this size."
            if mds is None
            else f"no difference below {100 * mds:.1f} points can ever be significant"
        )
        if mdds:
            text += (
                f", and at the disagreement observed differences below {100 * min(mdds):.1f} to "
                f"{100 * max(mdds):.1f} points are more likely missed than found (80% power)"
            )
        out.append(text + ': "no detectable difference" is not "no difference".')
    for deg in rep.get("degenerate_models", []):
        out.append(degenerate_sentence(deg))
    for name in rep.get("identical_comparisons", []):
        out.append(identical_sentence(name))
    for bench, t in (rep.get("transfer") or {}).items():
        for deg in t.get("degenerate_models", []):
            out.append(degenerate_sentence(deg, f" of {bench}"))
        for name in t.get("identical_comparisons", []):
            out.append(identical_sentence(name, f" of {bench}"))
    out.append(_guard_sentence(rep))
    return [s for s in out if s]


def _direction(gaps: list[float]) -> str:
    """Whether the seeds agree on the sign of a gap."""
    pos, neg = sum(g > 0 for g in gaps), sum(g < 0 for g in gaps)
    if pos == len(gaps) or neg == len(gaps):
        return "every seed in the same direction."
    if pos and neg:
        return "the seeds disagree in sign."
    return "no seed goes the other way (some show no difference)."


def _main_comparison(rep: dict) -> dict | None:
    """The comparison a reader looks for first: the first selection arm against its random arm,
    else against base."""
    comps = rep["comparisons"]
    specs = rep.get("arm_specs") or {}
    for c in comps:
        if specs.get(c["a"], {}).get("strategy") == "random":
            return c
    return comps[0] if comps else None


def _guard_sentence(rep: dict) -> str:
    """What the contamination guard did, and where to judge it."""
    parts = []
    dropped = {k: v for k, v in (rep.get("guard_drops") or {}).items() if v}
    total = sum(dropped.values())
    if rep.get("guard_drops") is None:
        parts.append("No contamination summary was given to this report.")
    elif total:
        reasons = ", ".join(f"{v} {k}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
        parts.append(
            f"The contamination guard dropped {total} training samples as matching a benchmark item"
            + (f" ({reasons})" if reasons else "")
            + ": results/sft/contamination_review.md shows each reason's evidence to judge them; its matches "
            "include false ones, so the sets are, if anything, cleaner than needed."
        )
    else:
        parts.append("The contamination guard dropped no training sample (results/sft/contamination.json).")
    for bench, t in (rep.get("transfer") or {}).items():
        ex = t.get("excluded") or {}
        if ex.get("left_out"):
            parts.append(
                f"{ex['left_out']} of {ex['items']} {bench} items were left out of its comparisons because the guard "
                f"matched a training sample to them (results/transfer/{bench}/contamination/); some of these matches "
                "may be false."
            )
    return " ".join(parts)
