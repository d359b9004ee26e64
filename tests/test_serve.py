"""The OpenAI-compatible server answers the official openai client, streams, and rejects bad input."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

KEY = "sk-test-not-a-secret"
MESSAGES = [{"role": "system", "content": "你是医生。"}, {"role": "user", "content": "高血压患者饮食要注意什么？"}]


class _Server:
    """uvicorn in a thread on a socket bound to a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def server(tiny_lm_dir):
    from evalsel.serve.app import create_app

    app = create_app(tiny_lm_dir, api_key=KEY, model_name="tiny")
    with _Server(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _greedy(client, **kw):
    return client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, **kw)


def test_list_models(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "evalsel"


def test_completion_uses_the_chat_template(client, tiny_lm_dir):
    from transformers import AutoTokenizer

    resp = _greedy(client, max_tokens=12)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == "tiny"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert resp.usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert 1 <= resp.usage.completion_tokens <= 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    # greedy decoding is deterministic
    assert _greedy(client, max_tokens=12).choices[0].message.content == choice.message.content


def _sampled(client, **kw):
    # seeded sampling: varied, multi-byte text from the random tiny model, yet reproducible
    return client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=1.0, seed=1, **kw)


def test_streaming_matches_the_plain_answer(client):
    plain = _sampled(client, max_tokens=20)
    assert len(set(plain.choices[0].message.content)) > 5  # not a degenerate repetition
    chunks = list(_sampled(client, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 5  # really incremental


def test_raw_stream_ends_with_done(server):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True, "temperature": 0}
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", json=body, timeout=60, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    json.loads(events[-2][6:])  # the chunk before [DONE] is JSON


def test_stop_sequence_cuts_the_answer(client):
    full = _sampled(client, max_tokens=24).choices[0].message.content
    # a two-character stop sequence first seen a few characters in
    k = next(k for k in range(3, len(full) - 1) if full.find(full[k : k + 2]) == k and "\ufffd" not in full[k : k + 2])
    stop = full[k : k + 2]
    cut = _sampled(client, max_tokens=24, stop=[stop, "never-seen-stop"])
    assert cut.choices[0].message.content == full[:k]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 24
    streamed = "".join(
        c.choices[0].delta.content or "" for c in _sampled(client, max_tokens=24, stop=stop, stream=True) if c.choices
    )
    assert streamed == full[:k]


def test_sampling_with_a_seed_is_reproducible(client):
    kw = dict(model="tiny", messages=MESSAGES, temperature=0.9, top_p=0.9, max_tokens=8, seed=7)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_wrong_or_missing_key_is_401(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.models.list()
    assert exc.value.status_code == 401
    assert exc.value.body["code"] == "invalid_api_key"
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    assert KEY not in r.text


@pytest.mark.parametrize(
    "override, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": 5}, "temperature"),
        ({"n": 2}, "n"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0.content",
        ),
    ],
)
def test_bad_requests_are_400(client, override, param):
    kw = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **override}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(**kw)
    assert exc.value.status_code == 400
    assert exc.value.body["param"] == param
    assert exc.value.body["type"] == "invalid_request_error" and exc.value.body["message"]


def test_unknown_model_route_and_unreadable_body(client, server):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers=auth)
    assert r.status_code == 422 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(server.url + "/v1/nothing", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_base_plus_adapter(tiny_lm_dir, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsel.serve.app import create_app

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    peft_model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"),
    )
    adapter = tmp_path / "my_adapter"
    peft_model.save_pretrained(adapter)

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ids = tok(
        tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
        return_tensors="pt",
    )["input_ids"]
    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), adapter).eval()
    with torch.inference_mode():
        out = local.generate(ids, max_new_tokens=10, do_sample=False)
    expected_ids = [t for t in out[0, ids.shape[1] :].tolist() if t != tok.convert_tokens_to_ids("<|im_end|>")]
    expected = tok.decode(expected_ids, skip_special_tokens=True)
    with torch.inference_mode():
        plain = (
            AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval().generate(ids, max_new_tokens=10, do_sample=False)
        )
    assert plain[0].tolist() != out[0].tolist(), "the adapter should change the greedy answer"

    with _Server(create_app(tiny_lm_dir, adapter=adapter)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in c.models.list()] == ["my_adapter"]
        resp = c.chat.completions.create(model="my_adapter", messages=MESSAGES, max_tokens=10, temperature=0)
    assert resp.choices[0].message.content == expected


def test_cli_refuses_an_unset_key_variable(monkeypatch, capsys):
    from evalsel.cli import main

    monkeypatch.delenv("EVALSEL_TEST_KEY", raising=False)
    with pytest.raises(SystemExit, match="EVALSEL_TEST_KEY"):
        main(["serve", "--model", "x", "--api-key-env", "EVALSEL_TEST_KEY"])


# --------------------------------------------------------------------------- faults and load


def _stream_and_drop(url: str, seconds: float, results: list) -> None:
    """A client that opens a long streaming chat and goes away after ``seconds`` (as `curl -N -m 1`)."""
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2000, "stream": True, "temperature": 0.9}
    try:
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=body, timeout=seconds, headers={"Authorization": f"Bearer {KEY}"}
        ) as r:
            results.append(r.status_code)
            for _ in r.iter_lines():
                pass
    except httpx.TimeoutException:
        results.append("dropped")


def test_dropped_streams_free_the_model_and_shutdown_completes(tiny_lm_dir):
    from evalsel.serve.app import create_app

    app = create_app(tiny_lm_dir, api_key=KEY, model_name="tiny", timeout=120)
    with _Server(app) as srv:
        results: list = []
        clients = [threading.Thread(target=_stream_and_drop, args=(srv.url, 1.0, results)) for _ in range(2)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=30)
        assert results.count(200) == 2, results
        # the generator is freed within a token or two of the disconnect, not after 2000 tokens
        auth = {"Authorization": f"Bearer {KEY}"}
        deadline = time.time() + 15
        while time.time() < deadline:
            health = httpx.get(srv.url + "/health", headers=auth, timeout=5).json()
            if health["generator"] == "idle" and health["queued"] == 0:
                break
            time.sleep(0.1)
        assert health["generator"] == "idle" and health["queued"] == 0, health
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        answer = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, temperature=0)
        assert answer.choices[0].finish_reason in ("stop", "length")
        # and shutdown completes with a stream still open
        late: list = []
        t = threading.Thread(target=_stream_and_drop, args=(srv.url, 60.0, late), daemon=True)
        t.start()
        time.sleep(0.5)
        started = time.time()
    assert not srv.thread.is_alive(), "the server did not shut down"
    assert time.time() - started < 20


def test_health_needs_the_key_and_says_whether_the_generator_is_free(server):
    assert httpx.get(server.url + "/health").status_code == 401
    r = httpx.get(server.url + "/health", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    assert set(r.json()) >= {"status", "model", "generator", "queued", "queue_limit"}


def test_usage_does_not_count_the_end_of_turn_token(tiny_lm_dir):
    """An answer that ends on its own: completion_tokens counts the answer's tokens, not <|im_end|>."""
    import torch

    from evalsel.serve.app import ChatModel

    chat = ChatModel(str(tiny_lm_dir), device="cpu")
    ids = chat.encode(MESSAGES)
    with torch.inference_mode():
        out = chat.model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False, repetition_penalty=1.0)
    first = int(out[0, len(ids)])
    # make the greedy answer's first token the end of turn: the answer is empty, ended by the model
    chat.model.generation_config.eos_token_id = [first]
    chat.eos_ids = {first}
    *_, (_, info) = chat.stream(ids, 10, 0.0, 1.0, [], None)
    assert info["finish_reason"] == "stop"
    assert info["completion_tokens"] == 0


class _SlowChat:
    """Stands in for ChatModel in the scheduler tests: ``steps`` deltas, ``pause`` seconds apart."""

    def __init__(self, steps=50, pause=0.05, honour_stop=True):
        self.steps, self.pause, self.honour_stop = steps, pause, honour_stop
        self.started = 0

    def stream(self, prompt_ids, max_new_tokens, temperature, top_p, stops, seed, should_stop=lambda: False):
        self.started += 1
        n = 0
        for _ in range(self.steps):
            if self.honour_stop and should_stop():
                break
            time.sleep(self.pause)
            n += 1
            yield "x", {}
        yield "", {"finish_reason": "stop" if n == self.steps else "length", "prompt_tokens": 1, "completion_tokens": n}


async def _drain(job):
    from evalsel.serve.app import APIError

    out = []
    try:
        async for item in job:
            out.append(item)
    except APIError as e:
        out.append(e)
    return out


def test_a_full_queue_is_429_and_a_request_waiting_too_long_is_503():
    import asyncio

    from evalsel.serve.app import APIError, Generator

    gen = Generator(_SlowChat(steps=20, pause=0.05, honour_stop=False), max_queue=1, timeout=0.5)
    try:
        loop = asyncio.new_event_loop()
        params = dict(prompt_ids=[1], max_new_tokens=5, temperature=0, top_p=1, stops=[], seed=None)
        first = gen.submit(params, loop)
        deadline = time.time() + 5
        while gen.status()["generator"] != "busy" and time.time() < deadline:
            time.sleep(0.01)
        second = gen.submit(params, loop)  # waits in the queue
        with pytest.raises(APIError) as exc:
            gen.submit(params, loop)
        assert exc.value.status == 429 and exc.value.code == "queue_full"
        a = loop.run_until_complete(_drain(first))
        b = loop.run_until_complete(_drain(second))
        loop.close()
        assert a[-1][1]["completion_tokens"] == 20
        # the second waited 1 s for a generator busy with a step that ignores the clock: never run
        assert isinstance(b[-1], APIError) and b[-1].status == 503 and b[-1].code == "timeout"
    finally:
        gen.close()
    assert not gen.thread.is_alive()


def test_a_request_running_past_its_timeout_is_cut_short():
    import asyncio

    from evalsel.serve.app import Generator

    gen = Generator(_SlowChat(steps=40, pause=0.05), max_queue=2, timeout=0.5)
    try:
        loop = asyncio.new_event_loop()
        params = dict(prompt_ids=[1], max_new_tokens=5, temperature=0, top_p=1, stops=[], seed=None)
        a = loop.run_until_complete(_drain(gen.submit(params, loop)))
        loop.close()
        assert a[-1][1]["finish_reason"] == "length" and 3 < a[-1][1]["completion_tokens"] < 40
    finally:
        gen.close()


def test_a_cancelled_job_is_dropped_and_the_next_one_served():
    import asyncio

    from evalsel.serve.app import Generator

    chat = _SlowChat(steps=5, pause=0.01)
    gen = Generator(chat, max_queue=4, timeout=30)
    try:
        loop = asyncio.new_event_loop()
        params = dict(prompt_ids=[1], max_new_tokens=5, temperature=0, top_p=1, stops=[], seed=None)
        chat.pause = 0.2
        running = gen.submit(params, loop)
        waiting = gen.submit(params, loop)
        waiting.cancel()  # gone before its turn: never run
        time.sleep(0.1)
        running.cancel()  # gone mid-answer: stopped at the next step
        chat.pause = 0.01
        served = gen.submit(params, loop)

        out = loop.run_until_complete(_drain(served))
        loop.close()
        assert out[-1][1] == {"finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 5}
        assert chat.started == 2
    finally:
        gen.close()


# --------------------------------------------------------------------------- hostile clients


def _auth():
    return {"Authorization": f"Bearer {KEY}"}


def _poll_health(url: str, stop: threading.Event, worst: list) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        httpx.get(url + "/health", headers=_auth(), timeout=30)
        worst.append(time.monotonic() - t0)
        time.sleep(0.05)


def _huge(url: str, chars: int, out: list) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "ab cd " * (chars // 6)}], "max_tokens": 1}
    t0 = time.monotonic()
    r = httpx.post(url + "/v1/chat/completions", json=body, headers=_auth(), timeout=120)
    out.append((r.status_code, r.json()["error"]["code"], time.monotonic() - t0))


@pytest.mark.parametrize("tokenised", [False, True], ids=["refused-by-length", "tokenised-off-the-loop"])
def test_a_3m_character_prompt_does_not_freeze_the_server(tiny_lm_dir, tokenised):
    """Before: one 3M-character prompt held /health for 66 s (tokenised on the event loop). Now it
    is refused by its length before tokenising; and a prompt that must be tokenised (a context
    made large enough that the character bound lets it through) is tokenised in a worker thread."""
    from evalsel.serve.app import create_app

    app = create_app(tiny_lm_dir, api_key=KEY, model_name="tiny")
    chat = app.state.chat
    if tokenised:
        chat.context_length = 3_000_000 // chat.max_token_chars + 1
    with _Server(app) as srv:
        stop, worst, out = threading.Event(), [], []
        poller = threading.Thread(target=_poll_health, args=(srv.url, stop, worst))
        poller.start()
        _huge(srv.url, 3_000_000, out)
        time.sleep(0.3)
        stop.set()
        poller.join()
    (status, code, seconds) = out[0]
    print(
        f"\n3M characters ({'tokenised' if tokenised else 'length check'}): {status} {code} in {seconds:.2f} s; "
        f"/health worst {max(worst):.3f} s over {len(worst)} probes"
    )
    assert status == 400 and code == "context_length_exceeded"
    assert max(worst) < 1.0, worst


def test_a_body_over_the_limit_is_413_before_it_is_parsed(tiny_lm_dir):
    from evalsel.serve.app import create_app

    app = create_app(tiny_lm_dir, api_key=KEY, model_name="tiny", max_body_bytes=10_000)
    with _Server(app) as srv:
        big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 20_000}]}
        r = httpx.post(srv.url + "/v1/chat/completions", json=big, headers=_auth(), timeout=30)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

        def chunked():  # no Content-Length: counted as it arrives
            yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
            for _ in range(30):
                yield b"y" * 1000
            yield b'"}]}'

        headers = {**_auth(), "content-type": "application/json"}
        r = httpx.post(srv.url + "/v1/chat/completions", content=chunked(), headers=headers, timeout=30)
        assert r.status_code == 413
        ok = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, "temperature": 0}
        assert httpx.post(srv.url + "/v1/chat/completions", json=ok, headers=_auth(), timeout=30).status_code == 200


@pytest.mark.parametrize(
    "field, value",
    [
        ("seed", 2**70),
        ("seed", -(2**64)),
        ("temperature", 1e-300),
        ("temperature", 2.5),
        ("top_p", 0.0),
        ("top_p", 1.5),
    ],
)
def test_out_of_range_sampling_values_are_400_without_a_traceback(server, field, value, caplog):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, field: value}
    with caplog.at_level("ERROR"):
        r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=_auth(), timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["code"] == "invalid_value"
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


def test_serve_cli_refuses_bad_settings_in_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    for args, expected in (
        (["--model", str(tmp_path / "nonexistent/model")], "model path"),
        (["--model", "x", "--timeout", "nan"], "--timeout must be a finite number"),
        (["--model", "x", "--timeout", "inf"], "--timeout must be a finite number"),
        (["--model", "x", "--timeout", "-1"], "--timeout must be a finite number"),
        (["--model", "x", "--max-body-mb", "0"], "--max-body-mb"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "evalsel.cli", "serve", *args], env=env, capture_output=True, text=True, timeout=120
        )
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert proc.returncode != 0 and lines and expected in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_ends_the_stream_and_answers_every_waiter(tiny_lm_dir, tmp_path):
    """Before: SIGTERM with 2 streams and 5 waiting requests cut the streams without a finish_reason
    or [DONE] and left the 5 waiters without an HTTP response. Now the stream being generated ends
    with its final chunk and [DONE], a waiting stream gets a 503 error event and [DONE], and each
    waiting request a 503."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "EVALSEL_TEST_KEY": KEY}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evalsel.cli",
            "serve",
            "--model",
            str(tiny_lm_dir),
            "--model-name",
            "tiny",
            "--port",
            str(port),
            "--api-key-env",
            "EVALSEL_TEST_KEY",
            "--max-queue",
            "8",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", headers=_auth(), timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        # greedy: the tiny model then runs to the end of its context (2,026 tokens, about 3.5 s here); sampled,
        # it meets an end-of-turn token after a few hundred tokens most of the time and the queue drains early
        long = {"model": "tiny", "messages": MESSAGES, "max_tokens": 100_000, "temperature": 0, "stream": True}
        streams: dict[int, list[str]] = {0: [], 1: []}

        def stream(k):
            with httpx.stream("POST", url + "/v1/chat/completions", json=long, headers=_auth(), timeout=60) as r:
                streams[k].append(str(r.status_code))
                streams[k].extend(line for line in r.iter_lines() if line)

        waiters: list = []

        def wait():
            body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 50, "temperature": 0}
            r = httpx.post(url + "/v1/chat/completions", json=body, headers=_auth(), timeout=60)
            waiters.append((r.status_code, r.json().get("error", {}).get("code")))

        threads = [threading.Thread(target=stream, args=(0,))]
        threads[0].start()
        # the others start once the first stream is generating (its first chunks are out) ...
        deadline = time.time() + 30
        while len(streams[0]) < 3 and time.time() < deadline:
            time.sleep(0.01)
        threads.append(threading.Thread(target=stream, args=(1,)))
        threads += [threading.Thread(target=wait) for _ in range(5)]
        for t in threads[1:]:
            t.start()
        # ... and SIGTERM comes as soon as all six are queued behind it (polled: a busy machine
        # starts threads late, a fast one ends the 2,048-token stream within seconds)
        deadline = time.time() + 10
        while httpx.get(url + "/health", headers=_auth(), timeout=5).json()["queued"] < 6 and time.time() < deadline:
            time.sleep(0.02)
        assert httpx.get(url + "/health", headers=_auth(), timeout=5).json()["queued"] == 6
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=30)
        proc.wait(timeout=30)
        exited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    log_text = proc.stdout.read()
    generating, waiting = streams[0], streams[1]
    assert generating[0] == "200" and generating[-1] == "data: [DONE]", generating[-3:]
    last = json.loads(generating[-2][len("data: ") :])
    assert last["choices"][0]["finish_reason"] == "length"
    assert waiting[0] == "200" and waiting[-1] == "data: [DONE]"
    assert json.loads(waiting[-2][len("data: ") :])["error"]["code"] == "shutting_down"
    assert waiters == [(503, "shutting_down")] * 5, waiters
    # uvicorn re-raises the signal once it has shut down: the process ends by SIGTERM, as asked
    assert exited < 15 and proc.returncode in (0, -signal.SIGTERM), log_text[-2000:]
    assert "Traceback" not in log_text, log_text[-3000:]
