"""`ascend-run data prepare`: the article's Wikitext-2 -> Megatron BIN step on a node, checked both sides.

Fast tests cover the command line, the mount mapping, the dry run and the index check (on files the
stand-in script writes here). The slow test runs the whole step on a simulated server with the CPU train
image; `examples/cpu-job/wikitext_to_bin.py` stands in for MindFormers' script, which that image lacks.
"""

from __future__ import annotations

import json
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ascend_run.errors import AscendRunError, ConfigError, StepFailed
from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.steps import dataprep
from ascend_run.transport.local import LocalTransport
from tests.conftest_e2e import needs_root_tools, run_cli
from tests.mfconfig_support import R15_PRETRAIN, needs_reference

STANDIN = Path(__file__).resolve().parents[1] / "examples" / "cpu-job" / "wikitext_to_bin.py"
DATASET = "/home/work/dataset"

WIKI = """ 
 = Valkyria Chronicles III = 
 
 Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role playing video game . 
 The game began development in 2010 , carrying over a large portion of the work . 
 
 = = Gameplay = = 
 
 As with previous Valkyira Chronicles games , the game is a tactical role playing game . 
"""  # the real file's lines end in a space, as here
WORDS = sorted({w for line in WIKI.splitlines() if not line.strip().startswith("=") for w in line.split()})
EOS = "<｜end▁of▁sentence｜>"


def tokenizer_json() -> dict:
    """A tokenizers JSON shaped like DeepSeek-V3's: byte-level BPE vocab (Ġ marks a leading space)."""
    vocab = {"<unk>": 0, **{"Ġ" + w: i + 1 for i, w in enumerate(WORDS[:-3])}}  # three words stay unknown
    return {"version": "1.0", "added_tokens": [{"id": len(vocab), "content": EOS, "special": True}],
            "model": {"type": "BPE", "vocab": vocab, "merges": []}}


def write_inputs(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    tokens, tok = directory / "wiki.train.tokens", directory / "tokenizer.json"
    tokens.write_text(WIKI, encoding="utf-8")
    tok.write_text(json.dumps(tokenizer_json(), ensure_ascii=False), encoding="utf-8")
    return tokens, tok


def dep_with(mounts: list, path: str = "job.yaml", nodes: int = 2):
    return deployment_from_data({"name": "dataprep", "profile": "atlas-800t-a2", "image": "train:1",
                                 "nodes": [{"address": f"192.0.2.{10 + i}", "name": f"srv-{i}"}
                                           for i in range(nodes)],
                                 "mounts": mounts}, path)


DATA_MOUNT = {"source": "/data/dataset", "target": DATASET}


# --- the command ----------------------------------------------------------------------------------------

def test_convert_argv_is_the_articles_command_with_workers():
    argv = dataprep.convert_argv("wikitext_to_bin.py", f"{DATASET}/wiki.train.tokens", f"{DATASET}/wiki_4096",
                                 f"{DATASET}/tokenizer.json", 4096, 1)
    assert shlex.join(argv) == ("python3 wikitext_to_bin.py --input /home/work/dataset/wiki.train.tokens "
                                "--output-prefix /home/work/dataset/wiki_4096 --vocab-file "
                                "/home/work/dataset/tokenizer.json --seq-length 4096 --workers 1")


def test_script_is_relative_to_mindformers_unless_absolute():
    assert dataprep.DataPrep().script_path == "/home/work/mindformers/research/deepseek3/wikitext_to_bin.py"
    assert dataprep.DataPrep(script=f"{DATASET}/x.py").script_path == f"{DATASET}/x.py"
    assert dataprep.DataPrep().data_path == f"{DATASET}/wiki_4096_text_document"


def test_docker_argv_runs_in_the_script_dir_with_the_mounts_and_no_npus():
    dep = dep_with([DATA_MOUNT, {"source": "/data/ro", "target": "/ro", "read_only": True}])
    argv = dataprep.prepare_argv(dep, dep.nodes[1], dataprep.DataPrep(image="other:2"))
    assert argv[:4] == ["docker", "run", "--detach", "--name"] and argv[4] == "dataprep-data"
    assert argv[argv.index("--workdir") + 1] == "/home/work/mindformers/research/deepseek3"
    assert argv[argv.index("--hostname") + 1] == "srv-1"
    assert "--mount=type=bind,source=/data/dataset,target=/home/work/dataset" in argv
    assert not any(a.startswith("--device") for a in argv)
    tail = argv[argv.index("other:2"):]
    assert tail[1:3] == ["python3", "/home/work/mindformers/research/deepseek3/wikitext_to_bin.py"]


# --- container paths -> server paths ----------------------------------------------------------------------

def test_paths_map_through_the_longest_mount():
    dep = dep_with([DATA_MOUNT, {"source": "/nvme/out", "target": f"{DATASET}/out"}])
    prep = dataprep.DataPrep(output_prefix=f"{DATASET}/out/wiki_512", script=f"{DATASET}/tools/conv.py")
    paths = dataprep.server_paths(dep, prep)
    assert paths.input == "/data/dataset/wiki.train.tokens"
    assert paths.vocab_file == "/data/dataset/tokenizer.json"
    assert paths.bin == "/nvme/out/wiki_512_text_document.bin"
    assert paths.idx == "/nvme/out/wiki_512_text_document.idx"
    assert paths.script == "/data/dataset/tools/conv.py"
    assert dataprep.server_paths(dep, dataprep.DataPrep()).script is None  # in the image


@pytest.mark.parametrize("option, field, value", [
    ("--input", "input", "/tmp/wiki.train.tokens"),
    ("--vocab-file", "vocab_file", "/root/tokenizer.json"),
    ("--output-prefix", "output_prefix", "/home/work/wiki_4096"),
])
def test_a_path_under_no_mount_is_refused_with_the_mount_to_add(option, field, value):
    dep = dep_with([DATA_MOUNT])
    with pytest.raises(ConfigError) as err:
        dataprep.server_paths(dep, dataprep.DataPrep(**{field: value}))
    text = str(err.value)
    assert option in text and value in text and "job.yaml" in text and "mounts" in text
    assert "{source: /data/dataset, target: /home/work/dataset}" in err.value.fix


def test_no_mounts_at_all_and_read_only_output_are_refused():
    with pytest.raises(ConfigError, match="there are none"):
        dataprep.server_paths(dep_with([]), dataprep.DataPrep())
    ro = dep_with([{**DATA_MOUNT, "read_only": True}])
    with pytest.raises(ConfigError, match="read-only mount"):
        dataprep.server_paths(ro, dataprep.DataPrep())
    with pytest.raises(ConfigError, match="absolute"):
        dataprep.server_paths(dep_with([DATA_MOUNT]), dataprep.DataPrep(input="wiki.train.tokens"))


# --- the command line, dry run --------------------------------------------------------------------------

def write_job(tmp_path: Path, mounts: list) -> Path:
    job = tmp_path / "job.yaml"
    with job.open("w") as fh:
        YAML().dump({"name": "dataprep", "profile": "atlas-800t-a2", "image": "train:1",
                     "nodes": [{"address": "192.0.2.10", "name": "srv-0"},
                               {"address": "192.0.2.11", "name": "srv-1"}],
                     "mounts": mounts}, fh)
    return job


def test_dry_run_prints_the_docker_run_on_the_node_and_the_next_step(tmp_path):
    job = write_job(tmp_path, [DATA_MOUNT])
    result = run_cli("data", "prepare", "-f", str(job), "--dry-run", "--node", "srv-1", "--seq-length", "512",
                     "--output-prefix", f"{DATASET}/wiki_512", timeout=60)  # 192.0.2.x is unroutable: no SSH
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# on srv-1 (root@192.0.2.11):"
    assert shlex.split(lines[1])[-2:] == ["/data/dataset/wiki.train.tokens", "/data/dataset/tokenizer.json"]
    assert lines[2] == "mkdir -p /data/dataset"
    argv = shlex.split(lines[4])
    assert argv[:5] == ["docker", "run", "--detach", "--name", "dataprep-data"]
    assert argv[-10:] == ["--input", f"{DATASET}/wiki.train.tokens", "--output-prefix", f"{DATASET}/wiki_512",
                          "--vocab-file", f"{DATASET}/tokenizer.json", "--seq-length", "512",
                          "--workers", "1"]
    assert "train:1" in argv
    assert lines[5:8] == ["docker logs --follow dataprep-data", "docker wait dataprep-data",
                          "docker rm -f dataprep-data"]
    assert ("# next: ascend-run config derive pretrain_deepseek3_671b.yaml --preset article-1b --data-path "
            f"{DATASET}/wiki_512_text_document -f {job} --out pretrain_deepseek3_1b.yaml") == lines[-1]


def test_dry_run_with_an_unmounted_output_exits_2_and_says_which_mount(tmp_path):
    job = write_job(tmp_path, [])
    result = run_cli("data", "prepare", "-f", str(job), "--dry-run", timeout=60)
    assert result.returncode == 2
    assert ("--input /home/work/dataset/wiki.train.tokens is not under any of the deployment's mounts"
            in result.stderr)
    assert "mounts: [{source: /data/dataset, target: /home/work/dataset}]" in result.stderr
    assert result.stdout == ""


def test_derive_needs_its_output_file(tmp_path):
    job = write_job(tmp_path, [DATA_MOUNT])
    base = tmp_path / "base.yaml"
    base.write_text("{}\n")
    result = run_cli("data", "prepare", "-f", str(job), "--derive", str(base), "--dry-run", timeout=60)
    assert result.returncode == 2 and "--derive BASE and --out FILE go together" in result.stderr


# --- the stand-in script and the output check ------------------------------------------------------------

def run_standin(directory: Path, seq_length: int, *flags: str) -> subprocess.CompletedProcess:
    tokens, tok = write_inputs(directory)
    return subprocess.run([sys.executable, str(STANDIN), "--input", str(tokens), "--output-prefix",
                           str(directory / "out" / "wiki"), "--vocab-file", str(tok), "--seq-length",
                           str(seq_length), *flags], check=False, capture_output=True, text=True, timeout=60)


def test_standin_writes_a_megatron_pair_and_accepts_the_articles_worker_flag(tmp_path):
    result = run_standin(tmp_path, 8, "--worker", "1")  # the article's spelling: an argparse prefix
    assert result.returncode == 0, result.stderr
    idx = (tmp_path / "out" / "wiki_text_document.idx").read_bytes()
    data = (tmp_path / "out" / "wiki_text_document.bin").read_bytes()
    header = dataprep.parse_index_header(idx)
    # 3 paragraphs: 15 + 16 + 16 words, each + end-of-document = 50 tokens -> 5 sequences of 9 (5 left)
    assert (header.version, header.dtype, header.sequences, header.documents) == (1, "int32", 5, 5)
    assert len(idx) == header.expected_idx_size() and len(data) == 5 * 9 * 4
    n = header.sequences
    sizes = struct.unpack_from(f"<{n}i", idx, 34)
    pointers = struct.unpack_from(f"<{n}q", idx, 34 + 4 * n)
    doc_idx = struct.unpack_from(f"<{n + 1}q", idx, 34 + 12 * n)
    assert sizes == (9,) * 5 and pointers == tuple(range(0, 5 * 36, 36)) and doc_idx == tuple(range(6))
    vocab = tokenizer_json()["model"]["vocab"]
    tokens = struct.unpack(f"<{len(data) // 4}i", data)
    assert tokens[:3] == (vocab["ĠSenjō"], vocab["Ġno"], vocab["ĠValkyria"])
    assert tokens[15] == len(vocab)  # the end-of-sentence id after the first paragraph
    assert 0 in tokens  # the unknown words


def test_check_outputs_reads_the_header_and_refuses_bad_files(tmp_path):
    assert run_standin(tmp_path, 8, "--workers", "1").returncode == 0
    dep = dep_with([{"source": str(tmp_path), "target": DATASET}])
    prep = dataprep.DataPrep(output_prefix=f"{DATASET}/out/wiki", seq_length=8)
    paths = dataprep.server_paths(dep, prep)
    t = LocalTransport("srv-0")
    found = dataprep.check_outputs(t, dep.nodes[0], prep, paths)
    assert found == {"sequences": 5, "documents": 5, "dtype": "int32", "tokens": 45, "bin_bytes": 180,
                     "idx_bytes": 34 + 5 * 12 + 6 * 8}

    idx = Path(paths.idx)
    idx.write_bytes(idx.read_bytes()[:-8])  # truncated
    with pytest.raises(StepFailed, match="header says"):
        dataprep.check_outputs(t, dep.nodes[0], prep, paths)
    idx.write_bytes(b"TNTIDX\x00\x00" + bytes(40))  # the old non-mmap format
    with pytest.raises(StepFailed, match="not a Megatron index: starts with"):
        dataprep.check_outputs(t, dep.nodes[0], prep, paths)
    idx.unlink()
    with pytest.raises(StepFailed, match=r"srv-0: the conversion ended without writing .*_document.idx"):
        dataprep.check_outputs(t, dep.nodes[0], prep, paths)


def test_a_short_input_makes_no_sequences_and_that_is_an_error(tmp_path):
    assert run_standin(tmp_path, 4096, "--workers", "1").returncode == 0
    dep = dep_with([{"source": str(tmp_path), "target": DATASET}])
    prep = dataprep.DataPrep(output_prefix=f"{DATASET}/out/wiki")
    with pytest.raises(StepFailed, match="no sequences"):
        dataprep.check_outputs(LocalTransport("srv-0"), dep.nodes[0], prep, dataprep.server_paths(dep, prep))


def test_parse_index_header_errors():
    good = struct.pack("<9sQBQQ", dataprep.IDX_MAGIC, 1, 8, 3, 4)
    assert dataprep.parse_index_header(good).dtype == "uint16"
    assert dataprep.parse_od(" 4d 4d 49\n 44\n") == b"MMID"
    for bad, why in ((good[:20], "only 20 bytes"),
                     (struct.pack("<9sQBQQ", dataprep.IDX_MAGIC, 2, 4, 1, 2), "version 2"),
                     (struct.pack("<9sQBQQ", dataprep.IDX_MAGIC, 1, 9, 1, 2), "dtype code 9")):
        with pytest.raises(ValueError, match=why):
            dataprep.parse_index_header(bad)


def test_missing_input_names_node_paths_and_downloads_and_runs_nothing(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    dep = dep_with([{"source": str(tmp_path), "target": DATASET}])
    started = []

    class NoDocker(LocalTransport):
        def stream(self, argv, on_line, **kw):
            started.append(argv)
            return 0

    with pytest.raises(AscendRunError) as err:
        dataprep.run_prepare(NoDocker("srv-0"), dep, dep.nodes[0], dataprep.DataPrep(), print)
    text = str(err.value)
    assert (f"srv-0: {tmp_path}/wiki.train.tokens not found (the container's {DATASET}/wiki.train.tokens"
            in text)
    assert "tokenizer.json not found" not in text
    assert dataprep.DATASET_URL in err.value.fix and dataprep.TOKENIZER_URL not in err.value.fix
    assert not started and not (tmp_path / "out").exists()


@needs_reference
def test_derive_in_process_sets_the_data_path(tmp_path):
    dep1 = dep_with([DATA_MOUNT], nodes=1)  # the article's 1B layout is for 8 NPUs
    out = tmp_path / "pretrain_deepseek3_1b.yaml"
    result = dataprep.derive(dep1, dataprep.DataPrep(), str(R15_PRETRAIN), str(out))
    assert Path(result.written) == out
    assert f"{DATASET}/wiki_4096_text_document" in out.read_text()


# --- on a simulated server -----------------------------------------------------------------------------

def node_docker(cluster, node, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "-H", f"unix://{node.layout.docker_socket}", *args], check=False,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_prepare_on_a_simulated_server(supervisor_cluster, cpu_train_image, tmp_path):
    """On two servers of the supervisor tests' cluster (the train image is on them already)."""
    needs_root_tools()
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.transport.fanout import close_all, connect_all
    from tests.conftest_sim import ssh

    cluster, _ = supervisor_cluster
    node, other = cluster.nodes()[:2]
    job = cluster.dir / "data-job.yaml"
    with job.open("w") as fh:
        # 4 NPUs a server: the article's 1B config (--derive) is laid out for 8 NPUs in all
        nodes = [{**n, "npus": [0, 1, 2, 3]} for n in YAML().load(cluster.deployment_file)["nodes"][:2]]
        YAML().dump({"extends": "cluster.yaml", "name": "dataprep", "image": cpu_train_image, "nodes": nodes,
                     "spares": [],
                     "mounts": [{"source": "/data/dataset", "target": DATASET}]}, fh)
    ssh(cluster, node, "mkdir -p /data/dataset")
    local = tmp_path / "inputs"
    tokens, tok = write_inputs(local)
    args = ["data", "prepare", "-f", str(job), "--script", f"{DATASET}/wikitext_to_bin.py",
            "--seq-length", "8"]

    # nothing on the node yet but the script: refused before any container starts
    transports = connect_all(load_deployment(job))
    try:
        transports[node.name].put(STANDIN, "/data/dataset/wikitext_to_bin.py")
        missing = run_cli(*args)
        assert missing.returncode == 1, missing.stderr
        assert f"{node.name}: /data/dataset/wiki.train.tokens not found" in missing.stderr
        assert f"{node.name}: /data/dataset/tokenizer.json not found" in missing.stderr
        assert "wikitext-2-v1.zip" in missing.stderr and "nothing was run" in missing.stderr
        assert node_docker(cluster, node, "ps", "-aq").stdout.strip() == ""
        transports[node.name].put(tokens, "/data/dataset/wiki.train.tokens")
        transports[node.name].put(tok, "/data/dataset/tokenizer.json")
    finally:
        close_all(transports)

    derive = []
    if R15_PRETRAIN.exists():
        derive = ["--derive", str(R15_PRETRAIN), "--out", str(tmp_path / "pretrain_deepseek3_1b.yaml")]
    done = run_cli(*args, *derive, "--spread")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 paragraphs, 50 tokens" in done.stderr  # the script's own output, streamed
    assert (f"{node.name}: /data/dataset/wiki_4096_text_document.bin (180 bytes) and .idx: 5 sequences of 9 "
            "tokens, 5 documents, int32") in done.stdout
    assert f"data_path in the container: {DATASET}/wiki_4096_text_document" in done.stdout
    assert (f"ascend-run config derive {derive[1] if derive else 'pretrain_deepseek3_671b.yaml'} --preset "
            f"article-1b --data-path {DATASET}/wiki_4096_text_document -f {job} --out") in done.stdout
    if derive:
        assert f"{DATASET}/wiki_4096_text_document" in Path(derive[3]).read_text()
    magic = ssh(cluster, node, "head -c 9 /data/dataset/wiki_4096_text_document.idx | od -An -c").stdout
    assert magic.split() == ["M", "M", "I", "D", "I", "D", "X", "\\0", "\\0"]
    assert ssh(cluster, node, "stat -c %s /data/dataset/wiki_4096_text_document.bin").stdout.strip() == "180"
    assert node_docker(cluster, node, "ps", "-a", "--format", "{{.Names}}").stdout.strip() == ""
    # --spread: node 1 gets the same dataset (and the inputs beside it), checked by sha256
    sums = "cd /data/dataset && sha256sum wiki_4096_text_document.bin wiki_4096_text_document.idx"
    assert ssh(cluster, other, sums).stdout == ssh(cluster, node, sums).stdout != ""
    assert f"{other.name}: copied 5 of 5 files, sha256 verified" in done.stderr
