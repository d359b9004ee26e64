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
    from evalsel.serve import create_app

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
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    json.loads(events[-2][6:])  # the chunk before [DONE] is JSON


def test_stop_sequence_cuts_the_answer(client):
    full = _sampled(client, max_tokens=24).choices[0].message.content
    # a two-character stop sequence first seen a few characters in
    k = next(k for k in range(3, len(full) - 1) if full.find(full[k:k + 2]) == k and "\ufffd" not in full[k:k + 2])
    stop = full[k:k + 2]
    cut = _sampled(client, max_tokens=24, stop=[stop, "never-seen-stop"])
    assert cut.choices[0].message.content == full[:k]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 24
    streamed = "".join(c.choices[0].delta.content or "" for c in _sampled(client, max_tokens=24, stop=stop, stream=True)
                       if c.choices)
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
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages.0.content"),
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

    from evalsel.serve import create_app

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules="all-linear",
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    adapter = tmp_path / "my_adapter"
    peft_model.save_pretrained(adapter)

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ids = tok(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False),
              add_special_tokens=False, return_tensors="pt")["input_ids"]
    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), adapter).eval()
    with torch.inference_mode():
        out = local.generate(ids, max_new_tokens=10, do_sample=False)
    expected_ids = [t for t in out[0, ids.shape[1]:].tolist() if t != tok.convert_tokens_to_ids("<|im_end|>")]
    expected = tok.decode(expected_ids, skip_special_tokens=True)
    with torch.inference_mode():
        plain = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval().generate(ids, max_new_tokens=10, do_sample=False)
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
