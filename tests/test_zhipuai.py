"""ZhipuAI backend against a local fake server: retries, failures naming shard and item,
resume from the cache after a kill, no zero vectors, and a key that never leaks."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zhipuai")

from evalsel.core.vectors import load_vectors  # noqa: E402
from evalsel.embed.encode import EmbedSettings, ZhipuSettings, embed_pool_shard, embed_texts  # noqa: E402
from evalsel.embed.zhipu import VectorCache, ZhipuEmbedError, embed_zhipuai  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from fake_zhipuai import FakeZhipuAI, fake_vector  # noqa: E402

KEY = "zk-test-4f9c2e7d1b.SECRETPART"
DIMS = 256


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY)
    return KEY


def settings(server, cache_dir, **kw) -> ZhipuSettings:
    base = dict(
        dimensions=DIMS,
        batch_size=4,
        concurrency=2,
        max_retries=3,
        timeout_s=0.5,
        base_url=server.base_url,
        cache_dir=str(cache_dir),
    )
    base.update(kw)
    return ZhipuSettings(**base)


def expected(texts):
    mat = np.array([fake_vector(t, DIMS) for t in texts], dtype=np.float32)
    return mat / np.linalg.norm(mat, axis=1, keepdims=True)


def texts_(n, prefix="问题"):
    return [f"{prefix}{i}：患者出现发热、咳嗽{i}天" for i in range(n)]


def run(texts, s, label="results/pool/src/shard-00000.jsonl"):
    return embed_zhipuai(texts, s, label=label, backoff_base_s=0.01, backoff_max_s=0.05)


def assert_no_key(*texts):
    for t in texts:
        assert KEY not in t
        assert "SECRETPART" not in t


def test_retries_every_transient_fault(key, tmp_path):
    faults = ["429", "500", "503", "timeout", "missing_data", "wrong_count", "zero", "nan", "bad_dims", "not_json"]
    texts = texts_(10)
    with FakeZhipuAI(key, faults=faults, timeout_sleep_s=1.0) as srv:
        res = run(texts, settings(srv, tmp_path, concurrency=1, max_retries=len(faults)))
    assert res.retries == len(faults)
    assert res.requests == 3 + len(faults)
    np.testing.assert_allclose(res.vectors, expected(texts), atol=1e-6)
    assert (np.linalg.norm(res.vectors, axis=1) > 0.99).all()
    # the batch size is honoured: never more than 4 inputs a request
    assert max(len(r["texts"]) for r in srv.requests) == 4


def test_permanent_failure_names_shard_and_item_then_resumes(key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    texts = texts_(12)
    shard = "results/pool/src/shard-00003.jsonl"
    # the API dies after two good batches: items 0..7 are paid for, 8..11 are not
    with FakeZhipuAI(key, fail_after=2) as srv:
        with pytest.raises(ZhipuEmbedError) as err:
            run(texts, settings(srv, tmp_path, concurrency=1, max_retries=2), label=shard)
    msg = str(err.value)
    assert shard in msg and "item 8" in msg and "HTTP 500" in msg and "3 attempt" in msg
    assert len(VectorCache(tmp_path, "embedding-3", DIMS)) == 8
    # the rerun asks only for what the cache lacks
    with FakeZhipuAI(key) as srv2:
        res = run(texts, settings(srv2, tmp_path))
    assert sorted(srv2.embedded) == sorted(texts[8:])
    assert res.cache_hits == 8
    np.testing.assert_allclose(res.vectors, expected(texts), atol=1e-6)
    assert_no_key(msg, caplog.text)


def test_client_error_is_not_retried(key, tmp_path):
    with FakeZhipuAI(key, faults=["400"]) as srv:
        with pytest.raises(ZhipuEmbedError, match="HTTP 400"):
            run(texts_(3), settings(srv, tmp_path))
    assert len(srv.requests) == 1


def test_wrong_key_fails_without_leaking(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ZHIPUAI_API_KEY", KEY + "-wrong")
    with FakeZhipuAI(KEY) as srv:
        with pytest.raises(ZhipuEmbedError, match="authentication") as err:
            run(texts_(3), settings(srv, tmp_path))
    tb = "".join(traceback.format_exception(err.value))
    assert_no_key(str(err.value), tb, caplog.text)


def test_missing_key_fails_before_any_request(monkeypatch, tmp_path):
    monkeypatch.delenv("ZHIPUAI_API_KEY", raising=False)
    with FakeZhipuAI(KEY) as srv:
        with pytest.raises(ZhipuEmbedError, match="ZHIPUAI_API_KEY"):
            run(texts_(3), settings(srv, tmp_path))
    assert srv.requests == []


def test_key_echoed_by_server_never_appears(key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeZhipuAI(key, faults=["echo_key"] * 3) as srv:
        with pytest.raises(ZhipuEmbedError) as err:
            run(texts_(2), settings(srv, tmp_path, max_retries=2))
    assert srv.requests[0]["auth"] == f"Bearer {KEY}"  # the key was really sent, and echoed back
    tb = "".join(traceback.format_exception(err.value))
    assert_no_key(str(err.value), tb, caplog.text)


def test_pool_shard_artifacts_hold_no_key_and_count_truncation(key, tmp_path):
    shard = tmp_path / "shard-00000.jsonl"
    texts = texts_(5) + ["长" * 50, texts_(1)[0]]  # one over max_input_chars, one duplicate
    shard.write_text(
        "".join(json.dumps({"id": f"s{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)),
        encoding="utf-8",
    )
    with FakeZhipuAI(key) as srv:
        z = settings(srv, tmp_path / "cache", max_input_chars=20)
        stats = embed_pool_shard(
            shard, tmp_path / "v.npy", tmp_path / "v.stats.json", EmbedSettings(backend="zhipuai", zhipuai=z)
        )
    assert stats["truncated"] == 1 and stats["count"] == 7 and stats["dims"] == DIMS
    assert stats["backend"] == "zhipuai" and stats["model"] == f"embedding-3@{DIMS}"
    # the duplicate is requested once and the long text is sent cut
    assert sorted(srv.embedded) == sorted(set(t[:20] for t in texts))
    ids, mat = load_vectors(tmp_path / "v.npy")
    assert ids == [f"s{i}" for i in range(7)] and mat.dtype == np.float16
    np.testing.assert_allclose(mat[6], mat[0])
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p


def test_grown_pool_requests_only_new_texts(key, tmp_path):
    old, new = texts_(10), texts_(5, prefix="新问题")
    with FakeZhipuAI(key) as srv:
        run(old, settings(srv, tmp_path))
    with FakeZhipuAI(key) as srv2:
        res = run(old + new, settings(srv2, tmp_path))
    assert sorted(srv2.embedded) == sorted(new)
    assert res.cache_hits == 10
    # another dimension is another cache: nothing reused
    with FakeZhipuAI(key) as srv3:
        embed_zhipuai(old, settings(srv3, tmp_path, dimensions=512), backoff_base_s=0.01)
    assert len(srv3.embedded) == 10


def test_embed_texts_dispatches_and_refuses_empty(key, tmp_path):
    with FakeZhipuAI(key) as srv:
        s = EmbedSettings(backend="zhipuai", zhipuai=settings(srv, tmp_path))
        with pytest.raises(ValueError, match="item 1: empty"):
            embed_texts(["a", "  "], s)
        assert srv.requests == []
        res = embed_texts(["发热", "咳嗽"], s)
        empty = embed_texts([], s)
    assert res.vectors.shape == (2, DIMS) and empty.vectors.shape == (0, DIMS)
    assert len(srv.requests) == 1


_CHILD = """
import sys
sys.path[:0] = {paths!r}
from evalsel.embed.encode import ZhipuSettings
from evalsel.embed.zhipu import embed_zhipuai
texts = [f"文本{{i}}" for i in range(40)]
embed_zhipuai(texts, ZhipuSettings(dimensions={dims}, batch_size=2, concurrency=1, base_url={url!r}, cache_dir={cache!r}))
"""


def _cached_rows(cache_dir) -> int:
    path = Path(cache_dir) / f"embedding-3-{DIMS}.sqlite"
    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(path, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_resume_after_kill(key, tmp_path):
    texts = [f"文本{i}" for i in range(40)]
    repo = Path(__file__).resolve().parents[1]
    with FakeZhipuAI(key, delay_s=0.1) as srv:
        code = _CHILD.format(paths=[str(repo / "src")], dims=DIMS, url=srv.base_url, cache=str(tmp_path))
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "ZHIPUAI_API_KEY": key})
        deadline = time.time() + 60
        while _cached_rows(tmp_path) < 4 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    cached = len(VectorCache(tmp_path, "embedding-3", DIMS))
    assert 0 < cached < 40
    with FakeZhipuAI(key) as srv2:
        res = embed_zhipuai(texts, settings(srv2, tmp_path, batch_size=2), backoff_base_s=0.01)
    assert len(srv2.embedded) == 40 - cached
    assert res.cache_hits == cached
    np.testing.assert_allclose(res.vectors, expected(texts), atol=1e-6)
