"""A local fake of the ZhipuAI embeddings endpoint (127.0.0.1) that injects faults on demand;
vectors are a deterministic function of the text, so a cached vector and a fresh one agree."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

# faults: "429", "500", "503", "400", "timeout", "missing_data", "wrong_count", "zero", "nan",
# "bad_dims", "not_json", "echo_key" (a 500 whose body repeats the Authorization header)
FAULTS = {
    "429",
    "500",
    "503",
    "400",
    "timeout",
    "missing_data",
    "wrong_count",
    "zero",
    "nan",
    "bad_dims",
    "not_json",
    "echo_key",
}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client that timed out closes its socket: expected, not worth a traceback
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def fake_vector(text: str, dims: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32).tolist()


class FakeZhipuAI:
    """Threaded HTTP server. ``faults`` is consumed one per request, in order; after that
    requests succeed, unless ``fail_after`` successful requests have been served, from which
    point every request answers 500 (a dead API). ``delay_s`` slows each answer."""

    def __init__(
        self,
        key: str,
        faults: list[str] | None = None,
        fail_after: int | None = None,
        delay_s: float = 0.0,
        timeout_sleep_s: float = 2.0,
    ):
        for f in faults or []:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}")
        self.key = key
        self.faults = list(faults or [])
        self.fail_after = fail_after
        self.delay_s = delay_s
        self.timeout_sleep_s = timeout_sleep_s
        self.requests: list[dict] = []  # every request received: {"texts", "auth", "answer"}
        self.embedded: list[str] = []  # texts answered with vectors
        self.successes = 0
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/api/paas/v4"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _next_answer(self) -> str:
        with self._lock:
            if self.faults:
                return self.faults.pop(0)
            if self.fail_after is not None and self.successes >= self.fail_after:
                return "500"
            return "ok"

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization", "")
                texts = req.get("input")
                texts = [texts] if isinstance(texts, str) else list(texts or [])
                if auth != f"Bearer {fake.key}":
                    answer = "401"
                else:
                    answer = fake._next_answer()
                with fake._lock:
                    fake.requests.append({"texts": texts, "auth": auth, "answer": answer})
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                dims = int(req.get("dimensions") or 2048)
                if answer == "timeout":
                    time.sleep(fake.timeout_sleep_s)
                    answer = "ok"  # too late: the client gave up
                if answer in ("429", "500", "503", "400", "401"):
                    err = {"error": {"code": answer, "message": "injected failure"}}
                    return self._send(int(answer), json.dumps(err).encode())
                if answer == "echo_key":
                    return self._send(500, json.dumps({"error": {"message": f"bad token {auth}"}}).encode())
                if answer == "not_json":
                    return self._send(200, b"<html>gateway</html>", "text/html")
                if answer == "missing_data":
                    return self._send(200, json.dumps({"object": "list", "model": req.get("model")}).encode())
                data = [
                    {"object": "embedding", "index": i, "embedding": fake_vector(t, dims)} for i, t in enumerate(texts)
                ]
                if answer == "wrong_count":
                    data = data[:-1] if len(data) > 1 else data + data
                elif answer == "zero":
                    data[0]["embedding"] = [0.0] * dims
                elif answer == "nan":
                    data[0]["embedding"][0] = float("nan")
                elif answer == "bad_dims":
                    data[0]["embedding"] = data[0]["embedding"][: dims // 2]
                body = {
                    "object": "list",
                    "data": data,
                    "model": req.get("model"),
                    "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1},
                }
                if answer == "ok":
                    with fake._lock:
                        fake.successes += 1
                        fake.embedded.extend(texts)
                # NaN is not valid JSON for most servers; Python writes it, the client must still refuse it
                return self._send(200, json.dumps(body).encode())

        return Handler
