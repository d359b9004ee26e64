"""Numeric precision per host: bf16 only on GPUs that support it (Ampere and newer), else fp16;
without CUDA, bf16 training (autocast) on CPUs that compute bf16 natively (AVX512-BF16 or AMX:
about twice as fast as fp32 there), fp32 elsewhere. One place decides, and every downgrade is
logged, so that training, evaluation, merging and serving on a V100, a T4 or a laptop work with
the default ``precision: bf16``.
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


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles): there, bf16 autocast
    is about twice as fast as fp32; elsewhere it is emulated and slower."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve(precision: str, cuda: bool | None = None, what: str = "training", cpu_bf16: bool | None = None) -> str:
    """The precision to use for ``precision`` on this host: fp16 in place of bf16 on a GPU without
    bf16; without CUDA, bf16 where the CPU computes it natively (``cpu_bf16``, detected when None),
    else fp32. Every change is logged naming ``what`` it applies to."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    cuda = cuda_available() if cuda is None else cuda
    if not cuda:
        if precision == "bf16" and (cpu_bf16_supported() if cpu_bf16 is None else cpu_bf16):
            log.info("no CUDA device: %s in bf16 on the CPU (native bf16 instructions)", what)
            return "bf16"
        if precision != "fp32":
            log.info("no CUDA device: %s in fp32 instead of %s (this CPU has no native bf16)", what, precision)
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
