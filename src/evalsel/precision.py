"""Numeric precision per host: bf16 only on GPUs that support it (Ampere and newer), else fp16;
fp32 without CUDA. One place decides, and every downgrade is logged, so that training, evaluation,
merging and serving on a V100 or T4 work with the default ``precision: bf16``.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

PRECISIONS = ("bf16", "fp16", "fp32")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    """Whether the current CUDA device computes in bfloat16 natively (False without CUDA)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def resolve(precision: str, cuda: bool | None = None, what: str = "training") -> str:
    """The precision to use for ``precision`` on this host: fp32 without CUDA, fp16 in place of
    bf16 on a GPU without bf16; the change is logged naming ``what`` it applies to."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    cuda = cuda_available() if cuda is None else cuda
    if not cuda:
        if precision != "fp32":
            log.info("no CUDA device: %s in fp32 instead of %s", what, precision)
        return "fp32"
    if precision == "bf16" and not bf16_supported():
        log.warning(
            "this GPU has no bf16 support (compute capability < 8.0, e.g. V100 or T4): %s in fp16 instead of bf16", what
        )
        return "fp16"
    return precision


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def inference_dtype(device: str, what: str = "inference"):
    """The weights' dtype for inference on ``device``: bf16 where supported, else fp16 on CUDA; fp32 on CPU."""
    if not str(device).startswith("cuda"):
        return torch_dtype("fp32")
    return torch_dtype(resolve("bf16", cuda=True, what=what))


def resolve_device(device: str = "auto") -> str:
    """Return the torch device for ``device`` ("auto" picks CUDA when present). Refuses CUDA when absent."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"embedding.device is {device!r} but no CUDA device is visible; use 'auto' or 'cpu'")
    return device
