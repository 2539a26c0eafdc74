"""The newest checkpoint every rank has, from fixture directories in MindFormers' layout.

Each case builds `<output_dir>/checkpoint/rank_<r>/…` on disk and reads it with the same listing command the
supervisor runs on the servers (through the local transport), then chooses.
"""

from __future__ import annotations

import json
from pathlib import Path

from ascend_run.supervise.checkpoints import RankDir, choose, merge_listings, parse_listing, read_listing
from ascend_run.transport.local import LocalTransport

SIZE = 1000


def make(root: Path, ranks: dict[int, dict[int, int]], meta: dict[int, int | str | None] | None = None) -> Path:
    """{rank: {step: size}}; meta: {rank: last step (default: the newest), a file name it names, or None: no meta}."""
    meta = meta or {}
    for rank, steps in ranks.items():
        directory = root / "checkpoint" / f"rank_{rank}"
        directory.mkdir(parents=True)
        for step, size in steps.items():
            (directory / f"ds3_rank_{rank}-1_{step}.ckpt").write_bytes(b"x" * size)
        recorded = meta.get(rank, max(steps) if steps else None)
        if recorded is None:
            continue
        name = recorded if isinstance(recorded, str) else f"ds3_rank_{rank}-1_{recorded}.ckpt"
        step = int(name.rsplit("_", 1)[1].split(".")[0])
        (directory / "meta.json").write_text(json.dumps({"last_epoch": 1, "last_step": step, "last_ckpt_file": name}))
    return root / "checkpoint"


def chosen(root: Path, ranks: int = 3):
    listing = read_listing(LocalTransport(), str(root))
    return choose(listing, list(range(ranks)))


def test_every_rank_complete_takes_the_newest(tmp_path):
    root = make(tmp_path, {r: {5: SIZE, 10: SIZE, 15: SIZE} for r in range(3)})
    choice, notes = chosen(root)
    assert (choice.step, choice.name, notes) == (15, "ds3_rank_0-1_15.ckpt", [])
    assert choice.names == {0: "ds3_rank_0-1_15.ckpt", 1: "ds3_rank_1-1_15.ckpt", 2: "ds3_rank_2-1_15.ckpt"}


def test_a_missing_rank_directory_disqualifies_every_step(tmp_path):
    root = make(tmp_path, {0: {5: SIZE, 10: SIZE}, 2: {5: SIZE, 10: SIZE}})
    choice, notes = chosen(root)
    assert choice is None and "rank 1: no rank_1 directory" in notes


def test_one_rank_one_checkpoint_behind(tmp_path):
    root = make(tmp_path, {0: {5: SIZE, 10: SIZE}, 1: {5: SIZE}, 2: {5: SIZE, 10: SIZE}})
    choice, notes = chosen(root)
    assert choice.step == 5
    assert notes == ["step 10 passed over: not whole on rank(s) 1"]


def test_a_truncated_file(tmp_path):
    root = make(tmp_path, {0: {5: SIZE, 10: SIZE}, 1: {5: SIZE, 10: SIZE // 3}, 2: {5: SIZE, 10: SIZE}},
                meta={1: 5})  # the crash came before meta.json was updated
    choice, notes = chosen(root)
    assert choice.step == 5
    assert "rank 1: ds3_rank_1-1_10.ckpt is truncated (333 bytes, its other checkpoints 1000)" in notes


def test_an_empty_file(tmp_path):
    root = make(tmp_path, {0: {5: SIZE, 10: SIZE}, 1: {5: SIZE, 10: SIZE}, 2: {5: SIZE, 10: 0}})
    choice, notes = chosen(root)
    assert choice.step == 5 and "rank 2: ds3_rank_2-1_10.ckpt is empty" in notes


def test_meta_json_naming_a_missing_file(tmp_path):
    root = make(tmp_path, {0: {5: SIZE, 10: SIZE}, 1: {5: SIZE}, 2: {5: SIZE, 10: SIZE}},
                meta={1: "ds3_rank_1-1_10.ckpt"})
    choice, notes = chosen(root)
    assert choice.step == 5 and "rank 1: meta.json names ds3_rank_1-1_10.ckpt, which is missing" in notes


def test_a_file_newer_than_meta_json_is_not_trusted(tmp_path):
    root = make(tmp_path, {r: {5: SIZE, 10: SIZE} for r in range(3)}, meta={2: 5})
    choice, notes = chosen(root)
    assert choice.step == 5
    assert "rank 2: ds3_rank_2-1_10.ckpt is newer than meta.json records (step 5)" in notes


def test_steps_that_are_not_contiguous(tmp_path):
    # keep_checkpoint_max removed some, a restart changed the interval: the newest common one still wins
    root = make(tmp_path, {0: {3: SIZE, 10: SIZE, 40: SIZE}, 1: {10: SIZE, 25: SIZE, 40: SIZE},
                           2: {1: SIZE, 10: SIZE, 40: SIZE}})
    choice, _ = chosen(root)
    assert choice.step == 40
    root2 = make(tmp_path / "b", {0: {3: SIZE, 10: SIZE, 40: SIZE}, 1: {10: SIZE, 25: SIZE}, 2: {10: SIZE, 40: SIZE}})
    choice, notes = chosen(root2)
    assert choice.step == 10 and notes[0] == "step 40 passed over: not whole on rank(s) 1"


def test_no_meta_json_falls_back_to_the_files(tmp_path):
    root = make(tmp_path, {r: {5: SIZE, 10: SIZE} for r in range(3)}, meta={0: None, 1: None, 2: None})
    assert chosen(root)[0].step == 10


def test_no_checkpoint_directory_at_all(tmp_path):
    choice, notes = chosen(tmp_path / "nothing")
    assert choice is None and notes[0] == "rank 0: no rank_0 directory"


def test_safetensors_and_epochs_order_by_epoch_then_step():
    listing = parse_listing("@@dir rank_0\n10 m_rank_0-1_20.safetensors\n10 m_rank_0-2_5.safetensors\n"
                            "@@dir rank_1\n10 m_rank_1-1_20.safetensors\n10 m_rank_1-2_5.safetensors\n")
    choice, _ = choose(listing, [0, 1])
    assert (choice.epoch, choice.step, choice.name) == (2, 5, "m_rank_0-2_5.safetensors")


def test_each_rank_is_read_where_it_ran_unless_that_server_has_none():
    own = RankDir({"a_rank_1-1_10.ckpt": 5})
    stale = RankDir({"a_rank_1-1_5.ckpt": 5})
    merged = merge_listings({"n0": {0: RankDir(), 1: stale}, "n1": {1: own}, "n2": {}},
                            host_of={0: "n0", 1: "n1", 2: "n2"})
    assert merged[1] is own and 2 not in merged
