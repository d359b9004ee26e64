"""The configured arms resolved into the settings each one's jobs run with: one place, read by the
config check and by the rules (rules/common.smk), so that a setting has one source.

An arm is a strategy with settings (config ``arms``):
- ``cosine``: the embedding's vectors (``embedding``) and the ``recall`` settings, with the arm's
  ``recall`` overrides and ``budget``;
- ``rds``: RDS+ vectors of the base model (``rds``), selection ``round_robin_max`` over the
  subjects; ``budget`` required; no similarity threshold or max_similarity in that space (its
  cosines are not calibrated: the guard's text checks and the embedding's max_similarity, when
  a cosine arm embedded the pool, still apply to its samples);
- ``dsir``: hashed n-gram importance resampling (evalsel.select.dsir), ``budget`` required;
- ``listed``: the pool samples whose ids the file ``ids`` names (evalsel.select.listed): an oracle set,
  a hand-picked set, a selection made elsewhere;
- ``random``: uniform over the pool, sized like the arm named by ``match``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

STRATEGIES = ("cosine", "rds", "dsir", "listed", "random")
# The recall settings an arm's jobs read (block_size and backend are the machine's, not the arm's).
RECALL_KEYS = (
    "strategy",
    "top_k",
    "similarity_threshold",
    "max_similarity",
    "topk_mean_m",
    "budget",
    "per_subject_quota",
    "near_duplicate_threshold",
)
# The arm keys and the strategies they apply to.
APPLIES_TO = {
    "recall": ("cosine", "rds"),
    "budget": ("cosine", "rds", "dsir"),
    "dsir": ("dsir",),
    "mix_ratio": ("cosine", "rds", "dsir", "listed"),
    "ids": ("listed",),
    "match": ("random",),
}
# RDS+ (Ivison et al. 2025): per-subject max similarity, round-robin over subjects.
RDS_RECALL = {"strategy": "round_robin_max", "similarity_threshold": -1.0, "max_similarity": None}


@dataclass(frozen=True)
class Arm:
    name: str
    strategy: str
    recall: dict = field(default_factory=dict)  # cosine and rds
    dsir: dict = field(default_factory=dict)
    budget: int | None = None
    mix_ratio: float | None = None  # selection arms
    match: str | None = None  # random arms
    ids: str | None = None  # listed arms: the file of pool ids

    @property
    def selects(self) -> bool:
        """True for an arm that selects by a signal (not random)."""
        return self.strategy != "random"

    @property
    def recalls(self) -> bool:
        """True for an arm selected by the recall job over vectors (cosine, rds)."""
        return self.strategy in ("cosine", "rds")


def resolve(config: dict) -> dict[str, Arm]:
    """Every configured arm with its effective settings, in the configured order."""
    out = {}
    for spec in config["arms"]:
        name, strategy = spec["name"], spec["strategy"]
        recall: dict = {}
        budget = spec.get("budget")
        if strategy in ("cosine", "rds"):
            recall = {k: config["recall"].get(k) for k in RECALL_KEYS}
            if strategy == "rds":
                recall.update(RDS_RECALL, budget=None)
            recall.update(spec.get("recall", {}))
            if budget is not None:
                recall["budget"] = budget
            budget = recall["budget"]
        out[name] = Arm(
            name=name,
            strategy=strategy,
            recall=recall,
            dsir=dict(spec.get("dsir", {})),
            budget=budget,
            mix_ratio=spec.get("mix_ratio", config["sft"]["random_mix_ratio"]) if strategy != "random" else None,
            match=spec.get("match") if strategy == "random" else None,
            ids=str(spec["ids"]) if strategy == "listed" and spec.get("ids") else None,
        )
    return out


def problems(config: dict) -> list[str]:
    """Contradictions between the arms and the rest of the configuration, one line each."""
    out: list[str] = []
    names = [s["name"] for s in config["arms"]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return [f"arms: the names {repeated} are used more than once (each arm needs its own name)"]
    arms = resolve(config)
    selecting = [a.name for a in arms.values() if a.selects]
    if not selecting:
        return ["arms: no arm selects (every arm is random): add a cosine, rds, dsir or listed arm"]
    for spec, a in zip(config["arms"], arms.values()):
        where = f"arms.{a.name}"
        for key, allowed in APPLIES_TO.items():
            if key in spec and a.strategy not in allowed:
                out.append(f"{where}: '{key}' does not apply to strategy {a.strategy!r} (only {', '.join(allowed)})")
        out += _strategy_problems(a, where, selecting)
    return out


def _strategy_problems(a: Arm, where: str, selecting: list[str]) -> list[str]:
    """What one arm's strategy needs and its settings lack."""
    if a.strategy == "random":
        if not a.match:
            return [f"{where}: a random arm needs 'match', the arm it is sized like (one of {selecting})"]
        if a.match not in selecting:
            return [f"{where}: match {a.match!r} is not a selecting arm (one of {selecting})"]
    elif a.strategy == "listed":
        if not a.ids:
            return [f"{where}: strategy 'listed' needs 'ids', a file of pool ids (one a line)"]
        if not Path(a.ids).is_file():
            return [f"{where}: the ids file {a.ids!r} does not exist (paths are relative to the working directory)"]
    elif a.strategy in ("rds", "dsir") and a.budget is None:
        return [f"{where}: strategy {a.strategy!r} needs a budget (the number of samples to select)"]
    elif a.strategy == "cosine":
        r, out = a.recall, []
        if r["strategy"] in ("train_topk_mean", "round_robin_max") and not r.get("budget"):
            out.append(f"{where}: recall strategy {r['strategy']!r} needs recall.budget (or the arm's budget)")
        if r["max_similarity"] is not None and r["similarity_threshold"] >= r["max_similarity"]:
            out.append(
                f"{where}: recall.similarity_threshold ({r['similarity_threshold']}) must be below "
                f"recall.max_similarity ({r['max_similarity']}): nothing could be recalled"
            )
        return out
    return []


def guard_uses_vectors(config: dict) -> bool:
    """True when a cosine arm embeds the pool: the guard of every arm then adds max_similarity."""
    return any(a.strategy == "cosine" for a in resolve(config).values())
