"""`ascend-run ask`: one question to the served model, the article's last step."""

from __future__ import annotations

import sys

import click

from ascend_run.cli import colour
from ascend_run.cli.common import Seconds, echo_json, file_from_environment, file_option, output_option
from ascend_run.inputs.text import terminal
from ascend_run.serving.ask import DEFAULT_MAX_TOKENS, DEFAULT_TIMEOUT, ChatClient, leader_url, messages_for, pick_model

URL_ENV, KEY_ENV = "OPENAI_BASE_URL", "OPENAI_API_KEY"


def _service_url(deployment_file: str | None, url: str | None, port: int | None) -> str:
    """What was typed wins over the environment: --url, then -f (node 0), then $OPENAI_BASE_URL, then the
    $ASCEND_RUN_FILE deployment's node 0."""
    ctx = click.get_current_context()
    url_from_env = ctx.get_parameter_source("url") == click.core.ParameterSource.ENVIRONMENT
    if url and not (url_from_env and deployment_file and not file_from_environment(ctx)):
        return url
    if not deployment_file:
        raise click.UsageError(f"give the deployment file (-f FILE: asks its node 0) or the service's --url "
                               f"(or set {URL_ENV})")
    from ascend_run.inputs.deployment import load_deployment

    return leader_url(load_deployment(deployment_file), port)


def _print_token(token: str) -> None:
    click.echo(terminal(token), nl=False)  # echo flushes: each token shows as it arrives; escapes escaped


def _discard(token: str) -> None:
    pass


def _progress(text: str) -> None:
    click.echo(colour.style(terminal(text), sys.stderr, fg="yellow"), err=True)


@click.command()
@click.argument("prompt")
@file_option(required=False, help="The deployment file; the service is on its node 0.")
@click.option("--url", envvar=URL_ENV, show_envvar=True,
              help=f"The service's base URL, e.g. https://gateway/v1 (default: http://<node 0>:<port> with -f, else "
                   f"${URL_ENV}).")
@click.option("--api-key", envvar=KEY_ENV, show_envvar=True, metavar="KEY",
              help="Sent as `Authorization: Bearer KEY` (a gateway in front of the service); prefer the variable, "
                   "a command line is visible to other users.")
@click.option("--port", type=click.IntRange(1, 65535),
              help="The service's port on node 0 (default: job.serve_port, else 8000).")
@click.option("--model", help="Model name (default: the one the service lists at /v1/models).")
@click.option("--stream", is_flag=True, help="Print the answer as it is generated.")
@click.option("--wait", type=Seconds(0, 86400), default=0, show_default=True, metavar="SECONDS",
              help="Wait up to this long for the service to be ready (it loads the weights first).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True)
@click.option("--timeout", type=Seconds(1, 86400), default=DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help="How long one answer may take.")
@output_option
def ask(prompt: str, deployment_file: str | None, url: str | None, api_key: str | None, port: int | None,
        model: str | None, stream: bool, wait: float, max_tokens: int, timeout: float, output_format: str) -> None:
    """Ask the served model PROMPT through its OpenAI-compatible API ('-' reads the prompt from stdin).
    """
    if prompt == "-":
        prompt = sys.stdin.read().strip()
    client = ChatClient(_service_url(deployment_file, url, port), timeout=timeout, api_key=api_key or None)
    if wait:
        models = client.wait_ready(wait, progress=_progress)
    else:
        models = client.models() if model is None else []
    model = pick_model(models, client.base, model)
    printing = stream and output_format == "text"
    on_token = None
    if stream:  # with --output json the stream is still used, and printed once whole
        on_token = _print_token if printing else _discard
    answer = client.chat(messages_for(prompt), model, max_tokens=max_tokens, on_token=on_token)
    if output_format == "json":
        echo_json({"url": client.base, "model": answer.model, "prompt": prompt, "answer": answer.text,
                   "finish_reason": answer.finish_reason, "usage": answer.usage, "elapsed_s": answer.elapsed_s,
                   "streamed": answer.streamed})
        return
    click.echo("" if printing else terminal(answer.text))
    tokens = (answer.usage or {}).get("completion_tokens")
    click.echo(colour.style(f"({answer.model}, {answer.elapsed_s:.1f} s" + (f", {tokens} tokens" if tokens else "")
                            + (", cut at --max-tokens" if answer.finish_reason == "length" else "") + ")",
                            sys.stderr, dim=True), err=True)


commands = [ask]
