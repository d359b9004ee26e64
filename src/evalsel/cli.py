"""The ``evalsel`` command: ``serve`` (OpenAI-compatible server), ``report`` (comparison report
from eval files), ``dpo`` (DPO on a preference file) outside Snakemake.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from evalsel.core.io import InputError, setup_logging
from evalsel.core.settings import default

log = logging.getLogger("evalsel")


def _serve(ns: argparse.Namespace) -> int:
    import math

    from evalsel.serve.app import serve

    if not (math.isfinite(ns.timeout) and ns.timeout > 0):
        raise SystemExit(f"evalsel serve: --timeout must be a finite number of seconds above 0, got {ns.timeout!r}")
    if ns.max_body_mb <= 0 or not math.isfinite(ns.max_body_mb):
        raise SystemExit(f"evalsel serve: --max-body-mb must be a finite number above 0, got {ns.max_body_mb!r}")
    api_key = None
    if ns.api_key_env:
        api_key = os.environ.get(ns.api_key_env)
        if not api_key:
            # the variable's name only; its value is never printed
            raise SystemExit(
                f"evalsel serve: --api-key-env {ns.api_key_env}: that environment variable is unset or empty"
            )
    serve(
        ns.model,
        adapter=ns.adapter,
        host=ns.host,
        port=ns.port,
        api_key=api_key,
        model_name=ns.model_name,
        max_queue=ns.max_queue,
        timeout=ns.timeout,
        max_body_bytes=int(ns.max_body_mb * 2**20),
    )
    return 0


def _report(ns: argparse.Namespace) -> int:
    from evalsel.report.compare import write_report

    out = Path(ns.out_dir)
    rep = write_report(
        ns.evals,
        out / "compare.md",
        out / "compare.json",
        out / "compare.png",
        arms=ns.arms,
        seeds=ns.seeds,
        alpha=ns.alpha,
        bootstrap_samples=ns.bootstrap_samples,
        seed=ns.seed,
        recall_splits=ns.recall_splits,
        eval_splits=ns.eval_splits,
        recall_statistics=ns.recall_statistics,
        contamination=ns.contamination,
        sft_statistics=ns.sft_statistics,
    )
    for comp in rep["comparisons"]:
        r = comp["scopes"]["overall"]
        print(
            f"{comp['name']}: {100 * r['diff']:+.1f} pts [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}], "
            f"p={r['p_value']:.3g}: {r['verdict']}"
        )
    print(f"report written to {out}/compare.md")
    return 0


# The settings options of `dpo` and `rl`: given ones are passed, the others keep the settings'
# defaults (config/config.yaml's values, evalsel.core.settings), so no default is written twice.
_DPO_OPTIONS = (
    "beta",
    "epochs",
    "max_steps",
    "learning_rate",
    "per_device_batch_size",
    "max_length",
    "precision",
    "seed",
    "gpus",
)
_RL_OPTIONS = (
    "method",
    "num_generations",
    "prompts_per_step",
    "max_completion_length",
    "beta",
    "learning_rate",
    "epochs",
    "max_steps",
    "precision",
    "seed",
    "gpus",
)


def _given(ns: argparse.Namespace, names: tuple[str, ...]) -> dict:
    return {k: getattr(ns, k) for k in names if hasattr(ns, k)}


def _run_paths(ns: argparse.Namespace) -> tuple[Path, ...]:
    out = Path(ns.out_dir)
    return out / "adapter", out / "metrics.json", out / "checkpoints"


def _rl(ns: argparse.Namespace) -> int:
    from evalsel.rl.train import train_rl

    adapter, metrics, checkpoints = _run_paths(ns)
    m = train_rl(
        ns.prompts,
        ns.model,
        ns.adapter,
        adapter,
        metrics,
        checkpoints,
        curves_png=Path(ns.out_dir) / "curves.png",
        **_given(ns, _RL_OPTIONS),
    )
    print(
        f"RL adapter written to {adapter}; greedy answer reward on the prompts "
        f"{m['before']['answer_reward']:.3f} -> {m['after']['answer_reward']:.3f}"
    )
    return 0


def _dpo(ns: argparse.Namespace) -> int:
    from evalsel.train.dpo import train_dpo

    adapter, metrics, checkpoints = _run_paths(ns)
    m = train_dpo(
        ns.preferences,
        ns.model,
        ns.adapter,
        adapter,
        metrics,
        checkpoints,
        curves_png=Path(ns.out_dir) / "curves.png",
        **_given(ns, _DPO_OPTIONS),
    )
    print(
        f"DPO: reward margin {m['before'].get('rewards/margins', 0):.4f} -> {m['after'].get('rewards/margins', 0):.4f}; "
        f"adapter in {adapter}"
    )
    return 0


def _add_run_options(p: argparse.ArgumentParser, section: str) -> None:
    """The options `dpo` and `rl` share; unset, each keeps its settings' default (shown)."""

    def opt(flag: str, key: str, **kw):
        value = default(key)
        shown = f"{value[0]} (the first of {key})" if key == "train.seeds" else f"{value} ({key})"
        p.add_argument(flag, default=argparse.SUPPRESS, help=f"default {shown}", **kw)

    p.add_argument("--model", required=True, help="base model")
    p.add_argument("--out-dir", required=True)
    opt("--beta", f"{section}.beta", type=float)
    opt("--epochs", f"{section}.epochs", type=float)
    opt("--learning-rate", f"{section}.learning_rate", type=float)
    opt("--max-steps", "train.max_steps" if section == "dpo" else "rl.max_steps", type=int)
    opt("--precision", "train.precision", choices=["bf16", "fp16", "fp32"])
    opt("--seed", "train.seeds", type=int)
    opt("--gpus", "train.gpus", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalsel", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="OpenAI-compatible server (/v1/chat/completions, /v1/models)")
    p.add_argument("--model", required=True, help="merged model directory, or the base model (directory or hub name)")
    p.add_argument("--adapter", default=None, help="LoRA adapter directory to apply on --model")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="name of the environment variable holding the API key clients must send",
    )
    p.add_argument("--model-name", default=None, help="model id clients use (default: the directory name)")
    p.add_argument(
        "--max-queue",
        type=int,
        default=8,
        help="requests that may wait for the model; one more is answered 429 (default 8)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a request may wait and generate; past it: 503 while waiting, "
        "finish_reason 'length' while generating (default 300)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=4.0,
        help="largest request body in MiB; a larger one is answered 413 before it is parsed (default 4)",
    )
    p.set_defaults(func=_serve)

    _add_report(sub)
    p = sub.add_parser("dpo", help="DPO on a prompt/chosen/rejected JSONL, optionally after an SFT adapter")
    p.add_argument("--preferences", required=True)
    p.add_argument("--adapter", default=None, help="SFT adapter to continue (its frozen copy is the reference)")
    _add_run_options(p, "dpo")
    p.add_argument(
        "--batch-size",
        dest="per_device_batch_size",
        type=int,
        default=argparse.SUPPRESS,
        help=f"default {default('train.per_device_batch_size')} (train.per_device_batch_size)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=argparse.SUPPRESS,
        help=f"default {default('train.max_length')} (train.max_length)",
    )
    p.set_defaults(func=_dpo)

    p = sub.add_parser(
        "rl", help="GRPO or RLOO from an SFT adapter on RL prompts (results/rl/prompts.jsonl of rule rl_prompts)"
    )
    p.add_argument("--prompts", required=True, help="RL prompts JSONL: prompt (chat messages), choices, answer")
    p.add_argument("--adapter", required=True, help="SFT adapter (or full SFT model folder) to continue")
    _add_run_options(p, "rl")
    for flag, key in (
        ("--num-generations", "num_generations"),
        ("--prompts-per-step", "prompts_per_step"),
        ("--max-completion-length", "max_completion_length"),
    ):
        p.add_argument(flag, type=int, default=argparse.SUPPRESS, help=f"default {default('rl.' + key)} (rl.{key})")
    p.add_argument(
        "--method", choices=["grpo", "rloo"], default=argparse.SUPPRESS, help=f"default {default('rl.method')}"
    )
    p.set_defaults(func=_rl)
    return parser


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="comparison report from results/eval/*.json")
    p.add_argument("evals", nargs="+", help="eval JSON files named base.json and <arm>-seed<N>.json")
    p.add_argument("--out-dir", default="results/report")
    p.add_argument("--arms", nargs="+", default=[a["name"] for a in default("arms")])
    p.add_argument("--seeds", nargs="+", type=int, default=default("train.seeds"))
    p.add_argument("--alpha", type=float, default=default("report.alpha"))
    p.add_argument("--bootstrap-samples", type=int, default=default("report.bootstrap_samples"))
    p.add_argument("--seed", type=int, default=default("seed"), help="bootstrap seed")
    p.add_argument("--recall-splits", nargs="*", default=[])
    p.add_argument("--eval-splits", nargs="*", default=[])
    p.add_argument("--recall-statistics", default=None)
    p.add_argument("--contamination", default=None)
    p.add_argument("--sft-statistics", default=None)
    p.set_defaults(func=_report)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    setup_logging(None, logging.DEBUG if ns.verbose else logging.INFO)
    try:
        return ns.func(ns)
    except (InputError, ValueError, OSError) as exc:
        print(f"evalsel {ns.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
