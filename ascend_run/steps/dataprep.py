"""`ascend-run data prepare`: the article's Wikitext-2 -> Megatron BIN conversion, run on one node.

The article does this by hand inside the train container (NOTES.md section 3 step 1):

    cd /home/work/mindformers/research/deepseek3
    python wikitext_to_bin.py --input /home/work/dataset/wiki.train.tokens \\
        --output-prefix /home/work/dataset/wiki_4096 --vocab-file /home/work/dataset/tokenizer.json \\
        --seq-length 4096 --workers 1

Here it runs as a one-off container of the image on one node (`launch.task`). Because the container is
removed when it ends, every path it reads or writes must be under one of the deployment's bind mounts, or the
result is lost with the container: that is checked before anything runs, and so is the presence of the
input files on the server (a missing download is the usual mistake). Afterwards the `.bin`/`.idx` pair is
looked at on the server (the index header is read, not trusted) and the next step, `config derive` with
the dataset prefix, is printed or run.
"""

from __future__ import annotations

import posixpath
import shlex
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ascend_run.errors import AscendRunError, ConfigError, StepFailed
from ascend_run.inputs import text
from ascend_run.inputs.deployment import Deployment, Node, check_image, check_option
from ascend_run.mfconfig.paths import to_host
from ascend_run.render.docker_run import task_run_argv
from ascend_run.steps.task import run_task, task_commands
from ascend_run.transport.base import Transport

DEFAULT_INPUT = "/home/work/dataset/wiki.train.tokens"
DEFAULT_VOCAB = "/home/work/dataset/tokenizer.json"
DEFAULT_PREFIX = "/home/work/dataset/wiki_4096"
DEFAULT_SCRIPT = "research/deepseek3/wikitext_to_bin.py"
DOCUMENT_SUFFIX = "_text_document"  # what the script appends: json key "text", "document" level

DATASET_URL = ("https://ascend-repo-modelzoo.obs.cn-east-2.myhuaweicloud.com/MindFormers/dataset/wikitext-2/"
               "wikitext-2-v1.zip")
TOKENIZER_URL = "https://huggingface.co/deepseek-ai/DeepSeek-V3/resolve/main/tokenizer.json?download=true"
MOUNT_EXAMPLE = "mounts: [{source: /data/dataset, target: /home/work/dataset}]"

# The article's file names for the next step (config derive runs on this machine, on a local copy).
BASE_CONFIG = "pretrain_deepseek3_671b.yaml"
DERIVED_CONFIG = "pretrain_deepseek3_1b.yaml"

# Megatron MMapIndexedDataset index: magic, u64 version, u8 dtype code, u64 sequences, u64 documents + 1.
IDX_MAGIC = b"MMIDIDX\x00\x00"
IDX_HEADER = struct.Struct("<9sQBQQ")
DTYPES = {1: ("uint8", 1), 2: ("int8", 1), 3: ("int16", 2), 4: ("int32", 4), 5: ("int64", 8),
          6: ("float64", 8), 7: ("float32", 4), 8: ("uint16", 2)}


def convert_argv(script: str, input: str, output_prefix: str, vocab_file: str, seq_length: int,
                 workers: int) -> list[str]:
    """The conversion command in the container. `--workers` is the script's own spelling (the article's
    `--worker` only works as an argparse prefix)."""
    return ["python3", script, "--input", input, "--output-prefix", output_prefix, "--vocab-file", vocab_file,
            "--seq-length", str(seq_length), "--workers", str(workers)]


@dataclass(frozen=True)
class DataPrep:
    """One conversion, all paths in the container (absolute)."""

    input: str = DEFAULT_INPUT
    vocab_file: str = DEFAULT_VOCAB
    output_prefix: str = DEFAULT_PREFIX
    seq_length: int = 4096
    workers: int = 1
    script: str = DEFAULT_SCRIPT   # relative: to the MindFormers checkout in the image
    mindformers_dir: str = "/home/work/mindformers"
    image: str | None = None       # None: the deployment's image

    @property
    def script_path(self) -> str:
        return posixpath.normpath(posixpath.join(self.mindformers_dir, self.script))

    @property
    def data_path(self) -> str:
        """The Megatron prefix the training config names (`data_path: ['1', PREFIX]`)."""
        return self.output_prefix + DOCUMENT_SUFFIX

    def argv(self) -> list[str]:
        return convert_argv(self.script_path, self.input, self.output_prefix, self.vocab_file,
                            self.seq_length, self.workers)


@dataclass(frozen=True)
class ServerPaths:
    """Where the container's paths are on the node's disk. `script` is None when it comes from the image."""

    input: str
    vocab_file: str
    output_prefix: str
    script: str | None

    @property
    def bin(self) -> str:
        return self.output_prefix + DOCUMENT_SUFFIX + ".bin"

    @property
    def idx(self) -> str:
        return self.output_prefix + DOCUMENT_SUFFIX + ".idx"


def check_values(prep: DataPrep) -> None:
    """The command line's values, checked like the deployment file's (`inputs.text`): one line each (they
    land in a `docker run` and in the dry run's comments), the script never an option, the image a reference."""
    for option, value in (("--input", prep.input), ("--vocab-file", prep.vocab_file),
                          ("--output-prefix", prep.output_prefix), ("--script", prep.script)):
        check_option(option, value, text.one_line)
    check_option("--script", prep.script, lambda v: text.not_option(v, "python3"))
    check_option("--image", prep.image, check_image)


def server_paths(dep: Deployment, prep: DataPrep) -> ServerPaths:
    """Map each container path through the deployment's mounts; a path outside them is a ConfigError,
    because the container is removed: an unmounted input is not there and an unmounted output is lost."""
    check_values(prep)
    mounts = dep.mounts
    where = f"{dep.path}" if getattr(dep, "path", None) else None
    found: dict[str, str] = {}
    for option, path in (("--input", prep.input), ("--vocab-file", prep.vocab_file),
                         ("--output-prefix", prep.output_prefix)):
        if not path.startswith("/"):
            raise ConfigError(f"{option} {path!r} must be an absolute path in the container",
                              fix=f"e.g. {option} /home/work/dataset/…")
        host = to_host(path, mounts)
        if host is None:
            why = "the output would be lost with the container" if option == "--output-prefix" else \
                "the container would not see the file"
            raise ConfigError(f"{option} {path} is not under any of the deployment's mounts ({why})",
                              file=where, key="mounts",
                              fix=f"mount the server directory that holds it, e.g. {MOUNT_EXAMPLE}, or pass "
                                  f"{option} under an existing mount target "
                                  f"({', '.join(m.target for m in mounts) or 'there are none'})")
        found[option] = host
    holding = [m for m in mounts if to_host(prep.output_prefix, [m]) is not None]
    best = max(holding, key=lambda m: len(m.target))
    if best.read_only:
        raise ConfigError(f"--output-prefix {prep.output_prefix} is on the read-only mount {best.source} -> "
                          f"{best.target}", file=where, key="mounts",
                          fix="write the output under a writable mount, or drop read_only from that mount")
    return ServerPaths(found["--input"], found["--vocab-file"], found["--output-prefix"],
                       to_host(prep.script_path, mounts))


def prepare_argv(dep: Deployment, node: Node, prep: DataPrep) -> list[str]:
    """The `docker run` that converts on `node`, in the script's directory as the article `cd`s there.
    Root in the container, as the article's train container runs: the dataset directory is root's."""
    return task_run_argv(dep, node, container_name(dep), prep.argv(), image=prep.image,
                         workdir=posixpath.dirname(prep.script_path), user="0")


def container_name(dep: Deployment) -> str:
    return f"{dep.container_name}-data"


def missing_files_argv(paths: Sequence[str]) -> list[str]:
    """Prints the paths that are not regular files on the node, in one round trip (paths passed as argv)."""
    script = 'for p in "$@"; do [ -f "$p" ] || printf "%s\\n" "$p"; done'
    return ["sh", "-c", script, "ascend-run-data", *paths]


def missing_files(t: Transport, paths: Sequence[str]) -> list[str]:
    result = t.run(missing_files_argv(paths), timeout=60)
    if result.rc != 0:
        raise AscendRunError(f"{t.host}: could not look for the input files: {result.stderr.strip()[:200]}")
    return [line for line in result.stdout.splitlines() if line]


def input_paths(prep: DataPrep, paths: ServerPaths) -> dict[str, tuple[str, str]]:
    """{server path: (option, container path)} of what must exist before the conversion starts."""
    wanted = {paths.input: ("--input", prep.input), paths.vocab_file: ("--vocab-file", prep.vocab_file)}
    if paths.script:
        wanted[paths.script] = ("--script", prep.script_path)
    return wanted


def check_inputs(t: Transport, node: Node, prep: DataPrep, paths: ServerPaths) -> None:
    """Input, tokenizer (and a mounted script) must be on the node before a container is started."""
    wanted = input_paths(prep, paths)
    missing = missing_files(t, list(wanted))
    if not missing:
        return
    lines = [f"{node.name}: {server} not found (the container's {wanted[server][1]}, {wanted[server][0]})"
             for server in missing]
    fixes = []
    if paths.input in missing:
        fixes.append(f"download {DATASET_URL}, unzip it and copy wikitext-2/wiki.train.tokens to "
                     f"{node.name}:{paths.input}")
    if paths.vocab_file in missing:
        fixes.append(f"download {TOKENIZER_URL} to {node.name}:{paths.vocab_file}")
    if paths.script and paths.script in missing:
        fixes.append(f"copy the conversion script to {node.name}:{paths.script}, or leave --script at "
                     f"{DEFAULT_SCRIPT} (in the image)")
    raise AscendRunError("\n".join(lines) + "\nnothing was run", fix="; ".join(fixes))


@dataclass(frozen=True)
class IndexHeader:
    version: int
    dtype: str
    itemsize: int
    sequences: int
    documents: int

    def expected_idx_size(self) -> int:
        """Header, int32 sizes, int64 pointers, int64 document index (documents + 1 entries)."""
        return IDX_HEADER.size + self.sequences * (4 + 8) + (self.documents + 1) * 8


def parse_index_header(data: bytes) -> IndexHeader:
    """The first 34 bytes of a Megatron `.idx`; ValueError saying what is wrong otherwise."""
    if len(data) < IDX_HEADER.size:
        raise ValueError(f"only {len(data)} bytes, a Megatron index header has {IDX_HEADER.size}")
    magic, version, code, sequences, doc_entries = IDX_HEADER.unpack(data[:IDX_HEADER.size])
    if magic != IDX_MAGIC:
        raise ValueError(f"starts with {magic!r}, not the Megatron magic {IDX_MAGIC!r}")
    if version != 1:
        raise ValueError(f"index version {version}, expected 1")
    if code not in DTYPES:
        raise ValueError(f"unknown dtype code {code}")
    if doc_entries < 1:
        raise ValueError("empty document index")
    name, size = DTYPES[code]
    return IndexHeader(version, name, size, sequences, doc_entries - 1)


def parse_od(text: str) -> bytes:
    """`od -An -tx1` output back to bytes."""
    return bytes(int(tok, 16) for tok in text.split())


def output_check_argvs(paths: ServerPaths) -> tuple[list[str], list[str]]:
    """The index header's bytes, then both files' sizes."""
    return (["od", "-An", "-tx1", "-v", "-N", str(IDX_HEADER.size), paths.idx],
            ["stat", "-c", "%s", paths.bin, paths.idx])


def check_outputs(t: Transport, node: Node, prep: DataPrep, paths: ServerPaths) -> dict[str, Any]:
    """The .bin/.idx pair on the node: present, index header valid, sizes consistent. StepFailed otherwise."""
    missing = missing_files(t, [paths.bin, paths.idx])
    if missing:
        raise StepFailed(f"{node.name}: the conversion ended without writing {', '.join(missing)}",
                         fix=f"check the script's output above; it should write {prep.data_path}.bin "
                             "and .idx")
    head_argv, sizes_argv = output_check_argvs(paths)
    head = t.run(head_argv, timeout=60)
    sizes = t.run(sizes_argv, timeout=60)
    if head.rc != 0 or sizes.rc != 0:
        why = (head.stderr or sizes.stderr).strip()[:200]
        raise StepFailed(f"{node.name}: could not read {paths.idx}: {why}")
    try:
        header = parse_index_header(parse_od(head.stdout))
    except ValueError as exc:
        raise StepFailed(f"{node.name}: {paths.idx} is not a Megatron index: {exc}",
                         fix="run the conversion again; MindFormers reads only MMIDIDX version 1 files"
                         ) from None
    bin_bytes, idx_bytes = (int(v) for v in sizes.stdout.split())
    problems = []
    if idx_bytes != header.expected_idx_size():
        problems.append(f"{paths.idx} has {idx_bytes} bytes, its header says {header.expected_idx_size()}")
    if header.sequences == 0 or bin_bytes == 0:
        problems.append(f"no sequences (is the input shorter than --seq-length {prep.seq_length} + 1 "
                        "tokens?)")
    elif bin_bytes % header.itemsize:
        problems.append(f"{paths.bin} has {bin_bytes} bytes, not a multiple of {header.dtype}")
    if problems:
        raise StepFailed(f"{node.name}: bad conversion output: " + "; ".join(problems),
                         fix="run the conversion again (a full disk truncates the files)")
    return {"sequences": header.sequences, "documents": header.documents, "dtype": header.dtype,
            "tokens": bin_bytes // header.itemsize, "bin_bytes": bin_bytes, "idx_bytes": idx_bytes}


def derive_argv(deployment_file: str, prep: DataPrep, base: str = BASE_CONFIG,
                out: str = DERIVED_CONFIG) -> list[str]:
    """The next step: the article's 1B config with this dataset."""
    return ["ascend-run", "config", "derive", base, "--preset", "article-1b", "--data-path", prep.data_path,
            "-f", deployment_file, "--out", out]


def derive(dep: Deployment, prep: DataPrep, base: str, out: str):
    """`config derive BASE --preset article-1b --data-path PREFIX -f FILE --out OUT`, in process."""
    from ascend_run.mfconfig import JobContext, derive_config

    return derive_config(base, preset="article-1b", preset_options={"data_path": prep.data_path}, output=out,
                         job=JobContext.of(dep))


def mkdir_argv(paths: ServerPaths) -> list[str]:
    return ["mkdir", "-p", posixpath.dirname(paths.output_prefix)]


def commands(dep: Deployment, node: Node, prep: DataPrep) -> list[list[str]]:
    """Everything `run_prepare` runs on the node when all goes well, in order (`--dry-run` prints this)."""
    paths = server_paths(dep, prep)
    return [missing_files_argv(list(input_paths(prep, paths))), mkdir_argv(paths),
            *task_commands(container_name(dep), prepare_argv(dep, node, prep)),
            missing_files_argv([paths.bin, paths.idx]), *output_check_argvs(paths)]


def run_prepare(t: Transport, dep: Deployment, node: Node, prep: DataPrep,
                on_line: Callable[[str], None]) -> dict[str, Any]:
    """Check the inputs, convert in a container, check the outputs; returns what was written."""
    paths = server_paths(dep, prep)
    check_inputs(t, node, prep, paths)
    out_dir = posixpath.dirname(paths.output_prefix)
    made = t.run(mkdir_argv(paths), timeout=60)
    if made.rc != 0:
        raise AscendRunError(f"{node.name}: cannot create {out_dir}: {made.stderr.strip()[:200]}",
                             fix="create it, writable by root, or choose another --output-prefix")
    started = time.monotonic()
    rc = run_task(t, container_name(dep), prepare_argv(dep, node, prep), on_line, on_notice=on_line)
    if rc != 0:
        raise StepFailed(f"{node.name}: the conversion exited {rc} (container {container_name(dep)}, "
                         f"image {prep.image or dep.image})",
                         fix=f"see its output above; the command was: {shlex.join(prep.argv())}")
    result = check_outputs(t, node, prep, paths)
    return {"node": node.name, "data_path": prep.data_path,
            "bin": {"container": prep.data_path + ".bin", "server": paths.bin},
            "idx": {"container": prep.data_path + ".idx", "server": paths.idx},
            "seconds": round(time.monotonic() - started, 1), **result}
