"""`ascend-run data prepare`: the training dataset, converted on a server (see ascend_run/steps/dataprep.py)."""

from __future__ import annotations

import posixpath
import shlex

import click

from ascend_run.cli.common import (
    deployment_option,
    dry_run_option,
    echo_json,
    human_size,
    out_option,
    output_option,
    pick_nodes,
    renamed_option,
    subset_given,
    subset_options,
)
from ascend_run.inputs.text import comment
from ascend_run.steps import dataprep


@click.group()
def data() -> None:
    """Training data on the servers."""


@data.command()
@deployment_option
@click.option("--input", "input_path", metavar="PATH", default=dataprep.DEFAULT_INPUT, show_default=True,
              help="Wikitext-2 wiki.train.tokens, as the container sees it (under a mount).")
@click.option("--vocab-file", metavar="PATH", default=dataprep.DEFAULT_VOCAB, show_default=True,
              help="DeepSeek-V3 tokenizer.json, as the container sees it (under a mount).")
@click.option("--output-prefix", metavar="PATH", default=dataprep.DEFAULT_PREFIX, show_default=True,
              help="Output prefix in the container (under a writable mount); the script writes "
                   "PREFIX_text_document.bin and .idx.")
@click.option("--seq-length", default=4096, show_default=True, type=click.IntRange(1),
              help="Tokens per training sample (the model's seq_length).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Tokenizer processes of the script.")
@click.option("--script", metavar="PATH", default=dataprep.DEFAULT_SCRIPT, show_default=True,
              help="The conversion script, relative to the image's MindFormers directory, or absolute "
                   "(e.g. a stand-in on a mount).")
@click.option("--node", help="The node that converts (name, address or rank). Default: node 0.")
@click.option("--image", help="Image to convert in. Default: the deployment file's image.")
@click.option("--derive", "derive_base", type=click.Path(dir_okay=False, exists=True), metavar="BASE",
              help="Then derive the article's 1B config from BASE (pretrain_deepseek3_671b.yaml, a local "
                   "copy) with this dataset; needs --out.")
@out_option("With --derive: where to write the config.")
@renamed_option("--out-file", "--out FILE")
@click.option("--spread", is_flag=True,
              help="Then copy the dataset directory from node 0 to every other node (or -w/-x), node to node, as "
                   "`weights fetch --from-node` does (sha256-checked; nodes on shared storage are skipped).")
@subset_options
@dry_run_option
@output_option
@click.option("--accept-new-host-keys", is_flag=True,
              help="Record host keys of nodes not yet in known_hosts.")
def prepare(deployment_file: str, input_path: str, vocab_file: str, output_prefix: str, seq_length: int,
            workers: int, script: str, node: str | None, image: str | None, derive_base: str | None,
            out: str | None, spread: bool, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...],
            dry_run: bool, output_format: str, accept_new_host_keys: bool) -> None:
    """Convert Wikitext-2 to the Megatron BIN dataset pre-training reads (the article's wikitext_to_bin.py).

    Runs the script in a one-off container of the image on one node (removed when it ends, no NPUs), with
    the deployment file's mounts: every path is a path in the container and must be under a mount, so
    the output outlives the container. Before anything runs, the input and tokenizer are looked for on
    the node; afterwards the .bin/.idx pair is checked (Megatron index header, sizes). Then the next
    step is printed: `config derive` with --data-path PREFIX_text_document, or run with --derive.

    \b
    Download the inputs first, to the server directory mounted at /home/work/dataset
    (unzip wikitext-2-v1.zip; wiki.train.tokens is in wikitext-2/):
      https://ascend-repo-modelzoo.obs.cn-east-2.myhuaweicloud.com/
        MindFormers/dataset/wikitext-2/wikitext-2-v1.zip
      https://huggingface.co/deepseek-ai/DeepSeek-V3/resolve/main/
        tokenizer.json?download=true
    and mount it in the deployment file:
      mounts: [{source: /data/dataset, target: /home/work/dataset}]
    """
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.inputs.images import get_image
    from ascend_run.steps.task import dry_run_lines

    if bool(derive_base) != bool(out):
        raise click.UsageError("--derive BASE and --out FILE go together")
    if subset_given(node_specs, exclude_specs) and not spread:
        raise click.UsageError("-w/-x choose the nodes --spread copies to; the conversion runs on one node (--node)")
    dep = load_deployment(deployment_file)
    target = dep.select([node])[0] if node else dep.nodes[0]
    if spread and target != dep.nodes[0]:
        raise click.UsageError(f"--spread copies from node 0 ({dep.nodes[0].name}): convert there (drop --node)")
    receivers = [n for n in pick_nodes(dep, node_specs, exclude_specs) if n != dep.nodes[0]] if spread else []
    prep = dataprep.DataPrep(input=input_path, vocab_file=vocab_file, output_prefix=output_prefix,
                             seq_length=seq_length, workers=workers, script=script,
                             mindformers_dir=get_image("train").workdir, image=image)
    paths = dataprep.server_paths(dep, prep)  # mount errors before any connection, dry run included
    next_argv = dataprep.derive_argv(deployment_file, prep, *((derive_base, out) if derive_base else ()))
    if dry_run:
        lines = dry_run_lines(target, dataprep.commands(dep, target, prep))
        if spread:
            lines.append(comment(f"then: copy {shlex.quote(posixpath.dirname(paths.output_prefix))} to "
                                 f"{', '.join(n.name for n in receivers) or 'no other node'} "
                                 "(as weights fetch --from-node)"))
        lines.append(comment(f"next: {shlex.join(next_argv)}"))
        if output_format == "json":
            echo_json({"dry_run": True, "node": target.name, "lines": lines, "next": next_argv})
        else:
            click.echo("\n".join(lines))
        return
    result = _run(dep, target, prep, accept_new_host_keys, posixpath.dirname(paths.output_prefix) if spread else None,
                  receivers)
    result["next"] = shlex.join(next_argv)
    if output_format == "text":
        click.echo(f"{target.name}: {result['bin']['server']} ({human_size(result['bin_bytes'])}) and .idx: "
                   f"{result['sequences']} sequences of {seq_length + 1} tokens, {result['documents']} "
                   f"documents, {result['dtype']}, in {result['seconds']} s")
        click.echo(f"data_path in the container: {prep.data_path}")
        if len(dep.nodes) > 1 and not spread:
            out_dir = paths.output_prefix.rsplit('/', 1)[0]
            click.echo(f"note: the dataset is on {target.name} only; every node of the job reads it, so put "
                       f"{out_dir} on storage every node mounts, or copy it there", err=True)
    if derive_base:  # after the data report: a config that fails its check must not hide a good dataset
        derived = dataprep.derive(dep, prep, derive_base, out)
        result["derived"] = str(derived.written)
    if output_format == "json":
        echo_json(result)
    elif derive_base:
        click.echo(f"derived {result['derived']} from {derive_base} (preset article-1b, this data_path), "
                   f"as `{result['next']}` does")
    else:
        click.echo(f"next: {result['next']}")


def _run(dep, target, prep, accept_new_host_keys: bool, spread_dir: str | None, receivers: list) -> dict:
    from ascend_run.cli.common import connected, err_console
    from ascend_run.cli.transfer import TransferProgress
    from ascend_run.steps.spread import spread_from_node

    console = err_console()

    def on_line(line: str) -> None:
        if line.strip():
            console.print(f"{target.name}: {line}", style="dim")

    nodes = [target, *receivers] if spread_dir else [target]  # spreading: node 0 and the nodes it copies to
    with connected(dep, accept_new_host_keys, nodes=nodes) as cluster:
        result = dataprep.run_prepare(cluster.transport(target), dep, target, prep, on_line)
        if spread_dir:
            with TransferProgress(console, f"spreading {spread_dir}") as progress:
                result["spread"] = spread_from_node(cluster, spread_dir, on_progress=progress.update,
                                                    on_msg=lambda m: console.print(m))
    return result


commands = [data]
