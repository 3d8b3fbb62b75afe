"""A loopback OpenAI-compatible chat server for tests.

    with FakeOpenAI(["reply one", "reply two"]) as server:
        client = LLMClient("openai/fake", api_base=server.base_url)
        ...
        assert len(server.chat_requests) == 2

Each chat request consumes one entry of the script (a list), or is answered by
a callable ``(request_json) -> reply``. A reply is one of:

- ``str``: that text for every one of the ``n`` choices asked for;
- ``list[str]``: exactly these choices (fewer than ``n`` is allowed: that is
  how a server that ignores ``n`` looks);
- ``(status_code, body)``: an error response; ``body`` is a dict (sent as
  JSON) or a str (wrapped as an OpenAI error object).

With no script every request gets ``n`` distinct texts ("reply 1.1", ...).
A list script that runs out answers 400, which no client retries, so an
unexpected extra request fails the test loudly instead of hanging.

Only 127.0.0.1, an ephemeral port, bounded bodies and a bounded number of
requests: it is a test fixture, never a server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | list[str] | tuple[int, Any]
Script = list[Reply] | Callable[[dict], Reply] | None

MAX_BODY = 4 * 1024 * 1024
MAX_REQUESTS = 10_000


def _words(text: str) -> int:
    # A stand-in tokenizer: deterministic, good enough to assert on.
    return max(1, len(text.split()))


class FakeOpenAI:
    def __init__(self, script: Script = None, *, model: str = "fake-model", api_key: str | None = None):
        self._script = script
        self._next = 0  # index into a list script
        self._lock = threading.Lock()
        self.model = model
        self.api_key = api_key  # when set, a request with another bearer token gets 401
        self.requests: list[dict] = []  # every request: {"method", "path", "json", "headers"}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        server.daemon_threads = True  # a sleeping handler never blocks shutdown
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[dict]:
        """Bodies of the chat-completion requests, in arrival order."""
        with self._lock:
            return [r["json"] for r in self.requests if r["path"].endswith("/chat/completions")]

    # ---- replies ---------------------------------------------------------
    def _reply_for(self, body: dict) -> Reply:
        n = int(body.get("n") or 1)
        if self._script is None:
            with self._lock:
                k = len(self._chat_unlocked())
            return [f"reply {k}.{i + 1}" for i in range(n)]
        if callable(self._script):
            return self._script(body)
        with self._lock:
            if self._next >= len(self._script):
                return (400, "fake server: script exhausted")
            reply = self._script[self._next]
            self._next += 1
        return reply

    def _chat_unlocked(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def _completion(self, body: dict, texts: list[str]) -> dict:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        completion_tokens = sum(_words(t) for t in texts)
        prompt_tokens = _words(prompt)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop",
                }
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its deadline): nothing to do

            def _record(self, body: Any) -> bool:
                with fake._lock:
                    if len(fake.requests) >= MAX_REQUESTS:
                        return False
                    fake.requests.append(
                        {"method": self.command, "path": self.path, "json": body, "headers": dict(self.headers)}
                    )
                return True

            def _authorized(self) -> bool:
                if fake.api_key is None:
                    return True
                if self.headers.get("Authorization", "") == f"Bearer {fake.api_key}":
                    return True
                self._send(401, _error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"))
                return False

            def do_GET(self):
                if not self._record(None):
                    return self._send(429, _error("fake server: request limit"))
                if not self._authorized():
                    return
                if self.path.rstrip("/").endswith("/models"):
                    return self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "fake"}]})
                self._send(404, _error(f"no route {self.path}"))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self.close_connection = True
                    return self._send(413, _error("fake server: body too large"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                if not self._record(body):
                    return self._send(429, _error("fake server: request limit"))
                if not self._authorized():
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, _error(f"no route {self.path}"))
                if not isinstance(body, dict):
                    return self._send(400, _error("body is not a JSON object"))
                reply = fake._reply_for(body)
                if isinstance(reply, tuple):
                    status, payload = reply
                    if isinstance(payload, str):
                        payload = _error(payload)
                    return self._send(int(status), payload)
                n = int(body.get("n") or 1)
                texts = [reply] * n if isinstance(reply, str) else list(reply)
                self._send(200, fake._completion(body, texts))

        return Handler


def _error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
