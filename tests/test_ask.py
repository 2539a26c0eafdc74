"""`ascend-run ask`: the OpenAI-compatible client, against a local stand-in service.

No Ascend model server can run here (no NPUs, no 1.4 TB of weights), so `tests/openai_standin.py` plays
MindSpore's OpenAI-compatible service on 127.0.0.1: model list, chat completions with and without SSE
streaming, 503 while loading, streams cut inside multi-byte characters.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from click.testing import CliRunner

from ascend_run.cli import cli
from ascend_run.errors import AscendRunError
from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.serving.ask import (
    ChatClient,
    ServiceError,
    ServiceUnreachable,
    iter_sse_data,
    leader_url,
    messages_for,
    normalize_url,
)
from tests.openai_standin import DEFAULT_ANSWER, StandIn

PROMPT = "生抽和老抽的区别是什么？"


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pure pieces --------------------------------------------------------------------------------

def test_sse_chunks_split_inside_characters():
    stream = ('data: {"c": "生抽"}\n\n: ping\n\ndata: {"c": "老抽"}\r\n\r\nevent: x\ndata: a\ndata: b\n\n'
              "data: [DONE]\n\n").encode()
    for size in (1, 2, 4, 5, 7, len(stream)):
        chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
        assert list(iter_sse_data(chunks)) == ['{"c": "生抽"}', '{"c": "老抽"}', "a\nb", "[DONE]"]


def test_sse_last_event_without_blank_line():
    assert list(iter_sse_data([b"data: 1\n\ndata: 2"])) == ["1", "2"]


@pytest.mark.parametrize("given,base", [
    ("10.0.0.1:8000", "http://10.0.0.1:8000"), ("http://h:8000/", "http://h:8000"),
    ("http://h:8000/v1", "http://h:8000"), ("https://h/api/v1/", "https://h/api"),
    ("http://[fd00::1]:8000", "http://[fd00::1]:8000"),
])
def test_normalize_url(given, base):
    assert normalize_url(given) == base


def test_normalize_url_refuses_other_schemes():
    with pytest.raises(AscendRunError, match="not an http"):
        normalize_url("ftp://h/")


def deployment(job: dict | None = None, address: str = "192.168.1.[1-4]"):
    data = {"name": "ds3-infer", "profile": "atlas-800i-a2", "image": "r/ds3-infer:1",
            "nodes": [{"address": address, "name": "infer[0-3]"}]}
    if job is not None:
        data["job"] = {"command": "run_deepseekv3_predict.py", **job}
    return deployment_from_data(data)


def test_leader_url_port_precedence():
    assert leader_url(deployment()) == "http://192.168.1.1:8000"
    assert leader_url(deployment({"serve_port": 1025})) == "http://192.168.1.1:1025"
    assert leader_url(deployment({"serve_port": 1025}), port=9000) == "http://192.168.1.1:9000"
    assert leader_url(deployment(address="fd00::[1-4]")) == "http://[fd00::1]:8000"


# --- against the stand-in -----------------------------------------------------------------------

def test_models_and_plain_chat():
    with StandIn() as service:
        client = ChatClient(service.url + "/v1/")
        assert client.models() == ["DeepSeek-V3"]
        answer = client.chat(messages_for(PROMPT), "DeepSeek-V3", max_tokens=64)
    assert answer.text == DEFAULT_ANSWER and answer.finish_reason == "stop" and not answer.streamed
    assert answer.usage["completion_tokens"] == len(DEFAULT_ANSWER)
    method, path, body = service.requests[-1]
    assert (method, path) == ("POST", "/v1/chat/completions")
    assert body == {"model": "DeepSeek-V3", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64,
                    "stream": False}


@pytest.mark.parametrize("piece_bytes", [1, 5, 4096])
@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_stream_utf8_split_across_chunks(piece_bytes, ensure_ascii):
    tokens: list[str] = []
    with StandIn(piece_bytes=piece_bytes, ensure_ascii=ensure_ascii) as service:
        answer = ChatClient(service.url).chat(messages_for(PROMPT), "DeepSeek-V3", on_token=tokens.append)
    assert tokens == list(DEFAULT_ANSWER)  # one token per character, none mangled
    assert answer.text == DEFAULT_ANSWER and answer.streamed and answer.finish_reason == "stop"
    assert answer.usage["total_tokens"] == len(PROMPT) + len(DEFAULT_ANSWER)


def test_stream_delivers_tokens_before_the_end():
    arrivals: list[float] = []
    with StandIn(token_delay=0.02, answer="生抽老抽") as service:
        started = time.monotonic()
        answer = ChatClient(service.url).chat(messages_for(PROMPT), "DeepSeek-V3",
                                              on_token=lambda t: arrivals.append(time.monotonic() - started))
    assert answer.text == "生抽老抽"
    assert arrivals[0] < answer.elapsed_s - 0.04  # the first token came well before the last


def test_wait_ready_polls_through_loading():
    messages: list[str] = []
    with StandIn(ready_after=0.8) as service:
        client = ChatClient(service.url)
        with pytest.raises(ServiceError) as err:
            client.models()
        assert err.value.status == 503 and "model is loading" in str(err.value) and "--wait" in str(err.value)
        assert client.wait_ready(10, interval=0.1, progress=messages.append, report_every=0.3) == ["DeepSeek-V3"]
    assert messages and "waiting for http://127.0.0.1:" in messages[0] and "model is loading" in messages[0]


def test_wait_ready_gives_up():
    with StandIn(ready_after=60) as service:
        with pytest.raises(ServiceError, match=r"not ready after 0 s: .*HTTP 503"):
            ChatClient(service.url).wait_ready(0.3, interval=0.1)


def test_wait_ready_on_a_closed_port():
    port = free_port()
    with pytest.raises(ServiceUnreachable) as err:
        ChatClient(f"http://127.0.0.1:{port}").wait_ready(0.3, interval=0.1)
    assert f"127.0.0.1:{port}/v1/models" in str(err.value) and "connection refused" in str(err.value)


def test_unreachable_names_url_and_suggests_wait():
    port = free_port()
    with pytest.raises(ServiceUnreachable) as err:
        ChatClient(f"127.0.0.1:{port}").models()
    text = str(err.value)
    assert f"cannot reach http://127.0.0.1:{port}/v1/models: connection refused" in text and "--wait" in text
    assert err.value.exit_code == 4


def test_http_errors_carry_status_and_body():
    with StandIn(fail_status=500) as service:
        with pytest.raises(ServiceError) as err:
            ChatClient(service.url).chat(messages_for(PROMPT), "DeepSeek-V3")
    assert err.value.status == 500
    assert "HTTP 500 Internal Server Error: NPU out of memory while generating" in str(err.value)
    with StandIn() as service:
        with pytest.raises(ServiceError, match=r"HTTP 404 Not Found: The model `gpt-4` does not exist.*\n.*--model"):
            ChatClient(service.url).chat(messages_for(PROMPT), "gpt-4")


def test_not_an_openai_server():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>nginx welcome</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServiceError, match="not JSON: <html>nginx welcome</html>"):
            ChatClient(f"http://127.0.0.1:{server.server_address[1]}").models()
    finally:
        server.shutdown()
        server.server_close()


# --- the command ---------------------------------------------------------------------------------

def run(*args: str):
    return CliRunner().invoke(cli, ["ask", *args])


def test_cli_plain_answer_picks_the_model():
    with StandIn(model="deepseek_v3") as service:
        result = run(PROMPT, "--url", service.url)
    assert result.exit_code == 0, result.output
    assert result.stdout == DEFAULT_ANSWER + "\n"
    assert "(deepseek_v3, " in result.stderr and f"{len(DEFAULT_ANSWER)} tokens" in result.stderr
    assert service.requests[0][:2] == ("GET", "/v1/models") and service.requests[1][2]["model"] == "deepseek_v3"


def test_cli_stream_with_wait():
    with StandIn(ready_after=0.5, piece_bytes=2) as service:
        result = run(PROMPT, "--url", service.url, "--stream", "--wait", "20", "--max-tokens", "32")
    assert result.exit_code == 0, result.output
    assert result.stdout == DEFAULT_ANSWER + "\n"
    assert "waiting for" in result.stderr
    assert service.requests[-1][2]["stream"] is True and service.requests[-1][2]["max_tokens"] == 32


def test_cli_json_and_explicit_model():
    with StandIn() as service:
        result = run(PROMPT, "--url", service.url, "--model", "DeepSeek-V3", "--stream", "--output", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == DEFAULT_ANSWER and data["prompt"] == PROMPT and data["streamed"] is True
    assert data["model"] == "DeepSeek-V3" and data["finish_reason"] == "stop"
    assert [r[:2] for r in service.requests] == [("POST", "/v1/chat/completions")]  # no /v1/models needed


def test_cli_unknown_model_after_wait():
    with StandIn() as service:
        result = run(PROMPT, "--url", service.url, "--model", "gpt-4", "--wait", "5")
    assert isinstance(result.exception, ServiceError)
    assert "does not serve 'gpt-4'; it serves 'DeepSeek-V3'" in str(result.exception)
    assert [r[0] for r in service.requests] == ["GET"]  # refused before asking


def test_cli_deployment_file_and_port(tmp_path):
    with StandIn() as service:
        port = service.url.rsplit(":", 1)[1]
        deploy = tmp_path / "serve.yaml"
        deploy.write_text("name: ds3-serve\nprofile: atlas-800i-a2\nimage: r/ds3:1\n"
                          "nodes:\n  - address: 127.0.0.1\n    name: infer0\n  - address: 127.0.0.2\n    name: infer1\n"
                          f"job:\n  command: serve.py\n  serve_port: {port}\n")
        result = run(PROMPT, "-f", str(deploy))
        assert result.exit_code == 0, result.output
        assert result.stdout == DEFAULT_ANSWER + "\n"
        result = run(PROMPT, "-f", str(deploy), "--port", str(free_port()))
    assert isinstance(result.exception, ServiceUnreachable) and "--wait" in str(result.exception)


def test_cli_prompt_from_stdin_and_usage_errors():
    with StandIn() as service:
        result = CliRunner().invoke(cli, ["ask", "-", "--url", service.url], input=PROMPT + "\n")
    assert result.exit_code == 0 and service.requests[-1][2]["messages"][0]["content"] == PROMPT
    result = run(PROMPT)
    assert result.exit_code == 2 and "--url" in result.output
