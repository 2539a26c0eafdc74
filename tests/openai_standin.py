"""A small OpenAI-compatible chat service on 127.0.0.1, standing in for MindSpore's model service.

No Ascend NPU (and so no DeepSeek-V3 service) can run here; this plays the service's HTTP side as
`ascend-run ask` sees it: `GET /v1/models`, `POST /v1/chat/completions` with and without `stream`,
503 while "loading" for `ready_after` seconds, and streams cut into `piece_bytes`-byte HTTP chunks so
multi-byte UTF-8 characters are split across reads, as a real network does.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_ANSWER = ("生抽颜色浅、味道偏咸鲜，主要用来提鲜和凉拌；老抽颜色深、略带甜味，"
                  "主要用来给红烧类菜肴上色。")


class StandIn:
    """`with StandIn(...) as service:` serves on `service.url` until the block ends."""

    def __init__(self, *, model: str = "DeepSeek-V3", answer: str = DEFAULT_ANSWER, ready_after: float = 0.0,
                 piece_bytes: int = 5, fail_status: int | None = None, token_delay: float = 0.0,
                 ensure_ascii: bool = False, api_key: str | None = None) -> None:
        self.model, self.answer, self.ready_after = model, answer, ready_after
        self.piece_bytes, self.fail_status, self.token_delay = piece_bytes, fail_status, token_delay
        self.ensure_ascii = ensure_ascii
        self.api_key = api_key  # when set, a request without `Authorization: Bearer <api_key>` gets 401
        self.authorization: list[str | None] = []  # the Authorization header of every request
        self.requests: list[tuple[str, str, dict | None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = 0.0

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def ready(self) -> bool:
        return time.monotonic() - self._started >= self.ready_after

    def __enter__(self) -> StandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def events(self, prompt: str) -> list[dict]:
        """The `chat.completion.chunk`s of one streamed answer: role, one per character, finish."""
        base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 0, "model": self.model}
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}]
        chunks += [{**base, "choices": [{"index": 0, "delta": {"content": ch}, "finish_reason": None}]}
                   for ch in self.answer]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "usage": self.usage(prompt)})
        return chunks

    def usage(self, prompt: str) -> dict:
        return {"prompt_tokens": len(prompt), "completion_tokens": len(self.answer),
                "total_tokens": len(prompt) + len(self.answer)}


def _handler(service: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _send_json(self, status: int, data: dict) -> None:
            body = json.dumps(data, ensure_ascii=service.ensure_ascii).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send_json(status, {"error": {"message": message, "type": "invalid_request_error",
                                               "code": status}})

        def _refused(self) -> bool:
            given = self.headers.get("Authorization")
            service.authorization.append(given)
            if service.api_key and given != f"Bearer {service.api_key}":
                self._error(401, "invalid api key")
                return True
            return False

        def do_GET(self) -> None:
            service.requests.append(("GET", self.path, None))
            if self._refused():
                return
            if self.path != "/v1/models":
                return self._error(404, f"no route {self.path}")
            if not service.ready:
                return self._error(503, "model is loading")
            self._send_json(200, {"object": "list", "data": [
                {"id": service.model, "object": "model", "created": 0, "owned_by": "mindspore"}]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return self._error(400, "body is not UTF-8 JSON")
            service.requests.append(("POST", self.path, body))
            if self._refused():
                return
            if self.path != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}")
            if not service.ready:
                return self._error(503, "model is loading")
            if service.fail_status:
                return self._error(service.fail_status, "NPU out of memory while generating (stand-in failure)")
            if body.get("model") != service.model:
                return self._error(404, f"The model `{body.get('model')}` does not exist.")
            messages = body.get("messages")
            if not messages or not isinstance(messages, list):
                return self._error(400, "messages must be a non-empty list")
            prompt = str(messages[-1].get("content", ""))
            if body.get("stream"):
                return self._stream(prompt)
            self._send_json(200, {
                "id": "chatcmpl-standin", "object": "chat.completion", "created": 0, "model": service.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": service.answer},
                             "finish_reason": "stop"}],
                "usage": service.usage(prompt)})

        def _stream(self, prompt: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b": keep-alive\n\n")
            for event in service.events(prompt):
                data = f"data: {json.dumps(event, ensure_ascii=service.ensure_ascii)}\n\n".encode()
                for start in range(0, len(data), service.piece_bytes):  # split inside characters on purpose
                    self._chunk(data[start:start + service.piece_bytes])
                if service.token_delay:
                    time.sleep(service.token_delay)
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler
