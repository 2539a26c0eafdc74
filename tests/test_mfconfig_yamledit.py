"""Round-trip edits: comments, order, quotes and anchors survive; anchored scalars move with their aliases."""

from __future__ import annotations

import re

import pytest
from ruamel.yaml import YAML

from ascend_run.errors import ConfigError
from ascend_run.mfconfig.yamledit import Document, format_key_path, parse_key_path, parse_value
from tests.mfconfig_support import (
    R15_FINETUNE,
    R15_PREDICT,
    R15_PRETRAIN,
    V21_PREDICT,
    V21_PRETRAIN,
    V21_PYNATIVE,
    needs_reference,
)

SMALL = """\
# parallel config
parallel_config:
  data_parallel: &dp 16   # the anchor
  micro_batch_num: &mbn 32
parallel:
  dataset_strategy: [[*dp, 1], [*dp, 1]]
  name: "quoted"
  other: 'single'
train_dataset: &train_dataset
  data_loader:
    data_path:
      - '1'
      - "./dataset"
train_dataset_task:
  dataset_config: *train_dataset
callbacks:
  - type: TopkBiasBalanceCallback
    micro_batch_num: *mbn
flag: True
"""


def load(text: str = SMALL):
    return YAML(typ="safe", pure=True).load(text)


def test_key_paths_parse_and_format():
    assert parse_key_path("parallel.dataset_strategy[0][1]") == ("parallel", "dataset_strategy", 0, 1)
    assert parse_key_path("train_dataset.data_loader.config.data_path.1")[-1] == 1
    assert format_key_path(("callbacks", 1, "num_layers")) == "callbacks[1].num_layers"
    with pytest.raises(ConfigError):
        parse_key_path("a..[x")


def test_values_are_read_as_yaml():
    assert parse_value("2") == 2 and parse_value("[1, 2]") == [1, 2] and parse_value("'07'") == "07"
    assert parse_value("True") is True and parse_value("null") is None


def test_anchored_scalar_moves_every_alias_and_reports_them():
    doc = Document(SMALL)
    edit = doc.set(("parallel_config", "data_parallel"), 2)
    assert edit.anchor == "dp"
    assert edit.aliases == ["parallel.dataset_strategy[0][0]", "parallel.dataset_strategy[1][0]"]
    text = doc.dump()
    assert re.search(r"data_parallel: &dp 2 +# the anchor", text)
    assert "dataset_strategy: [[*dp, 1], [*dp, 1]]" in text
    assert load(text)["parallel"]["dataset_strategy"] == [[2, 1], [2, 1]]


def test_plain_assignment_is_the_trap_this_module_avoids():
    """What a naive `mapping[key] = value` does with ruamel: the anchor jumps to the alias, old value kept."""
    doc = Document(SMALL)
    doc.data["parallel_config"]["data_parallel"] = 2
    assert load(doc.dump())["parallel"]["dataset_strategy"] == [[16, 1], [16, 1]]


def test_setting_through_an_alias_position_updates_the_anchor():
    doc = Document(SMALL)
    edit = doc.set(("callbacks", 0, "micro_batch_num"), 8)
    assert "parallel_config.micro_batch_num" in edit.aliases
    data = load(doc.dump())
    assert data["parallel_config"]["micro_batch_num"] == 8 == data["callbacks"][0]["micro_batch_num"]
    assert "micro_batch_num: &mbn 8" in doc.dump()


def test_edit_inside_an_anchored_collection_names_the_alias_path():
    doc = Document(SMALL)
    edit = doc.set(("train_dataset", "data_loader", "data_path"), ["1", "/home/work/dataset/wiki"])
    assert edit.aliases == ["train_dataset_task.dataset_config.data_loader.data_path"]
    text = doc.dump()
    assert "dataset_config: *train_dataset" in text
    assert "      - '1'\n      - \"/home/work/dataset/wiki\"" in text     # block style and quotes kept
    assert load(text)["train_dataset_task"]["dataset_config"]["data_loader"]["data_path"][1] == "/home/work/dataset/wiki"


def test_quotes_booleans_and_comments_survive():
    doc = Document(SMALL)
    doc.set(("parallel", "name"), "changed")
    doc.set(("parallel", "other"), "also")
    text = doc.dump()
    assert 'name: "changed"' in text and "other: 'also'" in text
    assert "flag: True" in text and text.startswith("# parallel config\n")


def test_anchored_float_and_bool_keep_their_anchor():
    doc = Document("a: &rate 0.001\nb: &on True\nc: [*rate, *on]\n")
    doc.set(("a",), 0.5)
    doc.set(("b",), False)
    text = doc.dump()
    assert "a: &rate 0.5" in text and "b: &on False" in text and "c: [*rate, *on]" in text
    assert load(text)["c"] == [0.5, False]


def test_unknown_key_is_refused_with_the_closest_names():
    doc = Document(SMALL)
    with pytest.raises(ConfigError) as info:
        doc.set(("parallel_config", "data_paralel"), 2)
    assert "parallel_config.data_paralel" in str(info.value)
    assert "parallel_config.data_parallel" in info.value.fix
    edit = doc.set(("parallel_config", "brand_new"), 3, create=True)
    assert edit.created and "brand_new: 3" in doc.dump()


def test_list_replaced_by_scalar_and_back_keeps_flow_style():
    doc = Document("offset: [1, 1, -1]\nrecompute: [3, 4, 0]\n")
    doc.set(("offset",), 0)
    doc.set(("recompute",), [2, 2])
    assert doc.dump() == "offset: 0\nrecompute: [2, 2]\n"


@needs_reference
@pytest.mark.parametrize("path", [R15_PRETRAIN, R15_FINETUNE, R15_PREDICT, V21_PRETRAIN, V21_PREDICT, V21_PYNATIVE],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_unedited_round_trip_changes_only_whitespace(path):
    """The real files come back byte for byte, except runs of spaces after a colon and a final newline."""
    original = path.read_text()
    dumped = Document.from_path(path).dump()
    def normalize(t):
        return re.sub(r":  +(?=\S)", ": ", t).rstrip("\n")
    assert normalize(dumped) == normalize(original)


def test_merge_keys_follow_the_base_and_overrides_stay_local():
    doc = Document("base: &b\n  x: 1\n  z: 3\nchild:\n  <<: *b\n  y: 2\n  z: 4\n")
    assert doc.set(("base", "x"), 5).aliases == ["child.x"]      # child sees x through the merge
    assert doc.set(("base", "z"), 7).aliases == []               # child overrides z
    doc.set(("child", "x"), 9, create=True)                      # a local override, base untouched
    data = load(doc.dump())
    assert data["base"] == {"x": 5, "z": 7} and data["child"] == {"x": 9, "y": 2, "z": 4}
    assert "<<: *b" in doc.dump()


def test_anchor_inside_a_flow_list():
    doc = Document("sizes: [&n 5000, *n, 0]\n")
    edit = doc.set(("sizes", 1), 6000)
    assert edit.aliases == ["sizes[0]"] and doc.dump() == "sizes: [&n 6000, *n, 0]\n"


def test_added_keys_go_before_the_next_sections_comment():
    doc = Document("lr:\n  steps: -1 # eol\n\n# dataset\ndata:\n  a:\n    b: 1\n\n# recompute\nr: 1\n")
    doc.set(("lr", "warmup_steps"), 20, create=True)
    doc.set(("data", "c"), 2, create=True)
    assert doc.dump() == ("lr:\n  steps: -1 # eol\n  warmup_steps: 20\n\n# dataset\ndata:\n  a:\n    b: 1\n  c: 2\n"
                          "\n# recompute\nr: 1\n")


@pytest.mark.parametrize("text, key, expected", [
    ("lr:\n  a: 1\n  b: 2 # eol b\n\n# dataset\ndata: 1\n", ("lr", "b"), "lr:\n  a: 1\n\n# dataset\ndata: 1\n"),
    ("lr:\n  a: 1 # eol a\n  b: 2\n\n# dataset\ndata: 1\n", ("lr", "b"), "lr:\n  a: 1 # eol a\n\n# dataset\ndata: 1\n"),
    ("lr:\n  a:\n    x: 1\n  b:\n    y: 2\n\n# dataset\ndata: 1\n", ("lr", "b"),
     "lr:\n  a:\n    x: 1\n\n# dataset\ndata: 1\n"),
])
def test_deleting_the_last_key_keeps_the_next_sections_comment(text, key, expected):
    doc = Document(text)
    assert doc.delete(key).deleted
    assert doc.dump() == expected
    assert doc.delete(("lr", "missing")) is None
