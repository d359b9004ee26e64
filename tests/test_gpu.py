"""evalsel.core.gpu.claim: devices by file locks, SLURM assignments kept, concurrent jobs never share a GPU."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evalsel.core import gpu

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpu.COUNT_ENV, gpu.TIMEOUT_ENV, gpu.CLAIMED_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path / "locks"))


def test_zero_gpus_requested_is_a_no_op():
    with gpu.claim(0, count=4) as ids:
        assert ids == []
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_host_without_gpu_runs_on_cpu():
    with gpu.claim(1, count=0) as ids:
        assert ids == []
        assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_claim_sets_and_restores_visible_devices():
    with gpu.claim(2, count=3) as ids:
        assert ids == ["0", "1"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


@contextlib.contextmanager
def held_by_other_job(dev: str):
    """Another job's lock on device ``dev`` (a separate open file description, as in another process)."""
    lock_dir = gpu.default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"gpu-{dev}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield
    finally:
        os.close(fd)


def test_busy_device_is_skipped_then_claim_times_out():
    with held_by_other_job("0"):
        with gpu.claim(1, count=2) as ids:
            assert ids == ["1"]
        with held_by_other_job("1"):
            t0 = time.monotonic()
            with pytest.raises(TimeoutError, match="no 1 free GPUs among 0,1"), gpu.claim(1, count=2, timeout=0.3):
                pass
            assert time.monotonic() - t0 >= 0.3
    with gpu.claim(2, count=2) as both:  # released: both free again
        assert both == ["0", "1"]


def test_waiting_claim_holds_nothing():
    """A job waiting for two devices must not sit on the one that is free (no hold-and-wait)."""
    with held_by_other_job("0"):
        with pytest.raises(TimeoutError), gpu.claim(2, count=2, timeout=0.2):
            pass
        with held_by_other_job("1"):  # would raise BlockingIOError had the failed claim kept it
            pass


def test_child_of_a_claiming_job_keeps_its_devices():
    """torchrun workers inherit the parent's claim instead of waiting for its locks."""
    with gpu.claim(2, count=4) as parent:
        with gpu.claim(2, count=4, timeout=0) as child:
            assert child == parent == ["0", "1"]
        with pytest.raises(RuntimeError, match="needs 3 GPUs but a parent job gave it 2"), gpu.claim(3, count=4):
            pass
    assert gpu.CLAIMED_ENV not in os.environ


def test_more_gpus_than_the_host_has_is_refused():
    with pytest.raises(RuntimeError, match="needs 3 GPUs but this host offers 2"), gpu.claim(3, count=2):
        pass
    with pytest.raises(ValueError), gpu.claim(-1, count=2):
        pass


def test_count_override_from_environment(monkeypatch):
    monkeypatch.setenv(gpu.COUNT_ENV, "3")
    assert gpu.count_gpus() == 3
    with gpu.claim(1) as ids:
        assert ids == ["0"]
    monkeypatch.setenv(gpu.COUNT_ENV, "two")
    with pytest.raises(ValueError, match="EVALSEL_GPU_COUNT"):
        gpu.count_gpus()


def test_user_restricted_devices_are_the_pool(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    with held_by_other_job("2"), gpu.claim(1) as ids:
        assert ids == ["5"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with gpu.claim(1, count=8) as ids:
        assert ids == []


def test_slurm_assignment_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with gpu.claim(2) as ids:
        assert ids == ["0", "1"]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert not (tmp_path / "locks").exists()  # no lock taken under a scheduler


def test_slurm_job_split_into_single_gpu_tasks_is_refused(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match="needs 2 GPUs but SLURM gave it 1.*one task per GPU"), gpu.claim(2):
        pass


def test_default_lock_dir_is_per_user(monkeypatch):
    monkeypatch.delenv(gpu.LOCK_DIR_ENV)
    assert gpu.default_lock_dir().name.startswith("evalsel-gpu-locks-")


_WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, {src!r})
    from evalsel.core.gpu import claim
    out, rounds = sys.argv[1], int(sys.argv[2])
    for _ in range(rounds):
        with claim(1, count=2, timeout=30) as ids:
            start = time.monotonic()
            assert os.environ["CUDA_VISIBLE_DEVICES"] == ids[0]
            time.sleep(0.15)
            end = time.monotonic()
        with open(out, "a") as fh:
            fh.write(json.dumps({{"dev": ids[0], "start": start, "end": end}}) + "\\n")
    """
)


def _worker(tmp_path: Path, name: str, rounds: int) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"{name}.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WORKER.format(src=str(SRC)), str(out), str(rounds)], env=os.environ.copy()
    )
    return proc, out


def test_concurrent_processes_never_share_a_device(tmp_path):
    """Three jobs, two devices: at every instant each device has at most one holder."""
    procs = [_worker(tmp_path, f"w{i}", 4) for i in range(3)]
    for proc, _ in procs:
        assert proc.wait(timeout=60) == 0
    spans = [json.loads(line) for _, out in procs for line in out.read_text().splitlines()]
    assert len(spans) == 12
    assert {s["dev"] for s in spans} <= {"0", "1"}
    for dev in ("0", "1"):
        mine = sorted((s["start"], s["end"]) for s in spans if s["dev"] == dev)
        for (_, end), (start, _) in itertools.pairwise(mine):
            assert start >= end, f"device {dev} held by two jobs at once"
    # three jobs on two devices: the third had to wait, so at some time both devices were busy
    busy_both = any(
        a["dev"] != b["dev"] and a["start"] < b["end"] and b["start"] < a["end"] for a in spans for b in spans
    )
    assert busy_both


def test_a_killed_job_releases_its_device(tmp_path):
    ready = tmp_path / "ready"
    code = textwrap.dedent(
        f"""
        import sys, time, pathlib
        sys.path.insert(0, {str(SRC)!r})
        from evalsel.core.gpu import claim
        with claim(1, count=1):
            pathlib.Path({str(ready)!r}).write_text("x")
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        with pytest.raises(TimeoutError), gpu.claim(1, count=1, timeout=0.2):
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        with gpu.claim(1, count=1, timeout=5) as ids:
            assert ids == ["0"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
