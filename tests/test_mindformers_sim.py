"""The real MindFormers 1.9.0 on simulated servers: its trainer, its checkpoints and its own resume.

Two servers, one CPU worker each, data parallel; the job is MindFormers' `Trainer` on the tiny legacy Llama
(examples/mindformers-cpu), launched by the kit from the real-MindFormers CPU image. The dataset, the
checkpoints and MindFormers' resume record are on storage both servers mount (the simulator shares the host's
/srv with every server), named in SHARED_PATHS so MindFormers coordinates the resume step across servers.

1. `data prepare` writes the Megatron dataset with MindFormers' own IndexedDatasetBuilder.
2. A launch that crashes on rank 1 after step 5; the CheckpointMonitor has written steps 2 and 4 and
   meta.json on both ranks. `logs --loss` reads MindFormers' real lines; every rank has the same global_norm.
3. A relaunch with `--load_checkpoint <dir> --resume_training True`: rank 0 picks the step from every rank's
   meta.json, rank 1 (on the other server) reads that choice, and training continues at step 5 with the
   loss and global_norm the crashed run had at step 5, to the last step.
4. A relaunch with `--resume_training <file name>` (what a supervisor that has worked out the step passes):
   every rank loads its own file of that step and continues at step 3.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from ascend_run.sim import mindformers as mf
from ascend_run.sim.demo import cpu_job_dir
from tests.conftest_e2e import needs_root_tools, run_cli

pytestmark = pytest.mark.slow

STANDIN_WRITER = cpu_job_dir() / "wikitext_to_bin.py"  # the demo's converter, found as the kit finds it
WORDS = [f"w{i:03d}" for i in range(400)]  # ids 1..400 in the tokenizer below: all under vocab_size 512
STEPS = 8  # 16 samples / (batch 1 x data parallel 2)


def write_inputs(shared: Path) -> None:
    """wiki.train.tokens (60 paragraphs, ~2,400 tokens), a tokenizers JSON for its words, the converter."""
    paragraphs = [" ".join(WORDS[(p * 7 + i * 13) % len(WORDS)] for i in range(40)) for p in range(60)]
    text = "\n".join(f" = Heading {p} = \n \n {para} \n" for p, para in enumerate(paragraphs))
    (shared / "wiki.train.tokens").write_text(text, encoding="utf-8")
    vocab = {"<unk>": 0, **{"Ġ" + w: i + 1 for i, w in enumerate(WORDS)}}
    tokenizer = {"version": "1.0", "added_tokens": [{"id": len(vocab), "content": "</s>", "special": True}],
                 "model": {"type": "BPE", "vocab": vocab, "merges": []}}
    (shared / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    shutil.copy(STANDIN_WRITER, shared / "wikitext_to_bin.py")


def loss_points(logs: Path, rank: int, crashed: bool = False) -> dict[int, dict]:
    """`logs --loss --rank R` over collected logs: {step: point} with loss and global_norm. A rank that
    crashed anywhere in those logs makes it exit 6 after the points (the crash is the error)."""
    result = run_cli("logs", "--loss", "--from", str(logs), "--rank", str(rank), "--output", "json")
    assert result.returncode == (6 if crashed else 0), result.stderr
    return {p["step"]: p for p in json.loads(result.stdout)["points"]}


def launch_and_collect(job: Path, logs: Path, crashed: bool = False) -> tuple:
    started = time.monotonic()
    result = run_cli("launch", "-f", str(job), timeout=1200)
    print(f"{logs.name}: launch took {time.monotonic() - started:.1f} s")
    collected = run_cli("logs", "-f", str(job), "--collect", "--out", str(logs))
    assert collected.returncode == 0, collected.stderr
    return result, [loss_points(logs, rank, crashed) for rank in (0, 1)]


def assert_same_global_norm(ranks: list[dict[int, dict]]) -> None:
    """Data parallel: both ranks all-reduce the same gradients, so their global_norm agrees at every step."""
    assert ranks[0].keys() == ranks[1].keys()
    for step in ranks[0]:
        assert ranks[0][step]["global_norm"] == ranks[1][step]["global_norm"], step


def test_real_mindformers_checkpoints_crash_and_resume_on_two_servers(sim_cluster, mindformers_image, tmp_path):
    needs_root_tools()
    started = time.monotonic()
    cluster = sim_cluster(nodes=2, image=mindformers_image)
    print(f"2 servers up with the image in {time.monotonic() - started:.1f} s")
    shared = Path(f"/srv/ascend-run-test-{cluster.net.third_octet}/mindformers")
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    try:
        write_inputs(shared)
        crash = {mf.CRASH_STEP_ENV: "5", mf.CRASH_RANK_ENV: "1"}
        job = mf.job_file(cluster.dir, mindformers_image, str(shared), env=crash)

        # 1. the dataset, written by MindFormers' own Megatron writer
        data = run_cli("data", "prepare", "-f", str(job), "--script", f"{mf.SHARED_TARGET}/wikitext_to_bin.py",
                       "--input", f"{mf.SHARED_TARGET}/wiki.train.tokens", "--vocab-file",
                       f"{mf.SHARED_TARGET}/tokenizer.json", "--output-prefix", mf.DATASET_PREFIX,
                       "--seq-length", "64", timeout=600)
        assert data.returncode == 0, data.stdout + data.stderr
        print(f"data prepare done at {time.monotonic() - started:.1f} s")
        assert "with MindFormers' IndexedDatasetBuilder" in data.stderr

        # 2. crash on rank 1 (server 1) after step 5: checkpoints of steps 2 and 4 on the shared storage
        first, ranks = launch_and_collect(job, tmp_path / "crashed", crashed=True)
        assert first.returncode not in (0, 130), first.stdout[-3000:]
        assert "injected crash on rank 1 after step 5" in first.stdout
        assert "cpu shim: Barrier -> AllReduce" in first.stdout
        checkpoints = shared / "output" / "checkpoint"
        for rank in (0, 1):
            meta = json.loads((checkpoints / f"rank_{rank}" / "meta.json").read_text())
            assert meta == {"last_epoch": 1, "last_step": 4, "last_ckpt_file": f"llama_rank_{rank}-1_4.safetensors"}
            assert sorted(p.name for p in (checkpoints / f"rank_{rank}").glob("*.safetensors")) == [
                f"llama_rank_{rank}-1_2.safetensors", f"llama_rank_{rank}-1_4.safetensors"]
        assert sorted(ranks[0]) == [1, 2, 3, 4, 5]
        assert_same_global_norm(ranks)
        crashed = ranks

        # 3. MindFormers' own resume: rank 0 reads every meta.json, rank 1 reads rank 0's choice
        resume = mf.job_file(cluster.dir, mindformers_image, str(shared),
                             command=mf.train_command(load_checkpoint=mf.CHECKPOINT_DIR, resume_training=True))
        second, ranks = launch_and_collect(resume, tmp_path / "resumed")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
        assert sorted(ranks[0]) == list(range(5, STEPS + 1)), "resumed at step 5, after the step-4 checkpoint"
        assert_same_global_norm(ranks)
        for rank in (0, 1):
            assert ranks[rank][5]["loss"] == crashed[rank][5]["loss"], "same weights, optimizer and data position"
            assert ranks[rank][5]["global_norm"] == crashed[rank][5]["global_norm"]
        record = (shared / "output" / "resume_record" / "latest_checkpointed_iteration.txt").read_text()
        assert record.split()[-1] == f"{mf.CHECKPOINT_DIR}/rank_0/llama_rank_0-1_4.safetensors"
        worker_1 = (tmp_path / "resumed" / cluster.node(1).name / "worker_1.log").read_text()
        assert "Get resume checkpoint from" in worker_1 and "llama_rank_1-1_4.safetensors" in worker_1

        # 4. the file name form: every rank loads its own step-2 file and continues at step 3
        named = mf.job_file(cluster.dir, mindformers_image, str(shared), command=mf.train_command(
            load_checkpoint=mf.CHECKPOINT_DIR, resume_training="llama_rank_0-1_2.safetensors"))
        third, ranks = launch_and_collect(named, tmp_path / "named")
        assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-2000:]
        assert sorted(ranks[1]) == list(range(3, STEPS + 1))
        assert ranks[1][3]["loss"] == crashed[1][3]["loss"]
        assert_same_global_norm(ranks)
    finally:
        shutil.rmtree(shared.parent, ignore_errors=True)
