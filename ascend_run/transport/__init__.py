"""Transports: how a command reaches a node. One small interface (`base.Transport`), two implementations."""
