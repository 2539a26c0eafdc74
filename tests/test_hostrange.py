import pytest

from ascend_run.inputs.hostrange import expand


@pytest.mark.parametrize("pattern,expected", [
    ("10.0.0.[1-3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    ("node[001-003]", ["node001", "node002", "node003"]),
    ("node[8-10]", ["node8", "node9", "node10"]),
    ("gpu[1,3,5-6]", ["gpu1", "gpu3", "gpu5", "gpu6"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("plain.host", ["plain.host"]),
])
def test_expand(pattern, expected):
    assert expand(pattern) == expected


def test_128_nodes_keep_padding():
    names = expand("node[001-128]")
    assert len(names) == 128 and names[0] == "node001" and names[-1] == "node128"


@pytest.mark.parametrize("bad", ["node[3-1]", "node[a-b]", "node[1-2", "node1-2]", "node[]"])
def test_bad_patterns(bad):
    with pytest.raises(ValueError):
        expand(bad)
