"""Comparison report: accuracy of base, random and eval-driven models with intervals, paired tests
on the same questions, verdicts, detectable differences and the contamination summary.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evalsel.core.io import InputError, atomic_write, read_json, write_json
from evalsel.core.records import LETTERS
from evalsel.core.settings import default
from evalsel.report.caveats import (
    DEFAULT_MAX_LETTER_SHARE,
    answer_distribution,
    can_and_cannot,
    degenerate_models,
    degenerate_sentence,
    identical_pairs,
    identical_sentence,
)
from evalsel.report.stats import (
    discordant_counts,
    mcnemar_exact,
    mcnemar_mdd,
    min_significant_count,
    min_significant_difference,
    paired_bootstrap,
    sign_flip_exact,
    verdict,
    wilson_interval,
)

log = logging.getLogger("evalsel.report.compare")

OVERALL = "overall"
_QUESTION_FIELDS = ("id", "subject", "answer", "correct")
# settings that must agree between evaluations for a paired comparison to mean anything
_SAME_SETTINGS = ("mode", "splits", "few_shot")


# --------------------------------------------------------------------------- loading


def model_name(path: str | os.PathLike) -> str:
    """The model name of an eval file: its stem (``base`` or ``{arm}-seed{seed}``)."""
    return Path(path).name[: -len(".json")] if str(path).endswith(".json") else Path(path).stem


def parse_model(name: str) -> tuple[str, int | None]:
    """``"base"`` -> ``("base", None)``; ``"eval_driven-seed42"`` -> ``("eval_driven", 42)``. Refuses other shapes."""
    if name == "base":
        return "base", None
    arm, sep, seed = name.rpartition("-seed")
    if not sep or not arm or not seed.isdigit():
        raise ValueError(f"model name {name!r} is neither 'base' nor '<arm>-seed<N>'")
    return arm, int(seed)


def load_eval(path: str | os.PathLike) -> dict:
    """Read and check one evaluation file; returns it with ``questions`` keyed in order.

    Refuses (InputError naming the file and field) a missing or malformed ``questions`` list,
    a question without ``id``/``subject``/``answer``/``correct``, a non-boolean ``correct``
    and duplicate question ids.
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, None, None, "expected a JSON object")
    qs = data.get("questions")
    if not isinstance(qs, list) or not qs:
        raise InputError(path, None, "questions", "missing or empty list")
    seen = set()
    for i, q in enumerate(qs):
        where = f"questions[{i}]"
        if not isinstance(q, dict):
            raise InputError(path, None, where, "expected an object")
        for f in _QUESTION_FIELDS:
            if f not in q:
                raise InputError(path, None, f"{where}.{f}", "missing")
        if not isinstance(q["correct"], bool):
            raise InputError(path, None, f"{where}.correct", f"expected true/false, got {q['correct']!r}")
        if q["id"] in seen:
            raise InputError(path, None, f"{where}.id", f"duplicate question id {q['id']!r}")
        seen.add(q["id"])
    for f in _SAME_SETTINGS:
        data.setdefault(f, None)
    return data


def align_evals(evals: dict[str, dict], paths: dict[str, str]) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """Check that every model was scored on the same questions with the same settings.

    Returns ``(question ids, subject of each, {model: bool correctness array in that order})``.
    Refuses differing question sets, answers, subjects or evaluation settings: a paired test on
    different questions would be meaningless.
    """
    names = list(evals)
    ref_name = "base" if "base" in evals else names[0]
    ref = evals[ref_name]
    ids = [q["id"] for q in ref["questions"]]
    subjects = [q["subject"] for q in ref["questions"]]
    ref_q = {q["id"]: q for q in ref["questions"]}
    correct = {}
    for name in names:
        ev = evals[name]
        for f in _SAME_SETTINGS:
            if ev[f] != ref[f]:
                raise InputError(paths[name], None, f, f"{ev[f]!r} differs from {ref[f]!r} in {paths[ref_name]}")
        qmap = {q["id"]: q for q in ev["questions"]}
        missing = [i for i in ids if i not in qmap]
        extra = [i for i in qmap if i not in ref_q]
        if missing or extra:
            raise InputError(
                paths[name],
                None,
                "questions",
                f"question set differs from {paths[ref_name]}: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(extra)} extra (e.g. {extra[:3]})",
            )
        for qid in ids:
            q, r = qmap[qid], ref_q[qid]
            if q["answer"] != r["answer"] or q["subject"] != r["subject"]:
                raise InputError(
                    paths[name], None, "questions", f"question {qid!r}: answer/subject differ from {paths[ref_name]}"
                )
        correct[name] = np.array([qmap[i]["correct"] for i in ids], dtype=bool)
    return ids, subjects, correct


# --------------------------------------------------------------------------- statistics


def _accuracy_row(k: float, n: int, alpha: float) -> dict:
    low, high = wilson_interval(k, n, alpha)
    return {"n": n, "correct": k, "accuracy": k / n if n else float("nan"), "ci_low": low, "ci_high": high}


def _scopes(subjects: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(name, mask) for each subject in first-seen order, then ``overall``."""
    subj = np.asarray(subjects)
    order = list(dict.fromkeys(subjects))
    return [(s, subj == s) for s in order] + [(OVERALL, np.ones(len(subj), dtype=bool))]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def _compare(
    a_runs: list[np.ndarray],
    b_runs: list[np.ndarray],
    alpha: float,
    n_boot: int,
    seed: int,
) -> dict:
    """Paired comparison of two groups of runs (one run per seed) on the same questions.

    With one run each side the test is exact McNemar on the discordant pairs. With several seeds
    a question's score is the fraction of seeds that got it right and the test is the exact
    sign-flip test of the per-question differences (identical to McNemar for one seed).
    """
    n = len(a_runs[0])
    ka = np.sum(a_runs, axis=0).astype(int)  # seeds correct per question
    kb = np.sum(b_runs, axis=0).astype(int)
    sa, sb = len(a_runs), len(b_runs)
    mean_a, mean_b = ka / sa, kb / sb
    out: dict[str, Any] = {
        "n": int(n),
        "seeds_a": sa,
        "seeds_b": sb,
        "accuracy_a": float(mean_a.mean()),
        "accuracy_b": float(mean_b.mean()),
    }
    if sa == 1 and sb == 1:
        b_only, a_only = discordant_counts(b_runs[0], a_runs[0])
        out["test"] = "exact McNemar"
        out["b_right_a_wrong"], out["a_right_b_wrong"] = b_only, a_only
        out["p_value"] = mcnemar_exact(b_only, a_only)
    else:
        # integer differences on a common scale: kb/sb - ka/sa scaled by sa*sb
        out["test"] = "exact sign-flip on per-question seed-mean correctness"
        out["p_value"] = sign_flip_exact((kb * sa - ka * sb).tolist())
        out["questions_b_better"] = int(np.sum(mean_b > mean_a))
        out["questions_a_better"] = int(np.sum(mean_a > mean_b))
    boot = paired_bootstrap(mean_a, mean_b, n_boot=n_boot, seed=seed, alpha=alpha)
    out["diff"] = boot["diff"]
    out["ci_low"], out["ci_high"] = boot["ci_low"], boot["ci_high"]
    # detectable differences use the discordance of seed-matched pairs (the noise the test sees)
    pairs = list(zip(a_runs, b_runs)) if sa == sb else [(a, b) for a in a_runs for b in b_runs]
    psi = float(np.mean([np.mean(a != b) for a, b in pairs]))
    out["discordant_rate"] = psi
    out["min_significant_difference"] = min_significant_difference(n, alpha)
    out["mdd_80"] = mcnemar_mdd(n, psi, alpha, 0.8) if psi > 0 else None
    out["verdict"] = verdict(out["diff"], out["p_value"], alpha)
    return out


def _arm_specs(arms: Sequence[str], specs: dict[str, dict] | None) -> dict[str, dict]:
    """Each arm's strategy (and, for a random arm, the arm it matches); without ``specs`` the
    two-arm convention: random matches eval_driven, every other arm is a selection."""
    out = {}
    for arm in arms:
        if specs and arm in specs and specs[arm]["strategy"] == "rl":
            # the RL stage: its method and the SFT arm it continues
            out[arm] = {k: specs[arm].get(k) for k in ("strategy", "match", "method", "start")}
        elif specs and arm in specs:
            out[arm] = {"strategy": specs[arm]["strategy"], "match": specs[arm].get("match")}
        elif arm == "random":
            out[arm] = {"strategy": "random", "match": "eval_driven" if "eval_driven" in arms else None}
        else:
            out[arm] = {"strategy": "dpo" if arm == "dpo" else "selection", "match": None}
    return out


def comparison_pairs(arms: Sequence[str], specs: dict[str, dict]) -> list[tuple[str, str]]:
    """``(b, a)`` pairs compared, "b vs a": every arm vs base; every selection arm vs every random
    arm (the one sized like it first; the report warns when sizes differ); the selection arms with
    each other (later vs earlier in the configured order); dpo vs eval_driven; rl vs the SFT arm it
    continues."""
    selecting = [a for a in arms if specs[a]["strategy"] not in ("random", "dpo", "rl")]
    randoms = [a for a in arms if specs[a]["strategy"] == "random"]
    pairs = [(arm, "base") for arm in arms]
    for arm in selecting:
        mine = sorted(randoms, key=lambda r: specs[r]["match"] != arm)  # its own random arm first
        pairs += [(arm, r) for r in mine]
    pairs += [(b, a) for i, a in enumerate(selecting) for b in selecting[i + 1 :]]
    if "dpo" in arms and "eval_driven" in arms:
        pairs.append(("dpo", "eval_driven"))
    for arm in arms:
        start = specs[arm].get("start") if specs[arm]["strategy"] == "rl" else None
        if start in arms:
            pairs.append((arm, start))
    return pairs


def _aligned(
    eval_paths: Sequence[str | os.PathLike], arms: list[str], seeds: list[int], exclude_ids: Sequence[str]
) -> tuple[dict, list[str], list[str], dict[str, np.ndarray]]:
    """``(evals, question ids, subjects, {model: correctness})`` of every model on the same
    questions, without ``exclude_ids``; refuses a missing base or arm/seed model."""
    paths = {model_name(p): str(p) for p in eval_paths}
    if "base" not in paths:
        raise ValueError("no eval file for the base model (results/eval/base.json)")
    for arm in arms:
        for s in seeds:
            if f"{arm}-seed{s}" not in paths:
                raise ValueError(f"no eval file for {arm}-seed{s} among {sorted(paths)}")
    for name in paths:
        parse_model(name)
    evals = {name: load_eval(p) for name, p in paths.items()}
    ids, subjects, correct = align_evals(evals, paths)
    if exclude_ids:  # items a training sample matches (transfer benchmarks): out for every model alike
        drop = set(exclude_ids)
        keep = np.array([i not in drop for i in ids], dtype=bool)
        if not keep.any():
            raise ValueError("every question is left out as contaminated: nothing to compare")
        ids = [i for i, k in zip(ids, keep) if k]
        subjects = [s for s, k in zip(subjects, keep) if k]
        correct = {m: c[keep] for m, c in correct.items()}
    return evals, ids, subjects, correct


def _arm_summary(groups: dict, arms: list[str], seeds: list[int], scopes, alpha: float) -> dict:
    """Per arm and scope: the seed-mean accuracy, its Wilson interval and each seed's."""
    out = {}
    for arm in arms:
        rows = {}
        for sc, m in scopes:
            accs = [float(r[m].mean()) for r in groups[arm]]
            n = int(m.sum())
            mean = float(np.mean(accs))
            # Wilson on the seed-mean proportion (the seed average is at least as precise as one run)
            low, high = wilson_interval(mean * n, n, alpha)
            rows[sc] = {
                "n": n,
                "accuracy": mean,
                "sd_over_seeds": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                "ci_low": low,
                "ci_high": high,
                "per_seed": {str(s): a for s, a in zip(seeds, accs)},
            }
        out[arm] = {"seeds": seeds, "scopes": rows}
    return out


def _comparisons(pairs, groups, correct, scopes, seeds, alpha: float, n_boot: int, seed: int) -> list[dict]:
    """Every paired comparison, Holm over the subjects of each, and over the family (every
    comparison) on the overall scope, whose verdict uses it."""
    comparisons = []
    for i, (b, a) in enumerate(pairs):
        rows = {}
        for sc, m in scopes:
            rows[sc] = _compare([r[m] for r in groups[a]], [r[m] for r in groups[b]], alpha, n_boot, seed + i)
        subj_names = [sc for sc, _ in scopes if sc != OVERALL]
        for sc, p in zip(subj_names, holm([rows[sc]["p_value"] for sc in subj_names])):
            # a subject's verdict uses its family: Holm over the subjects of this comparison
            rows[sc]["p_holm"] = p
            rows[sc]["verdict"] = verdict(rows[sc]["diff"], p, alpha)
        per_seed = []
        if len(seeds) > 1:
            for s in seeds:
                a_name = "base" if a == "base" else f"{a}-seed{s}"
                b_name = f"{b}-seed{s}"
                per_seed.append(
                    {
                        "seed": s,
                        "a": a_name,
                        "b": b_name,
                        "scopes": {
                            sc: _compare([correct[a_name][m]], [correct[b_name][m]], alpha, n_boot, seed + i)
                            for sc, m in scopes
                        },
                    }
                )
        comparisons.append({"name": f"{b} vs {a}", "a": a, "b": b, "scopes": rows, "per_seed": per_seed})
    family = holm([c["scopes"][OVERALL]["p_value"] for c in comparisons])
    for c, p in zip(comparisons, family):
        r = c["scopes"][OVERALL]
        r["p_holm"] = p
        r["verdict"] = verdict(r["diff"], p, alpha)
    return comparisons


def _models(evals: dict, correct: dict, scopes: list, alpha: float) -> dict:
    """Each model's arm, seed and accuracy (with its interval) in every scope."""
    models = {}
    for name, corr in correct.items():
        arm, s = parse_model(name)
        models[name] = {
            "arm": arm,
            "seed": s,
            "unparsed": evals[name].get("unparsed"),
            "adapter": evals[name].get("adapter"),
            "scopes": {sc: _accuracy_row(int(corr[m].sum()), int(m.sum()), alpha) for sc, m in scopes},
        }
    return models


def _design(base: dict, recall_splits: Sequence[str], eval_splits: Sequence[str]) -> dict:
    """The protocol: which splits chose the data, which were scored, and whether they overlap."""
    shared_splits = sorted(set(recall_splits) & set(eval_splits))
    return {
        "recall_splits": list(recall_splits),
        "eval_splits": list(eval_splits),
        "overlap": shared_splits,
        "held_out": not shared_splits,
        "mode": base["mode"],
        "few_shot": base["few_shot"],
        "splits": base["splits"],
        "base_model": base.get("base_model"),
    }


def build_comparison(
    eval_paths: Sequence[str | os.PathLike],
    arms: Sequence[str],
    seeds: Sequence[int],
    alpha: float = default("report.alpha"),
    bootstrap_samples: int = default("report.bootstrap_samples"),
    seed: int = 0,
    recall_splits: Sequence[str] = (),
    eval_splits: Sequence[str] = (),
    selection_statistics: dict[str, str | os.PathLike] | None = None,
    contamination: str | os.PathLike | None = None,
    sft_statistics: str | os.PathLike | None = None,
    transfer: dict | None = None,
    arm_specs: dict[str, dict] | None = None,
    overlap: str | os.PathLike | None = None,
    exclude_ids: Sequence[str] = (),
    max_letter_share: float = DEFAULT_MAX_LETTER_SHARE,
) -> dict:
    """Compute every number of the report; returns the ``compare.json`` object.

    ``transfer`` maps each transfer benchmark's name to ``{"evals": [...], "splits": [...],
    "contamination": [one guard file per arm]}``: each gets the same accuracy and paired tests,
    apart from the targeted benchmark ("gain on the targeted benchmark" vs "transfer"), with
    families of its own. ``max_letter_share``: a model whose most frequent answer takes more of
    the questions is flagged (evalsel.report.caveats).

    Refuses (InputError) eval files that disagree on questions or settings, and (ValueError)
    a missing ``base`` or an arm/seed model named in ``arms``/``seeds`` without an eval file.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    arms, seeds = [str(a) for a in arms], [int(s) for s in seeds]
    evals, ids, subjects, correct = _aligned(eval_paths, arms, seeds, exclude_ids)
    scopes = _scopes(subjects)
    log.info(
        "comparing %d models on %d questions (%s)",
        len(evals),
        len(ids),
        ", ".join(f"{s}: {int(m.sum())}" for s, m in scopes),
    )
    models = _models(evals, correct, scopes, alpha)
    groups = {"base": [correct["base"]], **{arm: [correct[f"{arm}-seed{s}"] for s in seeds] for arm in arms}}
    specs = _arm_specs(arms, arm_specs)
    comparisons = _comparisons(
        comparison_pairs(arms, specs), groups, correct, scopes, seeds, alpha, bootstrap_samples, seed
    )
    answers = answer_distribution(evals, ids)
    return {
        "design": _design(evals["base"], recall_splits, eval_splits),
        "alpha": alpha,
        "confidence": 1 - alpha,
        "bootstrap_samples": bootstrap_samples,
        "bootstrap_seed": seed,
        "min_significant_count": min_significant_count(alpha),
        "arms": arms,
        "seeds": seeds,
        "n_questions": {sc: int(m.sum()) for sc, m in scopes},
        "models": models,
        "arm_summary": _arm_summary(groups, arms, seeds, scopes, alpha),
        "comparisons": comparisons,
        "contamination": _summary(contamination),
        "contamination_by_subject": contamination_by_subject(contamination),
        "arm_specs": specs,
        "family_size": len(comparisons),
        "families": {
            "subject": f"Holm over the {len(scopes) - 1} subjects of each comparison",
            OVERALL: f"Holm over the {len(comparisons)} comparisons of the targeted benchmark",
        },
        "answers": answers,
        "max_letter_share": max_letter_share,
        "degenerate_models": degenerate_models(answers, max_letter_share),
        "identical_comparisons": identical_pairs(comparisons),
        "guard_drops": _guard_drops(sft_statistics),
        "selection_statistics": {a: _summary(p) for a, p in (selection_statistics or {}).items()},
        "overlap": read_json(overlap) if overlap else None,
        "sft_statistics": _summary(sft_statistics),
        "transfer": {
            name: _transfer(name, spec, arms, seeds, alpha, bootstrap_samples, seed, arm_specs, max_letter_share)
            for name, spec in (transfer or {}).items()
        },
    }


def _guard_drops(sft_statistics) -> dict | None:
    """Samples the contamination guard dropped, by reason (None without the statistics file)."""
    if sft_statistics is None or not Path(sft_statistics).is_file():
        return None
    return dict(read_json(sft_statistics).get("contamination", {}).get("drops_by_reason", {}))


def _transfer(
    name: str, spec: dict, arms, seeds, alpha, bootstrap_samples, seed, arm_specs=None, max_letter_share=0.6
) -> dict:
    """One transfer benchmark: the comparison of its eval files (held out by construction), without
    the items any arm's training set matches (``spec["contamination"]``: one guard file per arm)."""
    files = spec.get("contamination") or []
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    contaminated, items, by_arm = set(), None, {}
    for path in files:
        rep = read_json(path)
        items = rep["items"]
        by_arm[Path(path).stem] = rep["contaminated_items"]
        contaminated |= set(rep["contaminated"])
    sub = build_comparison(
        spec["evals"],
        arms,
        seeds,
        alpha,
        bootstrap_samples,
        seed,
        recall_splits=(),
        eval_splits=spec.get("splits", ()),
        arm_specs=arm_specs,
        exclude_ids=sorted(contaminated),
        max_letter_share=max_letter_share,
    )
    excluded = {"items": items, "left_out": len(contaminated), "by_arm": by_arm} if files else {}
    sub["families"] = {
        "subject": f"Holm over the {len(sub['n_questions']) - 1} subjects of each comparison of {name}",
        OVERALL: f"Holm over the {len(sub['comparisons'])} comparisons of {name}",
    }
    keep = (
        "n_questions",
        "models",
        "arm_summary",
        "comparisons",
        "design",
        "families",
        "answers",
        "degenerate_models",
        "identical_comparisons",
    )
    return {"name": name, **{k: sub[k] for k in keep}, "excluded": excluded}


def contamination_by_subject(path: str | os.PathLike | None, high_cosine: float = 0.9) -> dict | None:
    """Per subject and overall, over the *evaluated* benchmark items of ``contamination.json``:
    ``{"items", "with_dropped_samples", "with_shared_chars", "max_longest_shared_chars",
    "max_cosine", "median_max_cosine", "cosine_at_least_<t>"}``.

    Returns None when the file is absent or has no per-item ``benchmark`` list.
    """
    if path is None or not Path(path).is_file():
        return None
    data = read_json(path)
    rows = data.get("benchmark") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        return None
    rows = [r for r in rows if isinstance(r, dict) and r.get("evaluated", True)]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get("subject")), []).append(r)
    groups[OVERALL] = rows
    out = {}
    for name, rs in groups.items():
        cos = [float(r["max_cosine"]) for r in rs if r.get("max_cosine") is not None]
        shared = [int(r.get("longest_shared_chars") or 0) for r in rs]
        out[name] = {
            "items": len(rs),
            "with_dropped_samples": sum(1 for r in rs if r.get("dropped")),
            "with_shared_chars": sum(1 for n in shared if n > 0),
            "max_longest_shared_chars": max(shared, default=0),
            "max_cosine": max(cos) if cos else None,
            "median_max_cosine": float(np.median(cos)) if cos else None,
            f"cosine_at_least_{high_cosine}": sum(1 for c in cos if c >= high_cosine) if cos else None,
        }
    return out


def _summary(path: str | os.PathLike | None, max_depth: int = 3, max_items: int = 60) -> dict | None:
    """Scalars of a statistics file as ``{"a.b.c": value}`` down to ``max_depth`` levels.

    Long lists are counted, not copied; at most ``max_items`` entries (the rest is counted too).
    Returns None when the file is absent.
    """
    if path is None or not Path(path).is_file():
        return None
    flat: dict[str, Any] = {}

    def walk(obj, prefix, depth):
        if isinstance(obj, dict) and depth < max_depth:
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        elif isinstance(obj, dict):
            flat[prefix] = f"{{{len(obj)} keys}}"
        elif isinstance(obj, list):
            short = len(obj) <= 10 and all(isinstance(x, (int, float, str, bool)) or x is None for x in obj)
            flat[prefix] = obj if short else f"[{len(obj)} items]"
        else:
            flat[prefix] = obj

    walk(read_json(path), "", 0)
    keys = list(flat)
    out = {k: flat[k] for k in keys[:max_items]}
    if len(keys) > max_items:
        out["(more)"] = f"{len(keys) - max_items} further entries in the file"
    return out


# --------------------------------------------------------------------------- rendering


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _acc_cell(row: dict) -> str:
    return f"{_pct(row['accuracy'])} [{_pct(row['ci_low'])}, {_pct(row['ci_high'])}]"


def _fmt_scalar(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _md_block(title: str, summary: dict | None) -> list[str]:
    """A folded (HTML details) list of a statistics file's scalars: there for the record, out of the way."""
    if summary is None:
        return [f"- {title}: file not available", ""]
    lines = ["<details>", f"<summary>{title}</summary>", ""]
    lines += [f"- {k}: {_fmt_scalar(v)}" for k, v in summary.items()]
    return lines + ["", "</details>", ""]


def _context(rep: dict) -> tuple[int, dict, list[str], list[str], list[int]]:
    """``(confidence in %, design, scopes, arms, seeds)`` of a report."""
    return int(round(100 * rep["confidence"])), rep["design"], list(rep["n_questions"]), rep["arms"], rep["seeds"]


def _render_design(rep: dict) -> list[str]:
    """The design: splits, held-out flag, scoring, arms, intervals and tests."""
    conf, d, _, arms, seeds = _context(rep)
    L: list[str] = []
    L += ["## Design", ""]
    L.append(
        f"- Evaluated splits: **{', '.join(d['eval_splits']) or 'n/a'}**; recall queries from: "
        f"**{', '.join(d['recall_splits']) or 'n/a'}**."
    )
    if d["overlap"]:
        L.append(
            f"- **Not held out**: split(s) {', '.join(d['overlap'])} served both as recall queries and as "
            "evaluation questions. A gain shows that training on data similar to *these* questions helps on "
            "*these* questions; it is not evidence of a gain on unseen questions of the subject."
        )
    else:
        L.append("- **Held out**: no evaluated split was used for recall.")
    L.append(f"- Scoring: {d['mode']}, {d['few_shot']}-shot; base model: {d.get('base_model') or 'n/a'}.")
    L.append(f"- Arms: {', '.join(_arm_label(a, rep) for a in arms)}; training seeds: {', '.join(map(str, seeds))}.")
    L.append("- Questions: " + ", ".join(f"{s} {n}" for s, n in rep["n_questions"].items()) + ".")
    L.append(
        f"- Intervals: {conf}% Wilson (accuracy), {conf}% paired percentile bootstrap over questions "
        f"({rep['bootstrap_samples']} resamples, seed {rep['bootstrap_seed']}) for differences. "
        f"Tests: two-sided exact McNemar"
        + (" (one seed) / exact sign-flip on seed-mean correctness (several seeds)" if len(seeds) > 1 else "")
        + f", significance level {rep['alpha']}."
    )
    L.append("- " + _families_sentence(rep))
    L.append("")
    return L


def _families_sentence(rep: dict) -> str:
    """Each verdict's family, named once: the verdicts use the Holm-adjusted p of their family."""
    fam = rep.get("families") or {}
    parts = [f"an overall row: {fam.get(OVERALL, 'Holm over the comparisons of the report')}"]
    if len(rep["n_questions"]) > 2:
        parts.insert(0, f"a subject row: {fam.get('subject', 'Holm over the subjects of each comparison')}")
    for name, t in (rep.get("transfer") or {}).items():
        tf = t.get("families") or {}
        parts.append(f"{name}: {tf.get(OVERALL, 'Holm over its comparisons')}")
    return "Every verdict uses the Holm-adjusted p of its family (the raw p is shown beside): " + "; ".join(parts) + "."


def _render_verdicts(rep: dict) -> list[str]:
    """One line per comparison: difference, p and verdict per scope."""
    scopes = list(rep["n_questions"])
    L: list[str] = []
    L += ["## Verdicts" + (": gain on the targeted benchmark" if rep.get("transfer") else ""), ""]
    for comp in rep["comparisons"]:
        parts = []
        for sc in scopes:
            if sc != OVERALL and len(scopes) == 2:
                continue  # one subject: its row is the overall row
            r = comp["scopes"][sc]
            holm_note = f" (Holm {_p(r['p_holm'])})" if r.get("p_holm") is not None else ""
            parts.append(f"{sc} {_pts(r['diff'])} pts, p {_p(r['p_value'])}{holm_note}: {r['verdict']}")
        line = f"- **{comp['b']} vs {comp['a']}**: " + "; ".join(parts) + "."
        if comp["per_seed"]:
            gaps = [100 * ps["scopes"][OVERALL]["diff"] for ps in comp["per_seed"]]
            line += f" Per seed: {', '.join(f'{g:+.1f}' for g in gaps)} pts (sd {float(np.std(gaps, ddof=1)):.1f})."
        if comp["scopes"][OVERALL]["discordant_rate"] == 0:
            line += " The two gave the same answer to every question."
        L.append(line)
    L.append("")
    return L


def _render_caveats(rep: dict) -> list[str]:
    """What this report can and cannot say (evalsel.report.caveats), generated from the run."""
    L = ["## What this report can and cannot say", ""]
    L += [f"- {s}" for s in can_and_cannot(rep)]
    L.append("")
    return L


def _render_answers(rep: dict) -> list[str]:
    """The answers each model gave (letters, or the chosen option's position in cloze mode), with a
    warning for a model that answers one letter to most questions."""
    L = ["## The answers each model gave", ""]
    L.append(
        f"Share of each answer over the {rep['answers']['key']['n']} compared questions (cloze: the position of the "
        f"option the model scored highest). A model whose most frequent answer takes more than "
        f"{100 * rep['max_letter_share']:.0f}% is flagged."
    )
    L.append("")
    L += _answer_table(rep["answers"], {d["model"] for d in rep["degenerate_models"]})
    for deg in rep["degenerate_models"]:
        L.append(f"**Warning**: {degenerate_sentence(deg)}")
        L.append("")
    return L


def _answer_table(answers: dict, flagged: set[str]) -> list[str]:
    letters = [x for x in LETTERS if any(x in d["counts"] for d in [answers["key"], *answers["models"].values()])]
    unanswered = any(d["unanswered"] for d in answers["models"].values())
    cols = letters + (["none"] if unanswered else [])
    L = ["| model | " + " | ".join(cols) + " | most frequent |", "|---|" + "---:|" * (len(cols) + 1)]
    for name, d in [("answer key", answers["key"]), *answers["models"].items()]:
        cells = [f"{100 * d['counts'].get(x, 0) / d['n']:.0f}%" for x in letters]
        if unanswered:
            cells.append(f"{100 * d['unanswered'] / d['n']:.0f}%")
        label = f"**{name}** (flagged)" if name in flagged else name
        L.append(f"| {label} | " + " | ".join(cells) + f" | {d['top']} ({100 * d['top_share']:.0f}%) |")
    L.append("")
    return L


def _render_accuracy(rep: dict) -> list[str]:
    """Accuracy of base and each arm per scope, with intervals (seed means)."""
    conf, _, scopes, arms, seeds = _context(rep)
    L: list[str] = []
    L += [f"## Accuracy (%, {conf}% Wilson interval)", ""]
    cols = ["base"] + arms
    L.append("| scope | n | " + " | ".join(cols) + " |")
    L.append("|---|---:|" + "---|" * len(cols))
    for sc in scopes:
        cells = [_acc_cell(rep["models"]["base"]["scopes"][sc])]
        for arm in arms:
            row = rep["arm_summary"][arm]["scopes"][sc]
            cell = _acc_cell(row)
            if row["sd_over_seeds"] is not None:
                cell += f" (sd {_pct(row['sd_over_seeds'])})"
            cells.append(cell)
        name = f"**{sc}**" if sc == OVERALL else sc
        L.append(f"| {name} | {rep['n_questions'][sc]} | " + " | ".join(cells) + " |")
    if len(seeds) > 1:
        L.append("")
        L.append(
            f"Arms show the mean over {len(seeds)} seeds (sd: standard deviation across seeds); each seed is "
            "listed below."
        )
    L.append("")
    return L


def _render_comparisons(rep: dict) -> list[str]:
    """Each paired comparison in full, and per seed when there are several."""
    conf, _, scopes = _context(rep)[:3]
    L: list[str] = []
    L += ["## Paired comparisons (same questions)", ""]
    for comp in rep["comparisons"]:
        L += [f"### {comp['b']} vs {comp['a']}", ""]
        single = "b_right_a_wrong" in comp["scopes"][OVERALL]
        disc_h = f"{comp['b']} only / {comp['a']} only" + (" right" if single else " better")
        L.append(
            f"| scope | n | {comp['a']} | {comp['b']} | difference (pts) | {conf}% CI | {disc_h} | p | p (Holm) "
            "| verdict |"
        )
        L.append("|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
        for sc in scopes:
            r = comp["scopes"][sc]
            disc = (
                f"{r['b_right_a_wrong']} / {r['a_right_b_wrong']}"
                if single
                else f"{r['questions_b_better']} / {r['questions_a_better']}"
            )
            verdict_cell = f"**{r['verdict']}**" if r["verdict"] != "no detectable difference" else r["verdict"]
            name = f"**{sc}**" if sc == OVERALL else sc
            L.append(
                f"| {name} | {r['n']} | {_pct(r['accuracy_a'])} | {_pct(r['accuracy_b'])} | {_pts(r['diff'])} | "
                f"[{_pts(r['ci_low'])}, {_pts(r['ci_high'])}] | {disc} | {_p(r['p_value'])} | "
                f"{_p(r['p_holm'])} | {verdict_cell} |"
            )
        L.append("")
        if comp["per_seed"]:
            L.append("Each seed (exact McNemar against the matching model):")
            L.append("")
            L.append("| seed | scope | difference (pts) | " + f"{conf}% CI | p | verdict |")
            L.append("|---:|---|---:|---|---:|---|")
            for ps in comp["per_seed"]:
                for sc in scopes:
                    r = ps["scopes"][sc]
                    L.append(
                        f"| {ps['seed']} | {sc} | {_pts(r['diff'])} | [{_pts(r['ci_low'])}, {_pts(r['ci_high'])}] "
                        f"| {_p(r['p_value'])} | {r['verdict']} |"
                    )
            L.append("")
    return L


def _render_detectable(rep: dict) -> list[str]:
    """What the sample sizes can detect: the smallest significant difference, the 80%-power one."""
    scopes = list(rep["n_questions"])
    L: list[str] = []
    L += ["## What these sample sizes can detect", ""]
    k = rep["min_significant_count"]
    L.append(
        f"At alpha {rep['alpha']}, exact McNemar needs at least {k} discordant questions, all in one direction, "
        "before any difference can be significant. The smallest difference that could ever be significant, and "
        "the difference detectable with 80% power given the observed rate of disagreement between the models "
        '(normal approximation, Connor 1987). "not reachable": even the largest difference possible at that '
        "disagreement rate has less than 80% power."
    )
    L.append("")
    names = [c["name"] for c in rep["comparisons"]]
    L.append(
        "| scope | n | smallest significant (pts) | "
        + " | ".join(f"{n}: at 80% power (disagreement)" for n in names)
        + " |"
    )
    L.append("|---|---:|---:|" + "---:|" * len(names))
    for sc in scopes:
        first = rep["comparisons"][0]["scopes"][sc]
        mds = (
            "never"
            if first["min_significant_difference"] is None
            else f"{100 * first['min_significant_difference']:.1f}"
        )
        cells = []
        for comp in rep["comparisons"]:
            r = comp["scopes"][sc]
            if r["discordant_rate"] == 0:
                cells.append("n/a (identical answers)")
            else:
                mdd = "not reachable" if r["mdd_80"] is None else f"{100 * r['mdd_80']:.1f}"
                cells.append(f"{mdd} ({_pct(r['discordant_rate'])}%)")
        L.append(f"| {sc} | {first['n']} | {mds} | " + " | ".join(cells) + " |")
    L.append("")
    return L


def _render_selection(rep: dict) -> list[str]:
    """Selection and contamination: evaluated items against the final sets, the statistics files."""
    L: list[str] = []
    L += ["## Selection and contamination", ""]
    by_subject = rep.get("contamination_by_subject")
    if by_subject:
        L += ["### Evaluated items against the final SFT sets", ""]
        L.append(
            "Per evaluated benchmark item: training samples the n-gram guard dropped for it, the longest "
            "substring it still shares with a kept sample (shorter than the guard's n), and its highest "
            "cosine similarity to a kept sample (items that were recall queries only)."
        )
        L.append("")
        keys = list(next(iter(by_subject.values())))
        L.append("| scope | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
        L.append("|---|" + "---:|" * len(keys))
        for sc, row in by_subject.items():
            cells = ["n/a" if row[k] is None else _fmt_scalar(row[k]) for k in keys]
            L.append(f"| {sc} | " + " | ".join(cells) + " |")
        L.append("")
    L += _md_block("Contamination check (results/sft/contamination.json)", rep["contamination"])
    for arm, summary in (rep.get("selection_statistics") or {}).items():
        L += _md_block(f"Selection of {arm} (results/select/{arm}/statistics.json)", summary)
    L += _md_block("SFT sets (results/sft/sft_statistics.json)", rep["sft_statistics"])
    return L


def _render_howto(rep: dict) -> list[str]:
    """How to read the verdicts and intervals."""
    seeds = rep["seeds"]
    L: list[str] = []
    L += ["## How to read this", ""]
    L += [
        '- A verdict of *significant gain* means the paired test rejected "no difference" at the stated level; '
        "the interval says how large the gain plausibly is. *No detectable difference* does not mean the models are "
        "equal: read the interval and the detectable-difference table.",
        "- p (Holm): adjusted within the verdict's family (Design names each family); every verdict uses it. "
        "Adding arms adds comparisons to the overall family and raises the bar for each.",
        "- Models are evaluated once on a fixed question set: the intervals cover question sampling "
        + (
            "and, through the seed mean, training seeds."
            if len(seeds) > 1
            else "but not training-seed variation (one seed per arm; add seeds to train.seeds to measure it)."
        ),
        "",
    ]
    return L


def render_markdown(rep: dict) -> str:
    """The human-readable report (``compare.md``) of a :func:`build_comparison` result: one
    function per section."""
    L = ["# Eval-driven selection: comparison report", ""]
    L += _render_design(rep)
    L += _render_verdicts(rep)
    L += _render_caveats(rep)
    if rep.get("transfer"):
        L += _render_transfer(rep, _context(rep)[0])
    L += _render_accuracy(rep)
    L += _render_answers(rep)
    L += _render_comparisons(rep)
    L += _render_overlap(rep)
    L += _render_detectable(rep)
    L += _render_selection(rep)
    L += _render_howto(rep)
    return "\n".join(L)


def _arm_label(arm: str, rep: dict) -> str:
    spec = (rep.get("arm_specs") or {}).get(arm)
    if not spec:
        return arm
    if spec["strategy"] == "random" and spec.get("match"):
        return f"{arm} (random, sized like {spec['match']})"
    if spec["strategy"] == "rl":
        return f"{arm} ({spec.get('method') or 'rl'} after {spec.get('start')})"
    return f"{arm} ({spec['strategy']})"


def _render_overlap(rep: dict) -> list[str]:
    """The arms side by side: sizes, Jaccard overlap of their SFT sets, similarity to the benchmark."""
    ov = rep.get("overlap")
    if not ov:
        return []
    arms = ov["arms"]
    L = ["## The arms' training sets side by side", ""]
    L.append(
        "Jaccard overlap of the SFT sets' sample ids (shared samples in brackets), and each set's similarity to "
        f"the benchmark in one space no arm selected in: {ov['space']} (plot: results/sft/overlap.png)."
    )
    L.append("")
    L.append("| arm | samples | median similarity | " + " | ".join(arms) + " |")
    L.append("|---|---:|---:|" + "---:|" * len(arms))
    for a in arms:
        cells = [f"{ov['jaccard'][a][b]:.2f} ({ov['intersection'][a][b]})" for b in arms]
        med = ov["similarity"][a].get("median")
        L.append(
            f"| {_arm_label(a, rep)} | {ov['sizes'][a]} | {'n/a' if med is None else f'{med:.3f}'} | "
            + " | ".join(cells)
            + " |"
        )
    sizes = set(ov["sizes"].values())
    if len(sizes) > 1:
        L.append("")
        L.append(
            "The arms differ in size: a difference between two selection arms mixes the strategy with the amount "
            "of data. Give them the same budget for a head-to-head comparison."
        )
    L.append("")
    return L


def _render_transfer(rep: dict, conf: int) -> list[str]:
    """The transfer section: each benchmark that played no part in selection, overall and per subject."""
    L = ["## Transfer to benchmarks that played no part in selection", ""]
    L.append(
        "Their questions were never recall queries. The contamination guard checked every arm's SFT set against "
        "them; an item a training sample of any arm matches is left out of the comparisons for every model alike."
    )
    L.append("")
    for name, t in rep["transfer"].items():
        ex = t.get("excluded") or {}
        left = (
            f"; {ex['left_out']} of {ex['items']} items left out: the guard matched a training sample to them"
            if ex
            else ""
        )
        L += [
            f"### {name} ({', '.join(t['design']['eval_splits'])}; "
            + ", ".join(f"{s} {n}" for s, n in t["n_questions"].items())
            + f"{left})",
            "",
        ]
        arms = list(t["arm_summary"])
        L.append("| scope | n | base | " + " | ".join(arms) + " |")
        L.append("|---|---:|" + "---|" * (len(arms) + 1))
        for sc, n in t["n_questions"].items():
            cells = [_acc_cell(t["models"]["base"]["scopes"][sc])]
            cells += [_acc_cell(t["arm_summary"][a]["scopes"][sc]) for a in arms]
            L.append(f"| {'**' + sc + '**' if sc == OVERALL else sc} | {n} | " + " | ".join(cells) + " |")
        L.append("")
        L.append(
            f"| comparison | difference (pts, overall) | {conf}% CI | p | p (Holm) | smallest significant (pts) "
            "| verdict |"
        )
        L.append("|---|---:|---|---:|---:|---:|---|")
        for comp in t["comparisons"]:
            r = comp["scopes"][OVERALL]
            mds = r.get("min_significant_difference")
            L.append(
                f"| {comp['b']} vs {comp['a']} | {_pts(r['diff'])} | [{_pts(r['ci_low'])}, {_pts(r['ci_high'])}] | "
                f"{_p(r['p_value'])} | {_p(r.get('p_holm'))} | {'never' if mds is None else f'{100 * mds:.1f}'} "
                f"| {r['verdict']} |"
            )
        L.append("")
        for cname in t.get("identical_comparisons", []):
            L.append(f"- {identical_sentence(cname, f' of {name}')}")
        for deg in t.get("degenerate_models", []):
            L.append(f"- **Warning**: {degenerate_sentence(deg, f' of {name}')}")
        if t.get("identical_comparisons") or t.get("degenerate_models"):
            L.append("")
        if t.get("answers"):
            L += ["<details>", f"<summary>The answers each model gave on {name}</summary>", ""]
            L += _answer_table(t["answers"], {d["model"] for d in t.get("degenerate_models", [])})
            L += ["</details>", ""]
    return L


def plot_comparison(rep: dict, png_path: str | os.PathLike) -> None:
    """Grouped bar chart: one group per subject and overall, a bar per model/arm with Wilson error bars,
    individual seeds as dots. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = list(rep["n_questions"])
    n_questions = dict(rep["n_questions"])
    base_rows = dict(rep["models"]["base"]["scopes"])
    arm_rows = {arm: dict(rep["arm_summary"][arm]["scopes"]) for arm in rep["arms"]}
    verdicts = {c["b"]: dict(c["scopes"]) for c in rep["comparisons"] if c["a"] == "base"}
    # transfer benchmarks: their overall scores as groups of their own, right of the targeted ones
    for name, t in (rep.get("transfer") or {}).items():
        label = f"{name} (transfer)"
        scopes.append(label)
        n_questions[label] = t["n_questions"][OVERALL]
        base_rows[label] = t["models"]["base"]["scopes"][OVERALL]
        for arm in rep["arms"]:
            arm_rows[arm][label] = t["arm_summary"][arm]["scopes"][OVERALL]
        for c in t["comparisons"]:
            if c["a"] == "base":
                verdicts.setdefault(c["b"], {})[label] = c["scopes"][OVERALL]
    series = [("base", base_rows, None)]
    for arm in rep["arms"]:
        series.append((arm, arm_rows[arm], rep["arm_summary"][arm]))
    width = 0.8 / len(series)
    x = np.arange(len(scopes))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(scopes) + 2), 4.8))
    colours = plt.get_cmap("tab10")
    vs_base = verdicts
    seed_label = "single seeds"
    for j, (name, rows, arm) in enumerate(series):
        acc = np.array([rows[s]["accuracy"] for s in scopes]) * 100
        lo = np.array([rows[s]["ci_low"] for s in scopes]) * 100
        hi = np.array([rows[s]["ci_high"] for s in scopes]) * 100
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, acc, width, yerr=[acc - lo, hi - acc], capsize=3, label=name, color=colours(j), alpha=0.85)
        if arm is not None and len(arm["seeds"]) > 1:
            for i, s in enumerate(scopes):
                vals = [100 * v for v in rows[s]["per_seed"].values()]
                ax.scatter([pos[i]] * len(vals), vals, s=10, color="black", zorder=3, label=seed_label)
                seed_label = None
        if name in vs_base:
            # a star over the bar when the paired test against base is significant
            for i, s in enumerate(scopes):
                if vs_base[name][s]["verdict"] != "no detectable difference":
                    top = max([hi[i]] + [100 * v for v in rows[s].get("per_seed", {}).values()])
                    ax.text(pos[i], top + 1.0, "*", ha="center", va="bottom", fontsize=12)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{s}\n(n={n_questions[s]})" for s in scopes])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 108)
    conf = int(round(100 * rep["confidence"]))
    ax.set_title(f"Accuracy with {conf}% Wilson intervals (* paired test vs base, alpha {rep['alpha']})", pad=28)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(series) + 1, fontsize="small", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_write(png_path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


def write_report(
    eval_paths: Sequence[str | os.PathLike],
    out_md: str | os.PathLike,
    out_json: str | os.PathLike,
    out_png: str | os.PathLike,
    **kwargs,
) -> dict:
    """Build the comparison (see :func:`build_comparison` for ``kwargs``) and write md, json and png.

    Returns the report object. Everything is computed before anything is written.
    """
    rep = build_comparison(eval_paths, **kwargs)
    md = render_markdown(rep)
    plot_comparison(rep, out_png)
    write_json(out_json, rep)
    with atomic_write(out_md) as fh:
        fh.write(md)
    for comp in rep["comparisons"]:
        r = comp["scopes"][OVERALL]
        log.info(
            "%s overall: %+.1f pts [%+.1f, %+.1f], p=%.3g: %s",
            comp["name"],
            100 * r["diff"],
            100 * r["ci_low"],
            100 * r["ci_high"],
            r["p_value"],
            r["verdict"],
        )
    return rep
