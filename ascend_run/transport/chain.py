"""Who feeds whom in a pipelined broadcast: pure decisions over names, tested without a node.

The servers form one chain behind the source: each stores what arrives and forwards it to the next while
it is still arriving, so every byte crosses every link once and the time hardly grows with the number of
servers (a chain, not a tree: in a tree each inner server sends everything twice or more, and its uplink
becomes the limit). When a server is lost, the ones behind it are fed by the nearest holder before it in
the chain: that holder has at least what the lost one had, so they resume where they stopped.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

THIS_MACHINE = "(this machine)"  # the source when the kit itself streams the payload (an image)


def first_upstreams(order: Sequence[str]) -> dict[str, str]:
    """`order` is [source, first server, second, …]: each server pulls from the one before it."""
    return {name: order[i - 1] for i, name in enumerate(order) if i > 0}


def choose_upstream(order: Sequence[str], orphan: str, unusable: Collection[str]) -> str | None:
    """The nearest member before `orphan` that can still serve, or None when there is none.

    `unusable` holds the lost servers and those that failed this orphan too often. The kit's own stream
    (THIS_MACHINE) can always be read again, so it is never unusable.
    """
    for name in reversed(order[:order.index(orphan)]):
        if name == THIS_MACHINE or name not in unusable:
            return name
    return None


def describe(order: Sequence[str]) -> str:
    """The chain for people: `(this machine) → node1 → node2`."""
    return " → ".join(order)
