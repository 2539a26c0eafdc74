"""A chat client for the served model's OpenAI-compatible API, on the standard library alone.

The article ends by asking the served DeepSeek-V3 "生抽和老抽的区别是什么？"; `ascend-run ask` does that
against the serving leader (node 0) without curl, jq or the openai package on the operator's machine.
A 671B model takes minutes to load, so readiness (`GET /v1/models`) can be waited for; answers can be
streamed (server-sent events). Bytes are decoded only once a whole SSE line is in, so a multi-byte
character split across network reads arrives intact.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ascend_run.errors import AscendRunError, TransportError

DEFAULT_PORT = 8000
DEFAULT_MAX_TOKENS = 512
DEFAULT_TIMEOUT = 600.0
_EXCERPT = 300


class ServiceUnreachable(TransportError):
    """Nothing answers at the service URL (refused, no route, timed out)."""


class ServiceError(AscendRunError):
    """The service answered, but with an HTTP error or something that is not an OpenAI-style answer."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "", fix: str | None = None) -> None:
        self.status, self.body = status, body
        super().__init__(message, fix=fix)


def normalize_url(url: str) -> str:
    """'host:8000', 'http://host:8000/', 'http://host:8000/v1' -> 'http://host:8000' (the base the paths go on)."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AscendRunError(f"{url!r} is not an http(s) URL", fix="use e.g. --url http://10.0.0.1:8000")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def leader_url(dep, port: int | None = None) -> str:
    """The serving leader: node 0's address, port `port`, else `job.serve_port`, else 8000."""
    port = port or (dep.job.serve_port if dep.job and dep.job.serve_port else DEFAULT_PORT)
    host = dep.nodes[0].address
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}"


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Complete lines (without the newline) out of byte chunks cut anywhere; a last unterminated one too."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from complete
    if buffer:
        yield buffer


def iter_sse_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream, from raw byte chunks cut anywhere.

    Lines are decoded only when complete (a newline is never inside a UTF-8 sequence); multi-line data
    is joined with newlines; comments (`: ping`) and other fields are skipped.
    """
    data: list[str] = []
    for raw in _lines(chunks):
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


@dataclass
class Answer:
    text: str
    model: str
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    streamed: bool = False


@dataclass(frozen=True)
class ChatClient:
    """One OpenAI-compatible service. Environment proxies are honoured, except for loopback addresses. With an
    `api_key` (a gateway in front of the service), every request carries `Authorization: Bearer KEY`."""

    base: str
    timeout: float = DEFAULT_TIMEOUT
    api_key: str | None = field(default=None, repr=False)
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", normalize_url(self.base))
        host = urllib.parse.urlsplit(self.base).hostname or ""
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        object.__setattr__(self, "_opener", urllib.request.build_opener(*handlers))

    # -- requests --

    def _open(self, path: str, body: dict | None = None, timeout: float | None = None):
        url = self.base + path
        data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET", headers=headers)
        try:
            return self._opener.open(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise _http_error(url, exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise _unreachable(url, exc, timeout or self.timeout) from None

    def _json(self, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        url = self.base + path
        with self._open(path, body, timeout) as response:
            try:
                raw = response.read()
            except OSError as exc:
                raise _unreachable(url, exc, timeout or self.timeout) from None
        try:
            return json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            raise ServiceError(f"{url} answered something that is not JSON: {_excerpt(raw)}",
                               body=_excerpt(raw), fix="is --url the model service, not another server?") from None

    def models(self, timeout: float | None = None) -> list[str]:
        """Model ids served (`GET /v1/models`); a service that answers this is ready."""
        data = self._json("/v1/models", timeout=timeout)
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ServiceError(f"{self.base}/v1/models is not an OpenAI model list: {_excerpt(json.dumps(data))}")
        return [str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e]

    def wait_ready(self, within: float, *, interval: float = 2.0,
                   progress: Callable[[str], None] | None = None, report_every: float = 10.0) -> list[str]:
        """Poll `/v1/models` until it answers (refused or 5xx means still loading), at most `within` seconds."""
        start = time.monotonic()
        last_report = None
        while True:
            elapsed = time.monotonic() - start
            try:
                return self.models(timeout=max(1.0, min(10.0, within - elapsed)))
            except (ServiceUnreachable, ServiceError) as exc:
                loading = isinstance(exc, ServiceUnreachable) or (exc.status or 0) >= 500
                if not loading or elapsed >= within:
                    if loading:
                        raise type(exc)(f"not ready after {within:.0f} s: {exc.message}",
                                        fix="wait longer (--wait), or look at the job's logs (ascend-run logs)") \
                            from None
                    raise
                if progress and (last_report is None or elapsed - last_report >= report_every):
                    progress(f"waiting for {self.base}/v1/models ({elapsed:.0f} s of {within:.0f} s): "
                             f"{exc.message.split(': ', 1)[-1]}")
                    last_report = elapsed
                time.sleep(max(0.0, min(interval, within - elapsed)))

    def chat(self, messages: list[dict], model: str, *, max_tokens: int = DEFAULT_MAX_TOKENS,
             on_token: Callable[[str], None] | None = None) -> Answer:
        """One chat completion; streamed (tokens passed to `on_token` as they arrive) when `on_token` is given."""
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": on_token is not None}
        started = time.monotonic()
        if on_token is None:
            answer = _parse_completion(self._json("/v1/chat/completions", body), model, self.base)
        else:
            answer = self._stream(body, model, on_token)
        answer.elapsed_s = round(time.monotonic() - started, 3)
        return answer

    def _stream(self, body: dict, model: str, on_token: Callable[[str], None]) -> Answer:
        url = self.base + "/v1/chat/completions"
        answer = Answer(text="", model=model, streamed=True)
        parts: list[str] = []
        with self._open("/v1/chat/completions", body) as response:
            chunks = iter(lambda: response.read1(65536), b"")
            try:
                for payload in iter_sse_data(chunks):
                    if payload.strip() == "[DONE]":
                        break
                    token = _apply_chunk(answer, payload, url)
                    if token:
                        parts.append(token)
                        on_token(token)
            except OSError as exc:
                raise _unreachable(url, exc, self.timeout, during="while streaming the answer") from None
        answer.text = "".join(parts)
        return answer


def _apply_chunk(answer: Answer, payload: str, url: str) -> str:
    """Fold one streamed `chat.completion.chunk` into `answer`; return its new text."""
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        raise ServiceError(f"{url} streamed something that is not JSON: {_excerpt(payload.encode())}") from None
    if not isinstance(chunk, dict):
        raise ServiceError(f"{url} streamed an unexpected value: {_excerpt(payload.encode())}")
    if "error" in chunk:
        raise ServiceError(f"{url} reported an error mid-stream: {_error_message(chunk)}", body=payload)
    answer.model = chunk.get("model") or answer.model
    answer.usage = chunk.get("usage") or answer.usage
    choices = chunk.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    answer.finish_reason = choice.get("finish_reason") or answer.finish_reason
    delta = choice.get("delta") or {}
    return (delta.get("content") if isinstance(delta, dict) else None) or choice.get("text") or ""


def _parse_completion(data: Any, model: str, base: str) -> Answer:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise ServiceError(f"{base}/v1/chat/completions is not an OpenAI chat completion: "
                           f"{_excerpt(json.dumps(data, ensure_ascii=False).encode())}") from None
    return Answer(text=text or "", model=data.get("model") or model, finish_reason=choice.get("finish_reason"),
                  usage=data.get("usage"))


def pick_model(models: list[str], base: str, wanted: str | None = None) -> str:
    """`wanted` if served (or if the list is unknown), else the first listed: a serving deployment runs one."""
    if wanted:
        if models and wanted not in models:
            raise ServiceError(f"{base} does not serve {wanted!r}; it serves {', '.join(map(repr, models))}",
                               fix="leave --model out to use the served model")
        return wanted
    if not models:
        raise ServiceError(f"{base}/v1/models lists no model", fix="the service may still be loading; "
                           "retry with --wait, or name it with --model")
    return models[0]


def messages_for(prompt: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


# --- errors --------------------------------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _excerpt(raw: bytes) -> str:
    text = " ".join(raw.decode("utf-8", errors="replace").split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def _error_message(data: Any) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return _excerpt(json.dumps(data, ensure_ascii=False).encode())


def _http_error(url: str, exc: urllib.error.HTTPError) -> ServiceError:
    try:
        raw = exc.read()
    except OSError:
        raw = b""
    try:
        detail = _error_message(json.loads(raw.decode("utf-8", errors="replace")))
    except (json.JSONDecodeError, AttributeError):
        detail = _excerpt(raw)
    fixes = {400: "check the request options (--model, --max-tokens) against the service",
             401: "give the gateway's key: --api-key KEY or OPENAI_API_KEY",
             403: "the key (--api-key / OPENAI_API_KEY) is not allowed to use this service or model",
             404: "check --url (the service's base, e.g. http://host:8000) and --model (see /v1/models)",
             503: "the service is still loading: retry with --wait 900"}
    fix = fixes.get(exc.code, "look at the service's log on the leader node (ascend-run logs)"
                    if exc.code >= 500 else None)
    return ServiceError(f"{url} answered HTTP {exc.code} {exc.reason}: {detail or '(empty body)'}",
                        status=exc.code, body=_excerpt(raw), fix=fix)


def _unreachable(url: str, exc: BaseException, timeout: float, during: str = "") -> ServiceUnreachable:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        what = f"no answer within {timeout:.0f} s"
    elif isinstance(reason, ConnectionRefusedError):
        what = "connection refused"
    elif isinstance(reason, socket.gaierror):
        what = f"unknown host ({reason.strerror})"
    else:
        what = str(reason) or type(reason).__name__
    return ServiceUnreachable(f"cannot reach {url}{' ' + during if during else ''}: {what}",
                              fix="if the model is still loading, wait for it with --wait 900; otherwise check "
                                  "--url/--port and that the service runs on the leader node")
