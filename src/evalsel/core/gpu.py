"""Per-job GPU assignment: concurrent Snakemake jobs on one box never share a device.

Snakemake caps GPU jobs with ``--resources gpu=G`` but never sets ``CUDA_VISIBLE_DEVICES``;
:func:`claim` takes device ids by exclusive file locks and sets it for the job.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Overrides the number of GPUs found on this host (tests; hosts without nvidia-smi).
COUNT_ENV = "EVALSEL_GPU_COUNT"
#: Directory of the per-device lock files (one per host, shared by every job of every run).
LOCK_DIR_ENV = "EVALSEL_GPU_LOCK_DIR"
#: Seconds to wait for free devices before giving up.
TIMEOUT_ENV = "EVALSEL_GPU_TIMEOUT_S"
#: Set by :func:`claim` next to CUDA_VISIBLE_DEVICES so that child processes (torchrun
#: workers) keep their parent's devices instead of waiting for locks the parent holds.
CLAIMED_ENV = "EVALSEL_GPU_CLAIMED"
DEFAULT_TIMEOUT_S = 3600.0
_POLL_S = 0.5


def default_lock_dir() -> Path:
    """The lock directory: ``$EVALSEL_GPU_LOCK_DIR`` or ``<tmp>/evalsel-gpu-locks-<user>``."""
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return Path(env)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Path(tempfile.gettempdir()) / f"evalsel-gpu-locks-{user}"


def count_gpus(ask_torch: bool = True) -> int:
    """Number of GPUs on this host, without initialising CUDA in this process.

    ``$EVALSEL_GPU_COUNT`` wins; else ``nvidia-smi -L``; else (``ask_torch``)
    ``torch.cuda.device_count()`` run in a child process (so this process can still choose its
    devices). Returns 0 when none is found. Refuses a non-integer or negative override.
    """
    env = os.environ.get(COUNT_ENV)
    if env not in (None, ""):
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"{COUNT_ENV}={env!r} is not an integer") from None
        if n < 0:
            raise ValueError(f"{COUNT_ENV}={env!r} is negative")
        return n
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("nvidia-smi -L failed (%s); asking torch in a child process", exc)
    if not ask_torch:
        return 0
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return 0
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return int(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        log.warning("could not count GPUs with torch (%s); assuming none", exc)
        return 0


def _already_assigned() -> str | None:
    """Who already confined this process to its devices: "SLURM", "a parent job", or None."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return None
    if "SLURM_JOB_ID" in os.environ:
        return "SLURM"
    if os.environ.get(CLAIMED_ENV) == visible:
        return "a parent job"
    return None


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and getattr(torch, "cuda", None) and torch.cuda.is_initialized())


def _try_lock_all(candidates: list[str], n: int, lock_dir: Path) -> list[tuple[str, int]]:
    """Lock the first ``n`` free devices; return ``[(id, fd)]`` or ``[]`` holding nothing.

    All-or-nothing: a job never holds some devices while waiting for others, so two jobs
    each wanting two of three devices cannot deadlock.
    """
    held: list[tuple[str, int]] = []
    for dev in candidates:
        fd = os.open(lock_dir / f"gpu-{dev}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((dev, fd))
        if len(held) == n:
            return held
    for _, fd in held:
        os.close(fd)
    return []


def _assigned_ids(owner: str, visible: str, n: int) -> list[str]:
    """The devices SLURM (or a claiming parent) gave this job; refuses fewer than ``n``."""
    ids = [d.strip() for d in visible.split(",") if d.strip()]
    if len(ids) < n:
        hint = (
            ": the job was probably split into one task per GPU; request the GPUs for a single "
            "task (resources gpu=N without tasks, or gres=gpu:N), see docs/cluster.md"
            if owner == "SLURM"
            else ""
        )
        raise RuntimeError(
            f"this job needs {n} GPUs but {owner} gave it {len(ids)} (CUDA_VISIBLE_DEVICES={visible}){hint}"
        )
    log.info("GPUs assigned by %s: %s", owner, ",".join(ids))
    return ids


def _wait_for_locks(candidates: list[str], n: int, lock_dir: Path, timeout: float | None) -> list[tuple[str, int]]:
    """Lock ``n`` of ``candidates``, polling until ``timeout`` seconds (``$EVALSEL_GPU_TIMEOUT_S``)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        held = _try_lock_all(candidates, n, lock_dir)
        if held:
            return held
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no {n} free GPUs among {','.join(candidates)} after {timeout:.0f}s "
                f"(locks in {lock_dir}; lower --resources gpu= or wait for other jobs)"
            )
        if not waited:
            log.info("all GPUs busy; waiting up to %.0fs for %d of %s", timeout, n, ",".join(candidates))
            waited = True
        time.sleep(_POLL_S)


@contextlib.contextmanager
def claim(
    n: int,
    *,
    count: int | None = None,
    lock_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> Iterator[list[str]]:
    """Hold ``n`` GPUs for the duration of the block and expose only them to CUDA.

    Yields the device ids now in ``CUDA_VISIBLE_DEVICES`` (strings):

    * inside a SLURM job that set ``CUDA_VISIBLE_DEVICES``, or in a child of a job that
      claimed (``$EVALSEL_GPU_CLAIMED``): those, untouched (already isolated);
    * else the first ``n`` free devices, locked with ``flock`` in ``lock_dir`` (released on
      exit, and by the kernel if the process dies), chosen among ``CUDA_VISIBLE_DEVICES``
      when the user restricted it, else among ``0..count-1``;
    * ``[]`` (a no-op) when ``n`` is 0 or the host has no GPU: the job runs on CPU.

    ``count`` overrides :func:`count_gpus`. Waits up to ``timeout`` seconds
    (``$EVALSEL_GPU_TIMEOUT_S``, default 3600) while other jobs hold the devices.

    Refuses: ``n`` < 0; more GPUs than the host (or the SLURM allocation) has, which no
    wait can satisfy (on SLURM this is the sign of a multi-GPU job split into single-GPU
    tasks, see docs/cluster.md); a process that already initialised CUDA (the variable
    would no longer apply). Raises ``TimeoutError`` when the devices stay busy.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"cannot claim {n} GPUs")
    if n == 0:
        yield []
        return

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    owner = _already_assigned()
    if owner:
        yield _assigned_ids(owner, visible, n)
        return

    if visible is not None:
        # An empty value (or -1) is the user hiding every GPU: honour it.
        candidates = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    else:
        total = count_gpus() if count is None else int(count)
        candidates = [str(i) for i in range(total)]
    if not candidates:
        log.info("no GPU on this host: running on CPU")
        yield []
        return
    if n > len(candidates):
        raise RuntimeError(f"the job needs {n} GPUs but this host offers {len(candidates)} ({','.join(candidates)})")
    if _cuda_initialised():
        raise RuntimeError("CUDA is already initialised in this process: claim GPUs before touching torch.cuda")

    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    held = _wait_for_locks(candidates, n, lock_dir, timeout)
    ids = [dev for dev, _ in held]
    for _dev, fd in held:
        # The holder's pid in the lock file tells a person who holds which device.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    claimed_before = os.environ.get(CLAIMED_ENV)
    os.environ["CUDA_VISIBLE_DEVICES"] = os.environ[CLAIMED_ENV] = ",".join(ids)
    log.info("claimed GPUs %s (locks in %s)", ",".join(ids), lock_dir)
    try:
        yield ids
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        if claimed_before is None:
            os.environ.pop(CLAIMED_ENV, None)
        else:
            os.environ[CLAIMED_ENV] = claimed_before
        for _, fd in held:
            os.close(fd)  # closing the only descriptor drops the flock


def device_claim(device: str | None, gpus: int):
    """Context holding the job's GPU (evalsel.core.gpu.claim) for "auto"/"cuda"; a no-op for "cpu",
    for a pinned "cuda:N" (the user chose the device) and for backends without a device (None)."""
    import contextlib

    if not gpus or device not in ("auto", "cuda"):
        return contextlib.nullcontext([])
    return claim(int(gpus))
