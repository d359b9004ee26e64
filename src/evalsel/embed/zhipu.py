"""ZhipuAI embedding-3 backend: batched, concurrent, retried requests with an on-disk cache; the key
comes from ZHIPUAI_API_KEY only, and a batch that still fails fails the job (no placeholder vectors)."""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evalsel.core.io import text_hash

log = logging.getLogger(__name__)

KEY_ENV = "ZHIPUAI_API_KEY"
API_MAX_BATCH = 64
RETRYABLE_STATUS = {408, 409, 429}


class ZhipuEmbedError(RuntimeError):
    """The ZhipuAI backend could not produce a vector; the message names shard and item, never the key."""


class _Retryable(Exception):
    """A failure worth another attempt (rate limit, server error, timeout, malformed answer)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def api_key() -> str:
    """The API key from the environment. Refuses (before any request) when it is missing or blank."""
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise ZhipuEmbedError(f"{KEY_ENV} is not set: export it before running the zhipuai embedding backend")
    return key


def scrub(message: str, key: str | None) -> str:
    """``message`` with every occurrence of ``key`` (and any bearer token) replaced by ***."""
    if key:
        message = message.replace(key, "***")
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", message)


def text_key(text: str) -> str:
    """Cache key of a text as sent: its full sha1."""
    return text_hash(text, 40)


class VectorCache:
    """Vectors already paid for, one sqlite file per (model, dimensions), keyed by sha1 of the text sent.

    sqlite's journal makes each committed batch durable and a killed writer harmless;
    several jobs may share the file (writes wait on the lock).
    """

    def __init__(self, cache_dir: str | os.PathLike, model: str, dims: int):
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
        self.path = Path(cache_dir) / f"{safe}-{dims}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dims = dims
        self._con = sqlite3.connect(self.path, timeout=300, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        with self._con:
            self._con.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            self._con.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
            self._con.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?), ('dims', ?)", (model, str(dims)))
        meta = dict(self._con.execute("SELECT k, v FROM meta"))
        if meta.get("model") != model or meta.get("dims") != str(dims):
            raise ZhipuEmbedError(f"cache {self.path} holds {meta}, not model {model!r} with {dims} dimensions")

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            q = f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})"
            for k, blob in self._con.execute(q, part):
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape != (self.dims,):
                    raise ZhipuEmbedError(
                        f"cache {self.path}: entry {k} has {vec.size} dimensions, expected {self.dims}"
                    )
                found[k] = vec
        return found

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self._con:
            self._con.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        self._con.close()


def make_client(key: str, base_url: str | None, timeout_s: float):
    """A zhipuai SDK client with its own retries off (ours add jitter and validate answers)."""
    from zhipuai import ZhipuAI

    kwargs = {"api_key": key, "timeout": float(timeout_s), "max_retries": 0}
    if base_url:
        kwargs["base_url"] = base_url
    return ZhipuAI(**kwargs)


def _classify(exc: Exception) -> Exception:
    """Map an SDK/transport exception to _Retryable or a final error message (no response text: it may echo secrets)."""
    import zhipuai

    status = getattr(exc, "status_code", None)
    if isinstance(exc, zhipuai.APITimeoutError):
        return _Retryable("timeout")
    if isinstance(exc, zhipuai.APIStatusError) and status is not None:
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = None
            try:
                retry_after = float(exc.response.headers.get("retry-after", ""))
            except (TypeError, ValueError, AttributeError):
                pass
            return _Retryable(f"HTTP {status}", retry_after)
        hint = " (authentication failed: check ZHIPUAI_API_KEY)" if status in (401, 403) else ""
        return ZhipuEmbedError(f"HTTP {status} {type(exc).__name__}{hint}")
    if isinstance(exc, zhipuai.APIConnectionError):
        return _Retryable(f"connection error ({type(exc).__name__})")
    # anything else from the SDK (e.g. a body that is not JSON) counts as a malformed answer
    return _Retryable(f"malformed response ({type(exc).__name__})")


def parse_embeddings(data, n: int, dims: int) -> np.ndarray:
    """The ``(n, dims)`` float32 matrix of an embeddings answer, in input order.

    Raises _Retryable when data is missing, the count, indices or dimensions are wrong,
    or a vector is zero or not finite.
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise _Retryable("malformed response (no 'data' list)")
    items = data["data"]
    if len(items) != n:
        raise _Retryable(f"malformed response ({len(items)} vectors for {n} inputs)")
    out = np.empty((n, dims), dtype=np.float32)
    seen = set()
    for pos, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
            raise _Retryable(f"malformed response (item {pos} has no embedding)")
        idx = item.get("index", pos)
        if not isinstance(idx, int) or not 0 <= idx < n or idx in seen:
            raise _Retryable(f"malformed response (bad index {idx!r})")
        seen.add(idx)
        try:
            vec = np.asarray(item["embedding"], dtype=np.float32)
        except (TypeError, ValueError):
            raise _Retryable(f"malformed response (item {pos} is not numeric)") from None
        if vec.shape != (dims,):
            raise _Retryable(f"malformed response ({vec.size} dimensions, expected {dims})")
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or norm < 1e-6:
            raise _Retryable(f"malformed response (zero or non-finite vector at index {idx})")
        out[idx] = vec / norm
    return out


class _Requester:
    """Sends one batch with retries; exponential backoff with jitter between attempts."""

    def __init__(self, client, settings, key: str, label: str, backoff_base_s: float, backoff_max_s: float):
        self.client, self.s, self.key, self.label = client, settings, key, label
        self.base, self.cap = backoff_base_s, backoff_max_s
        self.requests = 0
        self.retries = 0
        self._lock = threading.Lock()
        self._rng = random.Random()

    def delay(self, attempt: int, retry_after: float | None) -> float:
        d = min(self.cap, self.base * 2**attempt)
        d = d / 2 + self._rng.uniform(0, d / 2)
        return max(d, min(retry_after or 0.0, self.cap))

    def __call__(self, items: list[int], texts: list[str]) -> np.ndarray:
        attempts = self.s.max_retries + 1
        reason = ""
        for attempt in range(attempts):
            with self._lock:
                self.requests += 1
                self.retries += attempt > 0
            try:
                try:
                    data = self.client.embeddings.create(
                        model=self.s.model,
                        input=texts,
                        dimensions=self.s.dimensions,
                        disable_strict_validation=True,
                    )
                except Exception as exc:  # noqa: BLE001 - classified just below
                    final = _classify(exc)
                    if isinstance(final, ZhipuEmbedError):
                        raise self._fail(items, 1, str(final)) from None
                    raise final from None
                return parse_embeddings(data, len(texts), self.s.dimensions)
            except _Retryable as exc:
                reason = str(exc)
                if attempt + 1 < attempts:
                    wait_s = self.delay(attempt, exc.retry_after)
                    log.warning(
                        "%s: items %d..%d: %s; retry %d/%d in %.2fs",
                        self.label,
                        items[0],
                        items[-1],
                        reason,
                        attempt + 1,
                        self.s.max_retries,
                        wait_s,
                    )
                    time.sleep(wait_s)
        raise self._fail(items, attempts, reason)

    def _fail(self, items: list[int], attempts: int, reason: str) -> ZhipuEmbedError:
        msg = (
            f"ZhipuAI embedding failed for shard {self.label}, item {items[0]} "
            f"(batch of {len(items)} items {items[0]}..{items[-1]}) after {attempts} attempt(s): {reason}"
        )
        return ZhipuEmbedError(scrub(msg, self.key))


def embed_zhipuai(
    texts: list[str],
    settings,
    label: str = "texts",
    backoff_base_s: float = 1.0,
    backoff_max_s: float = 60.0,
):
    """Embed ``texts`` with ZhipuAI; returns an :class:`evalsel.embed.encode.EmbedResult`.

    Texts are cut to ``settings.max_input_chars`` (counted), deduplicated, looked up in the
    cache, and only the misses are requested, in batches of at most 64, ``concurrency`` at a
    time; each answered batch is committed to the cache at once, so a killed job resumes.
    Refuses a missing key before any request; raises :class:`ZhipuEmbedError` when a batch
    still fails after its retries.
    """
    from evalsel.core.vectors import EmbedResult

    key = api_key()
    s = settings
    if not 1 <= s.batch_size <= API_MAX_BATCH:
        raise ValueError(f"zhipuai batch_size {s.batch_size} must be between 1 and {API_MAX_BATCH}")
    sent = [t[: s.max_input_chars] for t in texts]
    truncated = sum(len(a) != len(b) for a, b in zip(sent, texts))
    keys = [text_key(t) for t in sent]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    cache = VectorCache(s.cache_dir, s.model, s.dimensions)
    try:
        have = cache.get_many(list(first))
        missing = [i for k, i in first.items() if k not in have]
        log.info(
            "%s: %d texts, %d distinct, %d cached, %d to request (%d cut to %d chars)",
            label,
            len(texts),
            len(first),
            len(have),
            len(missing),
            truncated,
            s.max_input_chars,
        )
        requester = _Requester(None, s, key, label, backoff_base_s, backoff_max_s)
        if missing:
            requester.client = make_client(key, s.base_url, s.timeout_s)
            _request_all(requester, cache, missing, sent, keys, have, s.concurrency, label)
        mat = np.stack([have[k] for k in keys]) if keys else np.zeros((0, s.dimensions), np.float32)
    finally:
        cache.close()
    return EmbedResult(
        mat,
        model=f"{s.model}@{s.dimensions}",
        device="api",
        truncated=truncated,
        cache_hits=len(texts) - len(missing),
        requests=requester.requests,
        retries=requester.retries,
    )


def _request_all(requester, cache, missing, sent, keys, have, concurrency, label) -> None:
    batches = [missing[i : i + requester.s.batch_size] for i in range(0, len(missing), requester.s.batch_size)]
    bar = tqdm(total=len(missing), desc=f"zhipuai {label}", unit="text", mininterval=5)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="zhipuai")
    try:
        pending = {pool.submit(requester, b, [sent[i] for i in b]): b for b in batches}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                items = pending.pop(fut)
                mat = fut.result()  # raises the batch's final error
                pairs = [(keys[i], mat[j]) for j, i in enumerate(items)]
                cache.put_many(pairs)
                have.update(pairs)
                bar.update(len(items))
    except BaseException:
        # stop queued batches; those in flight finish and are kept if they succeed
        pool.shutdown(wait=True, cancel_futures=True)
        for fut, items in pending.items():
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                mat = fut.result()
                cache.put_many([(keys[i], mat[j]) for j, i in enumerate(items)])
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
