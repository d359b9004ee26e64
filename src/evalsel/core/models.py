"""Small helpers shared by the model jobs (train, evaluate, merge, DPO): what a model directory
holds, and the job's share of CPU threads. Kept apart from train.py so that editing the training
loop does not re-run every evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a PEFT adapter (rather than a full model)."""
    return (Path(path) / "adapter_config.json").is_file()


def set_threads(threads: int | None, processes: int = 1) -> None:
    """Cap torch's CPU threads to the job's share: tiny models slow down many times when several
    jobs each use every core."""
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads) // max(1, processes)))
