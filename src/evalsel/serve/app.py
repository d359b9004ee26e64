"""OpenAI-compatible chat server (``/v1/chat/completions`` with streaming, ``/v1/models``) for a
merged model or a base model plus a LoRA adapter, using the model's own chat template.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant")
DEFAULT_MAX_TOKENS = 512
MAX_STOP = 4
#: below this a sampling temperature only overflows the logits (1e-300 makes them infinite)
MIN_TEMPERATURE = 0.01
#: the seeds torch.manual_seed accepts
SEED_RANGE = (-(2**63), 2**64 - 1)
#: the largest request body read (413 past it): long prompts are refused before they are parsed
DEFAULT_MAX_BODY_BYTES = 4 * 2**20


# --------------------------------------------------------------------------- request schema


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)} (tool calls are not supported), got {v!r}")
        return v

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ValueError(f"only text content parts are supported, got type {part.type!r}")
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat completion request this server honours; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    seed: int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v):
        if v is not None and 0 < v < MIN_TEMPERATURE:
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE} (smaller values overflow the logits)")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return v

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


# --------------------------------------------------------------------------- errors


class APIError(Exception):
    """An error answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --------------------------------------------------------------------------- the model


class _QueueStreamer:
    """A ``generate`` streamer that hands new token ids to a queue (the first put is the prompt)."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for tok in value.reshape(-1).tolist():
            self.queue.put(int(tok))

    def end(self):
        self.queue.put(None)


class ChatModel:
    """A causal LM with its tokenizer and chat template (one generation at a time: see :class:`Generator`)."""

    def __init__(self, model_path: str, adapter: str | None = None, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from evalsel.core.precision import inference_dtype

        check_model_path(model_path, "model")
        if adapter is not None:
            check_model_path(adapter, "adapter", hub=False)
        tok_src = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else model_path
        self.tokenizer = AutoTokenizer.from_pretrained(tok_src)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{tok_src}: the tokenizer has no chat template; serve an instruct/chat model")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = inference_dtype(self.device, what="serving")
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        if adapter:
            from peft import PeftModel

            # merged once at load: generation then runs at the base model's speed
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        self.model = model.to(self.device).eval()
        cfg = self.model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", 0) or self.tokenizer.model_max_length)
        # no token is longer than the vocabulary's longest entry: a text of more characters than
        # context_length times that cannot fit, whatever it tokenises to (checked before tokenising)
        self.max_token_chars = max(1, max((len(t) for t in self.tokenizer.get_vocab()), default=1))
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in eos if e is not None} | (
            {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        )
        log.info(
            "loaded %s%s on %s (context %d)",
            model_path,
            f" + {adapter}" if adapter else "",
            self.device,
            self.context_length,
        )

    def encode(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def stream(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stops: list[str],
        seed: int | None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[tuple[str, dict]]:
        """Yield ``(text delta, info)``; the last item has ``info["finish_reason"]`` and token counts.

        Not thread-safe: the :class:`Generator` runs one at a time. Text is emitted only once it can
        no longer be the start of a stop sequence; a stop sequence and anything after it is never
        emitted (as OpenAI does). ``should_stop()`` (checked at every token) ends generation early
        (a client that went away, a timeout): the finish reason is then ``"length"``.
        ``completion_tokens`` counts the tokens of the answer, not the end-of-turn token.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        halt = threading.Event()

        class _Halt(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stop = halt.is_set() or should_stop()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        streamer = _QueueStreamer()
        sample = temperature > 0
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([prompt_ids], device=self.device),
            "attention_mask": torch.ones(1, len(prompt_ids), dtype=torch.long, device=self.device),
            "max_new_tokens": max_new_tokens,
            "do_sample": sample,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Halt()]),
            "pad_token_id": self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else next(iter(self.eos_ids)),
            # the model's generation_config may carry a repetition penalty (Qwen2.5-Instruct: 1.05);
            # a request has no such field, so the server does not apply one
            "repetition_penalty": 1.0,
        }
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            # greedy: clear sampling defaults a generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        failure: list[BaseException] = []

        def run():
            try:
                with torch.inference_mode():
                    if seed is not None:
                        torch.manual_seed(seed)
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the request below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        try:
            worker.start()
            ids: list[int] = []
            sent = ""
            finish = "length"
            cut_at_stop = False
            hold = max((len(x) for x in stops), default=1) - 1
            while True:
                tok = streamer.queue.get()
                if tok is None:
                    break
                if tok in self.eos_ids:
                    finish = "stop"
                    continue
                ids.append(tok)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                cut = min((i for i in (text.find(x) for x in stops) if i >= 0), default=-1)
                if cut >= 0:
                    finish, cut_at_stop = "stop", True
                    halt.set()
                    if cut > len(sent):
                        yield text[len(sent) : cut], {}
                    break
                # keep back an incomplete UTF-8 character and a possible stop-sequence prefix
                safe = len(text.rstrip("\ufffd")) - hold
                if safe > len(sent):
                    yield text[len(sent) : safe], {}
                    sent = text[:safe]
            if failure:
                raise failure[0]
            if not cut_at_stop:
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if len(text) > len(sent):
                    yield text[len(sent) :], {}
            yield "", {"finish_reason": finish, "prompt_tokens": len(prompt_ids), "completion_tokens": len(ids)}
        finally:
            halt.set()
            worker.join()


def check_model_path(path: str, what: str, hub: bool = True) -> None:
    """Refuse, in one line, a local path that does not exist (a hub name is ``name`` or
    ``owner/name``: one slash at most, no leading ``/``, ``.`` or ``~``)."""
    text = str(path)
    local = not hub or text.startswith(("/", ".", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "")
    if local and not Path(text).expanduser().exists():
        raise FileNotFoundError(f"{what} path {text!r} does not exist")
    if hub and not local and not Path(text).exists() and "/" not in text:
        raise FileNotFoundError(f"{what} {text!r} is neither a directory nor a hub name (owner/name)")


# --------------------------------------------------------------------------- the scheduler


_END = object()


class Job:
    """One chat request waiting for or being served by the :class:`Generator`.

    Its events (``(delta, info)`` tuples, an exception, then ``_END``) arrive on an asyncio queue of
    the request's event loop. ``cancel()`` (the client went away) stops it wherever it is.
    """

    def __init__(self, params: dict, timeout: float, loop):
        self.params = params
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.cancelled = threading.Event()
        self.loop = loop
        self.events = asyncio.Queue()

    def cancel(self) -> None:
        self.cancelled.set()

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def emit(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the request's loop is closed: nobody is listening any more
            self.cancelled.set()

    async def __aiter__(self):
        while True:
            item = await self.events.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Generator:
    """The one thread that runs the model: requests wait in a bounded queue, in order.

    A full queue answers 429; a request that waits or runs past ``timeout`` seconds is ended (503
    while waiting; while generating it finishes early with ``finish_reason`` ``"length"``); a job
    whose client disconnected is dropped from the queue or stopped at its next token, so the
    model is never held for a listener that is gone. ``close()`` ends every job and the thread.
    """

    def __init__(self, chat: ChatModel, max_queue: int = 8, timeout: float = 300.0):
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds above 0, got {timeout!r}")
        self.chat = chat
        self.max_queue = max_queue
        self.timeout = timeout
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.current: Job | None = None
        self.closing = threading.Event()
        self.served = 0
        self.thread = threading.Thread(target=self._loop, name="evalsel-generator", daemon=True)
        self.thread.start()

    def status(self) -> dict:
        return {
            "generator": "busy" if self.current is not None else "idle",
            "queued": self.jobs.qsize(),
            "queue_limit": self.max_queue,
            "served": self.served,
        }

    def submit(self, params: dict, loop) -> Job:
        if self.closing.is_set():
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        job = Job(params, self.timeout, loop)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise APIError(
                429,
                f"the server is busy: {self.max_queue} requests are already waiting; retry later",
                "rate_limit_error",
                code="queue_full",
            ) from None
        return job

    def shutdown(self) -> None:
        """Begin shutting down without blocking (the server's signal handler calls it): new requests
        and every waiting one are answered 503, the request being generated ends at its next
        token with ``finish_reason`` ``"length"`` and its final chunk."""
        self.closing.set()
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(APIError(503, "the server is shutting down", "server_error", code="shutting_down"))
                job.emit(_END)
        with contextlib.suppress(queue.Full):  # wakes the thread if it waits for a job
            self.jobs.put_nowait(None)

    def close(self, wait: float = 10.0) -> None:
        """Shut down and wait up to ``wait`` seconds for the generator thread to end."""
        self.shutdown()
        self.thread.join(timeout=wait)
        self.shutdown()  # anything that slipped in while the thread finished

    def _loop(self) -> None:
        while not self.closing.is_set():
            job = self.jobs.get()
            if job is None:
                break
            if job.cancelled.is_set():
                job.emit(_END)
                continue
            if job.expired():
                job.emit(
                    APIError(
                        503,
                        f"timed out after {job.timeout:g} s waiting for the generator",
                        "server_error",
                        code="timeout",
                    )
                )
                job.emit(_END)
                continue
            self.current = job
            try:

                def stop(job: Job = job) -> bool:
                    return job.cancelled.is_set() or job.expired() or self.closing.is_set()

                for item in self.chat.stream(**job.params, should_stop=stop):
                    if job.cancelled.is_set():
                        break
                    job.emit(item)
                if job.expired() and not job.cancelled.is_set():
                    log.warning("a request ran past its %g s timeout and was cut short", job.timeout)
            except Exception as exc:  # reported to this request; the generator lives on
                log.exception("generation failed")
                job.emit(exc)
            finally:
                self.current = None
                self.served += 1
                job.emit(_END)


# --------------------------------------------------------------------------- the app


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def create_app(
    model_path: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    device: str | None = None,
    max_queue: int = 8,
    timeout: float = 300.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
):
    """The FastAPI app serving one model under ``model_name`` (default: the adapter's or model's directory name).

    With ``api_key`` every request, ``/health`` included, needs ``Authorization: Bearer <api_key>``
    (401 otherwise). Errors are OpenAI-style JSON: 400 invalid request, 401 bad key, 404 unknown
    model or route, 422 unreadable body, 429 queue full (``max_queue`` requests already waiting),
    413 a body over ``max_body_bytes``, 500 generation failure, 503 timed out (``timeout`` seconds,
    tokenising and waiting included) or shutting down. A prompt is measured in characters before
    it is tokenised, and tokenised off the event loop, so one huge prompt cannot freeze the server.
    Refuses a tokenizer without a chat template.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    chat = ChatModel(str(model_path), None if adapter is None else str(adapter), device=device)
    generator = Generator(chat, max_queue=max_queue, timeout=timeout)
    name = model_name or Path(adapter or model_path).name or str(model_path)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        yield
        generator.close()

    app = FastAPI(title="evalsel OpenAI-compatible server", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.state.chat = chat
    app.state.generator = generator
    app.state.model_name = name
    _add_error_handlers(app)
    _add_auth(app, api_key)

    def model_card() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "evalsel"}

    @app.get("/health")
    def health():
        return {"status": "ok", "model": name, **generator.status()}

    @app.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str):
        _check_model(model_id, name)
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        _check_model(req.model, name)
        messages = _request_messages(req, chat)
        prompt_ids, room = await _encode_prompt(chat, messages, timeout)
        job = generator.submit(_generation_params(req, prompt_ids, room), asyncio.get_running_loop())
        reply = _Reply(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), name)
        if not req.stream:
            return await reply.complete(job)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return reply.stream(job, include_usage)

    return app


def _add_error_handlers(app) -> None:
    """OpenAI-style JSON errors: the API's own, unreadable or invalid bodies, unknown routes, failures."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        # a body that is not JSON (or not an object) is unprocessable; a readable one with bad values is a 400
        unreadable = first.get("type") in ("json_invalid", "model_attributes_type") or (not loc and errors)
        msg = first.get("msg", "invalid request")
        if param:
            msg = f"{param}: {msg}"
        status = 422 if unreadable else 400
        return JSONResponse(
            APIError(status, msg, code="invalid_value" if status == 400 else "invalid_json", param=param).body(),
            status_code=status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else None
        msg = f"unknown route {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(APIError(exc.status_code, msg, code=code).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        log.exception("request failed")
        return JSONResponse(
            APIError(500, f"generation failed: {type(exc).__name__}", "server_error").body(), status_code=500
        )


def _add_auth(app, api_key: str | None) -> None:
    """With ``api_key``, every request needs ``Authorization: Bearer <api_key>`` (401 otherwise)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key:
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                err = APIError(
                    401, "missing or invalid API key (send 'Authorization: Bearer <key>')", code="invalid_api_key"
                )
                return JSONResponse(err.body(), status_code=401)
        return await call_next(request)


def _check_model(model_id: str, name: str) -> None:
    if model_id != name:
        raise APIError(
            404,
            f"model {model_id!r} does not exist; this server has {name!r}",
            code="model_not_found",
            param="model",
        )


def _request_messages(req: ChatRequest, chat: ChatModel) -> list[dict]:
    """The request's messages as the chat template takes them, refused when there is nothing to
    answer or more characters than the model's context can hold (before tokenising)."""
    messages = []
    for i, m in enumerate(req.messages):
        try:
            content = m.text()
        except ValueError as exc:
            raise APIError(400, str(exc), param=f"messages.{i}.content") from None
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    if messages[-1]["role"] == "assistant":
        raise APIError(400, "the last message must not be the assistant's (nothing to answer)", param="messages")
    chars = sum(len(m["content"]) for m in messages)
    if chars > chat.context_length * chat.max_token_chars:
        raise APIError(
            400,
            f"the messages have {chars} characters: more than the model's context of {chat.context_length} "
            f"tokens can hold (no token is longer than {chat.max_token_chars} characters)",
            code="context_length_exceeded",
            param="messages",
        )
    return messages


async def _encode_prompt(chat: ChatModel, messages: list[dict], timeout: float) -> tuple[list[int], int]:
    """The prompt's token ids, tokenised in a worker thread (the event loop keeps answering other
    requests meanwhile), and the room left in the context for the answer."""
    try:
        prompt_ids = await asyncio.wait_for(asyncio.to_thread(chat.encode, messages), timeout)
    except TimeoutError:
        raise APIError(
            503, f"timed out after {timeout:g} s tokenising the prompt", "server_error", code="timeout"
        ) from None
    except Exception as exc:  # the template rejects the conversation (e.g. roles out of order)
        raise APIError(400, f"the chat template rejected the messages: {exc}", param="messages") from None
    room = chat.context_length - len(prompt_ids)
    if room < 1:
        raise APIError(
            400,
            f"the prompt has {len(prompt_ids)} tokens; the model's context is {chat.context_length}",
            code="context_length_exceeded",
            param="messages",
        )
    return prompt_ids, room


def _generation_params(req: ChatRequest, prompt_ids: list[int], room: int) -> dict:
    """The keyword arguments of :meth:`ChatModel.stream` for one request."""
    asked = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
    return {
        "prompt_ids": prompt_ids,
        "max_new_tokens": min(asked, room),
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "stops": req.stops(),
        "seed": req.seed,
    }


def _usage(info: dict) -> dict:
    return {
        "prompt_tokens": info["prompt_tokens"],
        "completion_tokens": info["completion_tokens"],
        "total_tokens": info["prompt_tokens"] + info["completion_tokens"],
    }


class _Reply:
    """One answer to a chat request, whole or streamed, from its :class:`Job`'s events."""

    def __init__(self, cid: str, created: int, model: str):
        self.cid, self.created, self.model = cid, created, model

    async def complete(self, job: Job) -> dict:
        text, info = "", {}
        try:
            async for delta, info in job:  # noqa: B007 (the last info holds the counts)
                text += delta
        finally:  # the client went away (the task is cancelled) or the answer is complete
            job.cancel()
        return {
            "id": self.cid,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": info["finish_reason"],
                    "logprobs": None,
                }
            ],
            "usage": _usage(info),
        }

    def _chunk(self, delta: dict, finish: str | None, include_usage: bool) -> str:
        body = {
            "id": self.cid,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def _events(self, job: Job, include_usage: bool):
        # headers go at once, so that a client that leaves while waiting frees its place; a
        # stream still waiting at a timeout or a shutdown gets the 503 as an error event, then [DONE]
        yield self._chunk({"role": "assistant", "content": ""}, None, include_usage)
        try:
            async for delta, info in job:
                if delta:
                    yield self._chunk({"content": delta}, None, include_usage)
                if "finish_reason" in info:
                    yield self._chunk({}, info["finish_reason"], include_usage)
                    if include_usage:
                        body = {
                            "id": self.cid,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": _usage(info),
                        }
                        yield f"data: {json.dumps(body)}\n\n"
        except APIError as exc:  # timed out waiting, or shutting down
            yield f"data: {json.dumps(exc.body())}\n\n"
        except Exception as exc:  # headers are sent: report the failure in the stream, as OpenAI does
            log.error("generation failed mid-stream: %s", type(exc).__name__)
            yield f"data: {json.dumps(APIError(500, f'generation failed: {type(exc).__name__}', 'server_error').body())}\n\n"
        finally:  # a disconnected client cancels this generator: free the model at once
            job.cancel()
        yield "data: [DONE]\n\n"

    def stream(self, job: Job, include_usage: bool):
        from fastapi.responses import StreamingResponse

        return StreamingResponse(
            self._events(job, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` (by its Content-Length, or counted as it
    arrives) is answered 413 before anything parses it."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        if max_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(send)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send):
        err = APIError(413, f"the request body is over {self.max_bytes} bytes", code="request_too_large")
        payload = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _uvicorn_server(config, generator: Generator):
    """A uvicorn Server whose SIGINT/SIGTERM first ends the generation in progress (its stream gets
    its final chunk and [DONE]) and answers every waiting request 503, then lets uvicorn close."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            generator.shutdown()
            super().handle_exit(sig, frame)

    return Server(config)


def serve(
    model_path: str,
    adapter: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    model_name: str | None = None,
    max_queue: int = 8,
    timeout: float = 300.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Run the server with uvicorn until interrupted (SIGINT/SIGTERM: the stream being generated
    ends with its final chunk and [DONE], waiting requests get 503, then it exits within a few
    seconds). Warns when it listens beyond loopback without a key."""
    import uvicorn

    if not _is_loopback(host) and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach this port can use the model", host)
    app = create_app(
        model_path,
        adapter=adapter,
        api_key=api_key,
        model_name=model_name,
        max_queue=max_queue,
        timeout=timeout,
        max_body_bytes=max_body_bytes,
    )
    log.info(
        "serving %r on http://%s:%d/v1 (API key %s)",
        app.state.model_name,
        host,
        port,
        "required" if api_key else "not required",
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    _uvicorn_server(config, app.state.generator).run()
