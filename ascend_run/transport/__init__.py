"""Transports: how a command reaches a node. One small interface (`base.Transport`), two implementations
(`local`, `ssh`), one bounded fan-out (`fanout`), and the pipelined broadcast that carries images, weights
and data to many nodes (`broadcast`, deciding with `chain`, driving `relay` sessions of `relay_agent.py`)."""
